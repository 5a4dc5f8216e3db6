"""``stoq list`` and ``stoq --version``: what is installed, without breaking on a broken plugin."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click.testing
from cli_support import DIST, DIST_VERSION, StoqRunner, write_legacy_plugin

Invoke = Callable[..., click.testing.Result]


def _rows(out: str) -> dict[str, list[str]]:
    """The plain listing (stdout is not a terminal) by plugin name: version, from, hooks, text."""
    rows = {}
    for line in out.splitlines()[1:]:
        name, version, origin, hooks, description = line.split(None, 4)
        rows[name] = [version, origin, hooks, description]
    return rows


def test_list_shows_name_version_distribution_hooks_and_description(stoq: StoqRunner) -> None:
    done = stoq("list")

    assert done.code == 0, done.err
    assert done.out.split()[:5] == ["name", "version", "from", "hooks", "description"]
    rows = _rows(done.out)
    assert rows["cli_echo"] == [DIST_VERSION, DIST, "scan", f"{DIST} for tests"]
    assert rows["cli_burst"][2] == "ingest"
    assert rows["cli_tag"][2] == "decorate"


def test_list_shows_a_broken_plugin_with_its_error_and_lists_the_rest(stoq: StoqRunner) -> None:
    done = stoq("list")

    assert done.code == 0, done.err
    rows = _rows(done.out)
    assert rows["cli_broken"][3].startswith("error: failed to import cli_broken_import:Anything")
    assert "a_dependency_that_is_not_installed" in rows["cli_broken"][3]
    assert "cli_echo" in rows and "cli_carve" in rows


def test_list_json_is_for_machines(invoke: Invoke) -> None:
    result = invoke("list", "--json")

    assert result.exit_code == 0, result.stderr
    plugins = {info["name"]: info for info in json.loads(result.stdout)}
    assert plugins["cli_echo"]["hooks"] == ["scan"]
    assert plugins["cli_echo"]["origin"] == DIST
    assert plugins["cli_echo"]["version"] == DIST_VERSION
    assert plugins["cli_echo"]["error"] is None
    assert "ModuleNotFoundError" in plugins["cli_broken"]["error"]


def test_list_shows_v3_plugins_in_stoq_home_with_their_directory(stoq: StoqRunner) -> None:
    write_legacy_plugin(stoq.home / "plugins")

    done = stoq("list")

    assert done.code == 0, done.err
    assert _rows(done.out)["echo3"] == ["3.0.1", str(stoq.home / "plugins"), "scan", "a v3 worker"]


def test_list_plugin_dir_adds_a_directory(invoke: Invoke, tmp_path: Path) -> None:
    write_legacy_plugin(tmp_path / "extra", "other3")

    result = invoke("list", "--plugin-dir", str(tmp_path / "extra"))

    assert result.exit_code == 0, result.stderr
    assert _rows(result.stdout)["other3"][1] == str(tmp_path / "extra")


def test_version_shows_the_core_and_each_plugin_without_importing_them(
    stoq: StoqRunner,
) -> None:
    from stoq_core import __version__

    done = stoq("--version")

    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0].startswith(f"stoq-core {__version__} ")
    assert any(line.split() == ["cli_echo", DIST_VERSION, DIST] for line in lines)
    assert any(line.split() == ["cli_broken", DIST_VERSION, DIST] for line in lines)
    assert not stoq.import_marker.exists()


def test_version_also_shows_the_v3_plugins_in_stoq_home(invoke: Invoke, home: Path) -> None:
    write_legacy_plugin(home / "plugins")

    result = invoke("--version")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    heading = lines.index(f"v3 plugins in {home / 'plugins'}:")
    assert lines[heading + 1].split() == ["echo3", "3.0.1", str(home / "plugins" / "echo3")]
