"""v3 plugin directories another user could write to are refused (issue 12, class 10).

v3 imported any ``.stoq`` plugin it found: one written by another user into a world-writable
plugin directory replaced ``hash`` and ran as root without a word. Like ssh with loose key
permissions, stoQ now refuses a plugin whose directories or files are writable by group or
others, or owned by another user than you or root; ``STOQ_ALLOW_UNSAFE_PLUGIN_DIRS=1`` loads it
anyway. Each test makes one thing loose and checks the plugin's code never ran.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stoq import Stoq
from stoq.exceptions import StoqPluginException
from stoq_core import _legacy, _trust

#: A v3 worker that leaves a file behind when its module is imported (``RAN_MARKER``).
MARKING_WORKER = """
import os
from pathlib import Path

from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin

Path(os.environ["STOQ_TEST_TRUST_MARKER"]).write_text("imported")


class MarkingWorker(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"ran": True})
"""

ALLOW = "STOQ_ALLOW_UNSAFE_PLUGIN_DIRS"

# Another user: any uid but ours and root's (root may chown to it).
OTHER_UID = 54321


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    # The tests set the loose modes themselves; everything else gets the usual 0755/0644.
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the plugin module writes when imported; it must not exist after a refusal."""
    path = tmp_path / "plugin-module-ran"
    monkeypatch.setenv("STOQ_TEST_TRUST_MARKER", str(path))
    monkeypatch.delenv(ALLOW, raising=False)
    return path


@pytest.fixture
def plugins(tmp_path: Path, write_plugin: Callable[..., Path]) -> Path:
    """``tmp_path/plugins`` holding the v3 plugin ``marking`` (``plugins/marking/``)."""
    root = tmp_path / "plugins"
    write_plugin(root, "marking", MARKING_WORKER)
    return root


def _refusal(make_stoq: Callable[..., Stoq], root: Path, name: str = "marking") -> str:
    """The error naming plugin ``name`` from ``root`` gives."""
    with pytest.raises(StoqPluginException) as raised:
        make_stoq(plugin_dir_list=[str(root)], always_dispatch=[name])
    return str(raised.value)


def _scan(stoq: Stoq, content: bytes, *workers: str) -> dict:
    response = asyncio.run(stoq.scan(content, add_start_dispatch=list(workers)))
    return response.to_dict()


def _needs_root() -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")


# -- what is refused -------------------------------------------------------------------------


def test_a_world_writable_plugin_directory_is_refused_and_its_code_never_runs(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugins.chmod(0o777)

    message = _refusal(make_stoq, plugins)

    assert not marker.exists()
    assert message.startswith("plugin 'marking' (")
    assert f"{plugins} is writable by its group and others (mode 0777)" in message
    assert f"{ALLOW}=1" in message and "chmod go-w" in message
    assert "\n" not in message


def test_a_sticky_world_writable_plugin_directory_is_refused(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # /tmp-like: others cannot replace this plugin, but they can add their own beside it.
    plugins.chmod(0o1777)

    message = _refusal(make_stoq, plugins)

    assert not marker.exists()
    assert f"{plugins} is writable by its group and others (mode 1777)" in message


def test_a_group_writable_plugin_directory_is_refused(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugins.chmod(0o775)

    assert f"{plugins} is writable by its group (mode 0775)" in _refusal(make_stoq, plugins)
    assert not marker.exists()


@pytest.mark.parametrize(
    "loose",
    ["marking", "marking/marking.stoq", "marking/marking.py"],
    ids=["its directory", "its .stoq file", "its module"],
)
def test_a_plugin_whose_directory_or_files_others_can_write_is_refused(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq], loose: str
) -> None:
    path = plugins / loose
    path.chmod(path.stat().st_mode | 0o002)

    message = _refusal(make_stoq, plugins)

    assert f"{path} is writable by others" in message
    assert not marker.exists()


def test_cached_bytecode_others_can_write_is_refused(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # Python runs __pycache__'s bytecode in place of the source: a planted .pyc is code too.
    cache = plugins / "marking" / "__pycache__"
    cache.mkdir()
    cache.chmod(0o777)

    assert f"{cache} is writable by its group and others" in _refusal(make_stoq, plugins)
    assert not marker.exists()


@pytest.mark.parametrize(
    "foreign",
    ["", "marking", "marking/marking.stoq", "marking/marking.py"],
    ids=["the plugin directory", "its directory", "its .stoq file", "its module"],
)
def test_a_plugin_owned_by_another_user_is_refused(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq], foreign: str
) -> None:
    _needs_root()
    path = plugins / foreign if foreign else plugins
    os.chown(path, OTHER_UID, -1)

    message = _refusal(make_stoq, plugins)

    assert f"{path} is owned by uid {OTHER_UID}, not by you (" in message
    assert not marker.exists()


def test_a_directory_above_the_plugin_directory_that_others_can_write_is_refused(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # Whoever can write to open/ can rename plugins/ away and put their own in its place.
    opened = tmp_path / "open"
    root = opened / "plugins"
    write_plugin(root, "marking", MARKING_WORKER)
    opened.chmod(0o777)

    assert f"{opened} is writable by its group and others (mode 0777)" in _refusal(make_stoq, root)
    assert not marker.exists()


def test_a_directory_above_owned_by_another_user_is_refused(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    _needs_root()
    theirs = tmp_path / "theirs"
    root = theirs / "plugins"
    write_plugin(root, "marking", MARKING_WORKER)
    os.chown(theirs, OTHER_UID, -1)

    assert f"{theirs} is owned by uid {OTHER_UID}" in _refusal(make_stoq, root)
    assert not marker.exists()


def test_a_link_to_the_plugin_directory_in_a_directory_others_can_write_is_refused(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # The plugins it leads to are safe, but whoever can write to open/ can swap the link.
    safe = tmp_path / "safe" / "plugins"
    write_plugin(safe, "marking", MARKING_WORKER)
    opened = tmp_path / "open"
    opened.mkdir()
    (opened / "plugins").symlink_to(safe, target_is_directory=True)
    opened.chmod(0o777)

    message = _refusal(make_stoq, opened / "plugins")

    assert f"{opened} is writable by its group and others (mode 0777)" in message
    assert not marker.exists()


def test_a_world_writable_plugin_directory_cannot_replace_an_installed_plugin(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # The report: another user's hash.stoq in a world-writable plugin directory ran as root.
    root = tmp_path / "shared"
    write_plugin(root, "hash", MARKING_WORKER)
    root.chmod(0o777)

    message = _refusal(make_stoq, root, "hash")

    assert message.startswith("plugin 'hash' (") and "is refused" in message
    assert not marker.exists()


def test_links_in_an_unsafe_directory_are_not_followed(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path
) -> None:
    # Another user's link could aim the walk at / or at a plugin of their choosing.
    elsewhere = write_plugin(tmp_path / "elsewhere", "linked")
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "stolen.stoq").symlink_to(elsewhere / "linked.stoq")
    root.chmod(0o777)

    found, broken = _legacy.discover([root])

    assert "linked" not in found
    assert broken[str(root / "stolen.stoq")].startswith(
        f"refused: {root} is writable by its group and others (mode 0777)"
    )


# -- what is not -----------------------------------------------------------------------------


def test_a_plugin_directory_inside_a_sticky_shared_directory_loads(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # /tmp/you/plugins: others may write to /tmp, but the sticky bit keeps them off your entry.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    root = shared / "plugins"
    write_plugin(root, "marking", MARKING_WORKER)

    stoq = make_stoq(plugin_dir_list=[str(root)])

    assert _scan(stoq, b"x", "marking")["results"][0]["workers"] == {"marking": {"ran": True}}


def test_a_refused_plugin_dispatched_mid_scan_is_an_error_and_the_scan_goes_on(
    tmp_path: Path,
    write_plugin: Callable[..., Path],
    plugins: Path,
    marker: Path,
    make_stoq: Callable[..., Stoq],
) -> None:
    good = tmp_path / "good"
    write_plugin(good, "fine")
    plugins.chmod(0o777)
    stoq = make_stoq(plugin_dir_list=[str(good), str(plugins)])

    response = _scan(stoq, b"x", "marking", "fine")

    assert response["results"][0]["workers"] == {"fine": {"ok": True}}
    [error] = response["errors"]
    assert error["plugin_name"] == "marking" and "is refused" in error["error"]
    assert not marker.exists()


def test_list_plugins_shows_a_refused_plugin_with_the_reason(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    plugins.chmod(0o777)

    info = make_stoq(plugin_dir_list=[str(plugins)]).list_plugins()["marking"]

    assert info.kind == "plugin directory" and info.origin == str(plugins)
    assert info.error is not None and f"{plugins} is writable by its group" in info.error
    assert not marker.exists()


def test_the_override_loads_an_unsafe_plugin_with_a_warning(
    plugins: Path,
    marker: Path,
    make_stoq: Callable[..., Stoq],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins.chmod(0o777)
    monkeypatch.setenv(ALLOW, "1")

    stoq = make_stoq(plugin_dir_list=[str(plugins)], always_dispatch=["marking"])

    assert _scan(stoq, b"x")["results"][0]["workers"] == {"marking": {"ran": True}}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{plugins} is writable by its group" in m and ALLOW in m for m in warnings)


@pytest.mark.parametrize("value", ["0", "", "no"])
def test_the_override_takes_only_a_yes(value: str) -> None:
    assert not _trust.unsafe_allowed({ALLOW: value})
    assert _trust.unsafe_allowed({ALLOW: "1"}) and _trust.unsafe_allowed({ALLOW: "true"})


def test_the_override_follows_links_again(
    tmp_path: Path, write_plugin: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = write_plugin(tmp_path / "elsewhere", "linked")
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    root.chmod(0o777)
    monkeypatch.setenv(ALLOW, "1")

    found, _ = _legacy.discover([root])

    assert "linked" in found


# -- the stoq command ------------------------------------------------------------------------


def _stoq(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "stoq"
    command = str(beside) if beside.is_file() else shutil.which("stoq")
    if command is None:
        pytest.fail("the stoq console script is not installed: pip install -e .")
    env = {k: v for k, v in os.environ.items() if k not in (ALLOW, "STOQ_DEBUG")}
    return subprocess.run(
        [command, *args],
        cwd=home.parent,
        env={**env, "STOQ_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_stoq_scan_naming_a_refused_plugin_fails_in_one_line(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path
) -> None:
    home = tmp_path / "home"
    write_plugin(home / "plugins", "marking", MARKING_WORKER)
    (home / "plugins").chmod(0o777)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"x")

    done = _stoq(home, "scan", str(sample), "-s", "marking")

    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("stoq: error:")]
    assert "'marking'" in line and "is refused" in line and f"{ALLOW}=1" in line
    assert "Traceback" not in done.stderr
    assert not marker.exists()


def test_stoq_list_shows_a_refused_plugin_with_the_reason(
    tmp_path: Path, write_plugin: Callable[..., Path], marker: Path
) -> None:
    home = tmp_path / "home"
    write_plugin(home / "plugins", "marking", MARKING_WORKER)
    (home / "plugins").chmod(0o777)

    done = _stoq(home, "list", "--json")

    assert done.returncode == 0, done.stderr
    [entry] = [p for p in json.loads(done.stdout) if p["name"] == "marking"]
    assert f"{home / 'plugins'} is writable by its group" in entry["error"]
    assert not marker.exists()


def test_a_helper_module_others_can_write_is_refused(
    plugins: Path, marker: Path, make_stoq: Callable[..., Stoq]
) -> None:
    # A plugin module may import the helpers beside it (``import util``): one that others can
    # write is code they choose, as much as the module itself.
    helper = plugins / "marking" / "util.py"
    helper.write_text("VALUE = 1\n")
    helper.chmod(0o666)

    assert f"{helper} is writable by its group and others" in _refusal(make_stoq, plugins)
    assert not marker.exists()
