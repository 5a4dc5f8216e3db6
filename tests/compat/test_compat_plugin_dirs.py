"""stoQ v3 plugin directories: how ``.stoq`` entries are found, chosen, loaded and reported."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import py_compile
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stoq import Stoq
from stoq.exceptions import StoqPluginException
from stoq_core import _legacy


def _scan(stoq: Stoq, content: bytes, *workers: str) -> dict:
    response = asyncio.run(stoq.scan(content, add_start_dispatch=list(workers)))
    return response.to_dict()


# -- discovery -------------------------------------------------------------------------------


def test_stoq_files_are_found_at_any_depth(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    root = tmp_path / "plugins"
    write_plugin(root / "vendor" / "workers" / "deep", "deep")
    info = make_stoq(plugin_dir_list=[str(root)]).list_plugins()["deep"]
    assert info.error is None and info.origin == str(root)


def test_list_plugins_shows_a_legacy_plugin_with_its_documentation_and_directory(
    plugins_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    info = make_stoq(plugin_dir_list=[str(plugins_dir)]).list_plugins()["carve"]
    assert info.kind == "plugin directory"
    assert info.origin == str(plugins_dir)
    assert info.version == "3.0.1"
    assert info.description.startswith("Carve every separated part")
    assert info.hooks == ["scan"]
    assert info.error is None


def test_list_plugins_shows_each_role_of_a_multiclass_plugin(
    plugins_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    info = make_stoq(plugin_dir_list=[str(plugins_dir)]).list_plugins()["both"]
    assert sorted(info.hooks) == ["get_dispatches", "scan"]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            "bad_ini/bad_ini.stoq",
            "not a valid .stoq file: line 1 comes before any [section] header",
        ),
        ("missing_module/missing_module.stoq", "missing_module.py does not exist"),
    ],
)
def test_a_broken_stoq_file_is_listed_under_its_path_with_the_reason(
    broken_dir: Path, make_stoq: Callable[..., Stoq], entry: str, reason: str
) -> None:
    path = str(broken_dir / entry)
    info = make_stoq(plugin_dir_list=[str(broken_dir)]).list_plugins()[path]
    assert info.error is not None and reason in info.error
    assert info.kind == "plugin directory"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no_class", "defines no plugin class"),
        ("two_classes", "defines 2 plugin classes (FirstWorker, SecondWorker)"),
    ],
)
def test_a_plugin_whose_module_is_unusable_is_listed_with_the_reason(
    broken_dir: Path, make_stoq: Callable[..., Stoq], name: str, reason: str
) -> None:
    info = make_stoq(plugin_dir_list=[str(broken_dir)]).list_plugins()[name]
    assert info.error is not None and reason in info.error
    assert info.origin == str(broken_dir)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("bad_ini/bad_ini.stoq", "comes before any [section] header"),
        ("missing_module/missing_module.stoq", "does not exist"),
    ],
)
def test_a_broken_stoq_file_is_skipped_with_a_warning_naming_file_and_reason(
    broken_dir: Path,
    make_stoq: Callable[..., Stoq],
    caplog: pytest.LogCaptureFixture,
    entry: str,
    reason: str,
) -> None:
    make_stoq(plugin_dir_list=[str(broken_dir)])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(broken_dir / entry) in m and reason in m for m in warnings), warnings


def test_broken_entries_do_not_stop_the_other_plugins(
    plugins_dir: Path, broken_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    stoq = make_stoq(plugin_dir_list=[str(broken_dir), str(plugins_dir)], always_dispatch=["carve"])
    assert _scan(stoq, b"a|b")["results"][0]["workers"]["carve"]["parts"] == 2


def test_a_symlinked_plugin_directory_is_followed(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    checkout = write_plugin(tmp_path / "src", "linked")
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "linked").symlink_to(checkout, target_is_directory=True)
    assert _scan(make_stoq(plugin_dir_list=[str(root)]), b"x", "linked")["results"][0][
        "workers"
    ] == {"linked": {"ok": True}}


def test_a_symlink_loop_in_a_plugin_directory_is_walked_once(
    tmp_path: Path, write_plugin: Callable[..., Path]
) -> None:
    root = tmp_path / "plugins"
    plugin = write_plugin(root, "looped")
    (plugin / "again").symlink_to(root, target_is_directory=True)
    found, broken = _legacy.discover([root])
    assert list(found) == ["looped"] and broken == {}


def test_the_same_name_twice_in_one_directory_warns(
    tmp_path: Path, write_plugin: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "plugins"
    write_plugin(root / "a", "twin")
    write_plugin(root / "b", "twin")
    found, _ = _legacy.discover([root])
    assert found["twin"].stoq_file == root / "b" / "twin" / "twin.stoq"
    assert any("'twin' is defined twice" in r.getMessage() for r in caplog.records)


def test_stoq_file_options_read_percent_signs_as_v3_did(tmp_path: Path) -> None:
    # v3 read .stoq files with basic interpolation: %% was a literal %, %(key)s a reference.
    plugin = tmp_path / "plugins" / "pct"
    plugin.mkdir(parents=True)
    (plugin / "pct.py").write_text("")
    (plugin / "pct.stoq").write_text(
        "[Core]\nName = pct\nModule = pct\n\n[options]\n"
        "escaped = 100%%\nreferenced = %(escaped)s sure\nbare = %Y-%m-%d\n"
    )
    found, _ = _legacy.discover([tmp_path / "plugins"])
    assert found["pct"].options == {
        "escaped": "100%",
        "referenced": "100% sure",
        "bare": "%Y-%m-%d",
    }


# -- which plugin wins a name ------------------------------------------------------------------


@pytest.mark.parametrize("order", [("first", "second"), ("second", "first")])
def test_the_later_plugin_directory_wins_a_name(
    data_dir: Path, make_stoq: Callable[..., Stoq], order: tuple[str, str]
) -> None:
    stoq = make_stoq(plugin_dir_list=[str(data_dir / d) for d in order])
    assert _scan(stoq, b"x", "echo")["results"][0]["workers"]["echo"] == {"from": order[1]}


ENTRY_POINT_ECHO = """
from stoq_core import WorkerResponse, hookimpl


class EchoEntryPoint:
    def __init__(self, config):
        self.config = config

    @hookimpl
    async def scan(self, payload, request):
        return WorkerResponse({"from": "entry point"})
"""


@pytest.fixture
def echo_entry_point(install_plugins: Callable[..., Path]) -> Iterator[None]:
    """An installed distribution ``stoq-plugin-echo`` 2.0 publishing a worker named ``echo``."""
    module = "stoq_compat_echo_entry_point"
    site = install_plugins(
        {"echo": f"{module}:EchoEntryPoint"}, dist="stoq-plugin-echo", version="2.0"
    )
    (site / f"{module}.py").write_text(ENTRY_POINT_ECHO)
    importlib.invalidate_caches()  # the site directory may already be cached without the module
    yield
    sys.modules.pop(module, None)


@pytest.mark.usefixtures("echo_entry_point")
def test_the_entry_point_is_used_when_no_plugin_directory_has_the_name(
    tmp_path: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # The control for the next test: the installed echo does load and scan.
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "no-such-dir")])
    assert _scan(stoq, b"x", "echo")["results"][0]["workers"]["echo"] == {"from": "entry point"}


@pytest.mark.usefixtures("echo_entry_point")
def test_a_plugin_directory_beats_an_entry_point_of_the_same_name(
    data_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    stoq = make_stoq(plugin_dir_list=[str(data_dir / "first")])
    assert _scan(stoq, b"x", "echo")["results"][0]["workers"]["echo"] == {"from": "first"}


@pytest.mark.usefixtures("echo_entry_point")
def test_list_plugins_says_which_entry_point_a_legacy_plugin_hides(
    data_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    info = make_stoq(plugin_dir_list=[str(data_dir / "first")]).list_plugins()["echo"]
    assert info.kind == "plugin directory" and info.origin == str(data_dir / "first")
    assert info.shadows is not None
    assert "stoq-plugin-echo" in info.shadows and "2.0" in info.shadows


# -- loading ---------------------------------------------------------------------------------


def test_a_too_new_min_stoq_version_warns_with_the_plugin_and_both_versions(
    broken_dir: Path, make_stoq: Callable[..., Stoq], caplog: pytest.LogCaptureFixture
) -> None:
    make_stoq(plugin_dir_list=[str(broken_dir)], always_dispatch=["too_new"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'too_new'" in m and "99.0.0" in m and "4.0.0" in m for m in warnings), warnings


def test_a_plugin_with_a_too_new_min_stoq_version_still_scans(
    broken_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    stoq = make_stoq(plugin_dir_list=[str(broken_dir)], always_dispatch=["too_new"])
    assert _scan(stoq, b"x")["results"][0]["workers"]["too_new"] == {"loaded": True}


def test_a_met_min_stoq_version_loads_without_a_warning(
    tmp_path: Path,
    write_plugin: Callable[..., Path],
    make_stoq: Callable[..., Stoq],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_plugin(tmp_path / "p", "current", stoq_extra="[options]\nmin_stoq_version = 3.0.1\n")
    make_stoq(plugin_dir_list=[str(tmp_path / "p")], always_dispatch=["current"])
    assert not [
        r
        for r in caplog.records
        if "min_stoq_version" in r.getMessage() or "requires stoQ" in r.getMessage()
    ]


def test_an_unreadable_min_stoq_version_warns_and_still_loads(
    tmp_path: Path,
    write_plugin: Callable[..., Path],
    make_stoq: Callable[..., Stoq],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_plugin(tmp_path / "p", "odd", stoq_extra="[options]\nmin_stoq_version = latest\n")
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")], always_dispatch=["odd"])
    assert any("'latest' is not a version number" in r.getMessage() for r in caplog.records)
    assert _scan(stoq, b"x")["results"][0]["workers"]["odd"] == {"ok": True}


@pytest.fixture(params=["packaging", "no packaging"])
def version_compare(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of comparing versions: with ``packaging`` and without it (not a dependency)."""
    if request.param == "no packaging":
        monkeypatch.setitem(sys.modules, "packaging.version", None)  # import raises ImportError


@pytest.mark.usefixtures("version_compare")
@pytest.mark.parametrize(
    ("wanted", "newer"),
    [
        ("99.0.0", True),
        ("4.0.1", True),
        ("4.1", True),
        ("4.0.0", False),
        ("4.0", False),
        ("3.0.1", False),
    ],
)
def test_min_stoq_version_is_compared_as_a_version_number(wanted: str, newer: bool) -> None:
    assert _legacy.is_newer_version(wanted, "4.0.0") is newer


def test_naming_a_plugin_whose_module_defines_two_classes_is_a_clear_error(
    broken_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    with pytest.raises(StoqPluginException) as raised:
        make_stoq(plugin_dir_list=[str(broken_dir)], always_dispatch=["two_classes"])
    message = str(raised.value)
    assert "'two_classes'" in message and "FirstWorker, SecondWorker" in message
    assert "exactly one" in message and "\n" not in message


def test_naming_a_plugin_whose_module_defines_no_class_is_a_clear_error(
    broken_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    with pytest.raises(StoqPluginException, match=r"'no_class'.*defines no plugin class"):
        make_stoq(plugin_dir_list=[str(broken_dir)], always_dispatch=["no_class"])


def test_a_broken_plugin_dispatched_mid_scan_becomes_an_error_and_the_scan_goes_on(
    broken_dir: Path, plugins_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    stoq = make_stoq(plugin_dir_list=[str(broken_dir), str(plugins_dir)])
    response = _scan(stoq, b"a|b", "two_classes", "carve")
    assert response["results"][0]["workers"]["carve"]["parts"] == 2
    [error] = response["errors"]
    assert error["plugin_name"] == "two_classes" and "exactly one" in error["error"]


def test_a_plugin_class_lacking_its_role_method_is_named_in_the_error(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = "from stoq.plugins import WorkerPlugin\n\n\nclass Lazy(WorkerPlugin):\n    pass\n"
    write_plugin(tmp_path / "p", "lazy", code)
    with pytest.raises(StoqPluginException, match=r"Lazy has no 'scan' method"):
        make_stoq(plugin_dir_list=[str(tmp_path / "p")], always_dispatch=["lazy"])


def test_a_helper_base_class_beside_the_plugin_class_is_not_a_second_plugin(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class CommonBase(WorkerPlugin):
    def label(self):
        return "from the base"


class RealWorker(CommonBase):
    async def scan(self, payload, request):
        return WorkerResponse({"label": self.label()})
"""
    write_plugin(tmp_path / "p", "layered", code)
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])
    assert _scan(stoq, b"x", "layered")["results"][0]["workers"]["layered"] == {
        "label": "from the base"
    }


def test_a_plugin_class_extending_another_complete_plugin_class_is_the_plugin(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class GenericWorker(WorkerPlugin):
    flavour = "generic"

    async def scan(self, payload, request):
        return WorkerResponse({"flavour": self.flavour})


class SpecialWorker(GenericWorker):
    flavour = "special"
"""
    write_plugin(tmp_path / "p", "special", code)
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])
    assert _scan(stoq, b"x", "special")["results"][0]["workers"]["special"] == {
        "flavour": "special"
    }


def test_a_plugin_module_imports_helper_modules_beside_it(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin

from compat_sidekick_helper import ANSWER


class HelpedWorker(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"answer": ANSWER})
"""
    plugin = write_plugin(tmp_path / "p", "helped", code)
    (plugin / "compat_sidekick_helper.py").write_text("ANSWER = 42\n")
    try:
        stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])
        assert _scan(stoq, b"x", "helped")["results"][0]["workers"]["helped"] == {"answer": 42}
    finally:
        sys.modules.pop("compat_sidekick_helper", None)
    assert str(plugin) not in sys.path


def test_a_plugin_module_that_fails_to_import_names_the_plugin_and_the_error(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = "import compat_dependency_never_installed  # noqa: F401\n"
    write_plugin(tmp_path / "p", "needy", code)
    with pytest.raises(StoqPluginException) as raised:
        make_stoq(plugin_dir_list=[str(tmp_path / "p")], always_dispatch=["needy"])
    message = str(raised.value)
    assert "'needy'" in message
    assert "ModuleNotFoundError: No module named 'compat_dependency_never_installed'" in message


def test_a_compiled_only_plugin_module_loads(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    plugin = write_plugin(tmp_path / "p", "compiled")
    source = plugin / "compiled.py"
    py_compile.compile(str(source), cfile=str(plugin / "compiled.pyc"), doraise=True)
    source.unlink()
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])
    assert _scan(stoq, b"x", "compiled")["results"][0]["workers"]["compiled"] == {"ok": True}


def test_a_v3_plugin_skipping_super_init_still_gets_name_config_and_log(
    plugins_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    route = make_stoq(plugin_dir_list=[str(plugins_dir)]).load_plugin("route")
    assert route.plugin_name == "route"
    assert route.config.get("options", "keyword") == "|"
    assert route.log.name == "stoq.route"


def test_stoq_cfg_beats_the_stoq_file_options(
    tmp_path: Path, plugins_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    (tmp_path / "stoq.cfg").write_text("[carve]\nseparator = ;\n")
    stoq = make_stoq(plugin_dir_list=[str(plugins_dir)], always_dispatch=["carve"])
    assert _scan(stoq, b"a;b;c|d")["results"][0]["workers"]["carve"]["parts"] == 3


def test_plugin_opts_beat_the_stoq_file_options(
    plugins_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    stoq = make_stoq(
        plugin_dir_list=[str(plugins_dir)],
        always_dispatch=["carve"],
        plugin_opts={"carve": {"separator": ","}},
    )
    assert _scan(stoq, b"a,b|c")["results"][0]["workers"]["carve"]["parts"] == 2


def test_a_helper_method_named_like_another_roles_hook_does_not_break_a_v3_plugin(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class FetchingWorker(WorkerPlugin):
    def get(self, url):
        return "fetched " + url

    async def scan(self, payload, request):
        return WorkerResponse({"got": self.get("x")})
"""
    write_plugin(tmp_path / "p", "fetching", code)
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])
    assert _scan(stoq, b"x", "fetching")["results"][0]["workers"]["fetching"] == {
        "got": "fetched x"
    }


def test_a_missing_plugin_directory_is_not_an_error(
    tmp_path: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # Stoq's default plugin directory (base_dir/plugins) usually does not exist.
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "absent")])
    assert all(info.kind != "plugin directory" for info in stoq.list_plugins().values())


def test_discovery_does_not_import_plugin_modules(broken_dir: Path) -> None:
    before = set(sys.modules)
    found, _ = _legacy.discover([broken_dir])
    assert "two_classes" in found
    assert not {m for m in set(sys.modules) - before if m.startswith("stoq_legacy_plugins")}


def test_plugin_dirs_given_relative_are_reported_absolute(
    plugins_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(plugins_dir.parent)
    found, _ = _legacy.discover([os.path.join(".", "plugins")])
    assert found["carve"].directory == plugins_dir


# -- plain @hookimpl classes (issue 15, item 10) ---------------------------------------------

#: A quick local plugin with no v3 base class: datasette's --plugins-dir modules need none.
PLAIN_WORKER = """
from stoq_core import WorkerResponse, hookimpl


class Counter:
    def __init__(self, config):
        self.byte = config.getint("options", "byte", fallback=0)
        self.name_at_init = self.plugin_name

    @hookimpl
    async def scan(self, payload, request):
        count = bytes(payload.content).count(self.byte)
        return WorkerResponse({"count": count, "name": self.name_at_init})

    def helper(self):
        return "not a hook"
"""


def test_a_plain_hookimpl_class_in_a_plugin_directory_scans(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    write_plugin(tmp_path / "p", "count", PLAIN_WORKER, "[options]\nbyte = 97\n")
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])

    response = _scan(stoq, b"banana", "count")

    assert response["results"][0]["workers"]["count"] == {"count": 3, "name": "count"}
    assert response["errors"] == []


def test_a_plain_hookimpl_class_is_listed_with_its_hooks_and_v3_roles(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    from stoq.plugin_manager import StoqPluginManager

    write_plugin(tmp_path / "p", "count", PLAIN_WORKER)

    info = make_stoq(plugin_dir_list=[str(tmp_path / "p")]).list_plugins()["count"]
    listing = StoqPluginManager([str(tmp_path / "p")]).list_plugins()["count"]

    assert (info.hooks, info.error) == (["scan"], None)
    assert listing["classes"] == ["Worker"]


def test_a_plain_class_without_a_marked_method_is_not_a_plugin_class(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = "class Unmarked:\n    async def scan(self, payload, request):\n        return None\n"
    write_plugin(tmp_path / "p", "unmarked", code)
    with pytest.raises(StoqPluginException, match=r"defines no plugin class.*@stoq_core\.hookimpl"):
        make_stoq(plugin_dir_list=[str(tmp_path / "p")], always_dispatch=["unmarked"])


def test_a_plain_class_with_a_misspelled_hook_names_it(
    tmp_path: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = (
        "from stoq_core import hookimpl\n\n\nclass Typo:\n"
        "    def __init__(self, config):\n        pass\n\n"
        "    @hookimpl\n    async def scna(self, payload, request):\n        return None\n"
    )
    write_plugin(tmp_path / "p", "typo", code)
    stoq = make_stoq(plugin_dir_list=[str(tmp_path / "p")])

    with pytest.raises(StoqPluginException, match=r"implements 'scna', which is not a stoQ hook"):
        stoq.load_plugin("typo")
    assert "implements 'scna'" in (stoq.list_plugins()["typo"].error or "")
