"""How a v3 plugin's module is imported: by its file, under a private name (issue 13).

A plugin module named after the library it imports (v3's ``lief`` and ``symhash``), or a plugin
folder holding a file named like a standard module (``tarfile.py``), must never take that
module's place, in the plugin or anywhere else in the process.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stoq import Stoq
from stoq.exceptions import StoqPluginException
from stoq_core import _legacy

LIBRARY = "stoqtest_lief"  # the module in data/modules/site, standing in for lief


def _scan(stoq: Stoq, content: bytes, *workers: str) -> dict:
    response = asyncio.run(stoq.scan(content, add_start_dispatch=list(workers)))
    return response.to_dict()


def _tar(*names: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in names:
            archive.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    return buffer.getvalue()


@pytest.fixture
def modules_dir(data_dir: Path) -> Path:
    """data/modules: ``site/`` (the library), plugin folders ``stoqtest_lief/`` and ``tarpeek/``."""
    return data_dir / "modules"


@pytest.fixture
def plugin_root(tmp_path: Path) -> Path:
    root = tmp_path / "plugins"
    root.mkdir()
    return root


@pytest.fixture
def forget_modules() -> Iterator[None]:
    """Whatever a test imports under a top-level name of its own is forgotten afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in (LIBRARY, "tarfile", "peek_format", "compat_util", "compat_pkg"):
            del sys.modules[name]


@pytest.fixture
def library(modules_dir: Path, monkeypatch: pytest.MonkeyPatch, forget_modules: None) -> Path:
    """The stand-in library installed (on sys.path) and not yet imported, as lief would be."""
    assert LIBRARY not in sys.modules
    monkeypatch.syspath_prepend(str(modules_dir / "site"))
    return modules_dir / "site" / f"{LIBRARY}.py"


def _install(modules_dir: Path, plugin_root: Path, name: str) -> Path:
    source = modules_dir / name
    target = plugin_root / name
    source.rename(target)
    return target


# -- a plugin named after the library it imports -----------------------------------------------


def test_a_plugin_named_after_an_installed_library_scans_with_the_library(
    modules_dir: Path, plugin_root: Path, library: Path, make_stoq: Callable[..., Stoq]
) -> None:
    _install(modules_dir, plugin_root, LIBRARY)
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    result = _scan(stoq, b"MZ..", LIBRARY)["results"][0]["workers"][LIBRARY]

    assert result == {"size": 4, "magic": "4d5a", "library": True}
    assert sys.modules[LIBRARY].__file__ == str(library)


def test_listing_then_scanning_keeps_the_library_under_its_name(
    modules_dir: Path, plugin_root: Path, library: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # ``stoq list`` imports every plugin first; v3's symhash then found the lief plugin as lief.
    _install(modules_dir, plugin_root, LIBRARY)
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    assert stoq.list_plugins()[LIBRARY].error is None
    assert _scan(stoq, b"MZ", LIBRARY)["results"][0]["workers"][LIBRARY]["library"] is True
    assert sys.modules[LIBRARY].__file__ == str(library)


@pytest.mark.usefixtures("forget_modules")
def test_a_plugin_whose_library_is_missing_is_listed_broken_with_the_reason(
    modules_dir: Path, plugin_root: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugin = _install(modules_dir, plugin_root, LIBRARY)
    (plugin / "requirements.txt").write_text(f"{LIBRARY}\n")

    info = make_stoq(plugin_dir_list=[str(plugin_root)]).list_plugins()[LIBRARY]

    assert info.error is not None
    assert f"ModuleNotFoundError: No module named '{LIBRARY}'" in info.error
    assert f"its requirements are listed in {plugin / 'requirements.txt'}" in info.error
    assert LIBRARY not in sys.modules


@pytest.mark.usefixtures("forget_modules")
def test_naming_a_plugin_whose_library_is_missing_is_a_clear_error(
    modules_dir: Path, plugin_root: Path, make_stoq: Callable[..., Stoq]
) -> None:
    _install(modules_dir, plugin_root, LIBRARY)
    with pytest.raises(StoqPluginException, match=f"No module named '{LIBRARY}'"):
        make_stoq(plugin_dir_list=[str(plugin_root)], always_dispatch=[LIBRARY])
    assert LIBRARY not in sys.modules


# -- a plugin folder holding a file named like a standard module ---------------------------------


@pytest.fixture
def fresh_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process has not imported tarfile yet, as a fresh ``stoq scan`` has not."""
    monkeypatch.delitem(sys.modules, "tarfile")


@pytest.mark.usefixtures("fresh_tarfile", "forget_modules")
def test_a_plugin_folders_tarfile_py_does_not_replace_the_standard_library(
    modules_dir: Path, plugin_root: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugin = _install(modules_dir, plugin_root, "tarpeek")
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    result = _scan(stoq, _tar("b.txt", "a.txt"), "tarpeek")["results"][0]["workers"]["tarpeek"]

    assert result["members"] == "a.txt, b.txt"  # its helper module beside it was found
    assert result["shadowed"] is False
    assert not result["tarfile"].startswith(str(plugin))
    assert sys.modules["tarfile"].__file__ == result["tarfile"]
    assert not hasattr(sys.modules["tarfile"], "FROM_THE_PLUGIN_FOLDER")


@pytest.mark.usefixtures("fresh_tarfile", "forget_modules")
def test_a_plugin_module_named_like_a_standard_module_gets_the_standard_module(
    plugin_root: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
import io
import tarfile

from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class TarNames(WorkerPlugin):
    async def scan(self, payload, request):
        with tarfile.open(fileobj=io.BytesIO(payload.content)) as archive:
            return WorkerResponse({"names": archive.getnames()})
"""
    plugin = write_plugin(plugin_root, "tarfile", code)
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    assert stoq.list_plugins()["tarfile"].error is None
    result = _scan(stoq, _tar("inside.txt"), "tarfile")["results"][0]["workers"]["tarfile"]

    assert result == {"names": ["inside.txt"]}
    assert not str(sys.modules["tarfile"].__file__).startswith(str(plugin))


@pytest.mark.usefixtures("forget_modules")
def test_a_plugin_folder_is_never_put_on_sys_path(
    modules_dir: Path, plugin_root: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugin = _install(modules_dir, plugin_root, "tarpeek")
    seen: list[list[str]] = []

    class Spy:
        """A meta path finder that records sys.path whenever anything is imported."""

        def find_spec(self, *args: object) -> None:
            seen.append(list(sys.path))

    sys.meta_path.insert(0, Spy())
    try:
        make_stoq(plugin_dir_list=[str(plugin_root)]).load_plugin("tarpeek")
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, Spy)]
    assert seen
    assert not [path for path in seen if str(plugin) in path]


# -- helper modules beside the plugin module ---------------------------------------------------

HELPED = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin

import compat_util


class Helped(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"value": compat_util.VALUE})
"""


@pytest.mark.usefixtures("forget_modules")
def test_helper_modules_are_imported_under_the_plugins_private_name(
    plugin_root: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    plugin = write_plugin(plugin_root, "helped", HELPED)
    (plugin / "compat_util.py").write_text("VALUE = 'beside'\n")
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    assert _scan(stoq, b"x", "helped")["results"][0]["workers"]["helped"] == {"value": "beside"}
    assert "compat_util" not in sys.modules
    [helper] = [m for m in sys.modules if m.endswith(".compat_util")]
    assert helper.startswith("stoq_legacy_plugins.")


@pytest.mark.usefixtures("forget_modules")
def test_two_plugin_folders_with_same_named_modules_do_not_collide(
    plugin_root: Path, make_stoq: Callable[..., Stoq]
) -> None:
    for name in ("alpha", "beta"):
        folder = plugin_root / name
        folder.mkdir()
        # Both modules are called worker.py, both import a compat_util.py of their own.
        (folder / f"{name}.stoq").write_text(f"[Core]\nName = {name}\nModule = worker\n")
        (folder / "worker.py").write_text(HELPED)
        (folder / "compat_util.py").write_text(f"VALUE = {name!r}\n")
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    workers = _scan(stoq, b"x", "alpha", "beta")["results"][0]["workers"]

    assert workers == {"alpha": {"value": "alpha"}, "beta": {"value": "beta"}}
    found, _ = _legacy.discover([plugin_root])
    assert _legacy.module_name(found["alpha"]) != _legacy.module_name(found["beta"])


@pytest.mark.usefixtures("forget_modules")
def test_a_helper_imported_only_at_scan_time_is_found(
    plugin_root: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class Lazy(WorkerPlugin):
    async def scan(self, payload, request):
        from compat_util import VALUE

        return WorkerResponse({"value": VALUE})
"""
    plugin = write_plugin(plugin_root, "lazyhelp", code)
    (plugin / "compat_util.py").write_text("VALUE = 'later'\n")
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    assert _scan(stoq, b"x", "lazyhelp")["results"][0]["workers"]["lazyhelp"] == {"value": "later"}


@pytest.mark.usefixtures("forget_modules")
def test_helper_packages_and_relative_imports_work(
    plugin_root: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin

import compat_pkg.inner
from . import compat_util


class Packaged(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"inner": compat_pkg.inner.VALUE, "util": compat_util.VALUE})
"""
    plugin = write_plugin(plugin_root, "packaged", code)
    (plugin / "compat_util.py").write_text("VALUE = 'relative'\n")
    (plugin / "compat_pkg").mkdir()
    (plugin / "compat_pkg" / "__init__.py").write_text("")
    # A helper's own imports of its siblings are found the same way.
    (plugin / "compat_pkg" / "inner.py").write_text("from compat_util import VALUE\n")
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    assert _scan(stoq, b"x", "packaged")["results"][0]["workers"]["packaged"] == {
        "inner": "relative",
        "util": "relative",
    }
    assert "compat_pkg" not in sys.modules and "compat_util" not in sys.modules


@pytest.mark.usefixtures("forget_modules")
def test_an_installed_module_wins_over_a_helper_of_the_same_name(
    plugin_root: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    code = """
import json

from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class UsesJson(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"dumped": json.dumps([1])})
"""
    plugin = write_plugin(plugin_root, "usesjson", code)
    (plugin / "json.py").write_text("raise ImportError('the plugin folder json.py was imported')\n")
    stoq = make_stoq(plugin_dir_list=[str(plugin_root)])

    assert _scan(stoq, b"x", "usesjson")["results"][0]["workers"]["usesjson"] == {"dumped": "[1]"}


@pytest.mark.usefixtures("forget_modules")
def test_a_helper_asking_for_a_missing_library_named_like_a_plugin_module_is_not_given_the_plugin(
    plugin_root: Path, modules_dir: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugin = _install(modules_dir, plugin_root, LIBRARY)
    (plugin / "stoqtest_lief.py").write_text(HELPED)
    (plugin / "compat_util.py").write_text(f"import {LIBRARY}\nVALUE = 1\n")

    info = make_stoq(plugin_dir_list=[str(plugin_root)]).list_plugins()[LIBRARY]

    assert info.error is not None and f"No module named '{LIBRARY}'" in info.error


def test_reloading_a_plugin_module_runs_its_current_code(
    plugin_root: Path, write_plugin: Callable[..., Path], make_stoq: Callable[..., Stoq]
) -> None:
    # v3 imported the file afresh for each Stoq; an edited plugin is picked up by the next one.
    plugin = write_plugin(plugin_root, "edited")
    first = make_stoq(plugin_dir_list=[str(plugin_root)])
    assert _scan(first, b"x", "edited")["results"][0]["workers"]["edited"] == {"ok": True}
    (plugin / "edited.py").write_text(
        "from stoq import WorkerResponse\nfrom stoq.plugins import WorkerPlugin\n\n\n"
        "class Edited(WorkerPlugin):\n    async def scan(self, payload, request):\n"
        "        return WorkerResponse({'ok': 'again'})\n"
    )
    second = make_stoq(plugin_dir_list=[str(plugin_root)])
    assert _scan(second, b"x", "edited")["results"][0]["workers"]["edited"] == {"ok": "again"}
