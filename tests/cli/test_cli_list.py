"""``stoq list`` and ``stoq --version``: what is installed, without breaking on a broken plugin."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import click.testing
import pytest
from cli_plain_plugin import MISSPELLED, write_plain_plugin
from cli_support import DIST, DIST_VERSION, StoqRunner, write_legacy_plugin

Invoke = Callable[..., click.testing.Result]

TESTS = Path(__file__).resolve().parents[1]


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


# -- the same verdict as 'stoq plugin check' (issue 15, item 9) --------------------------------


def _publish(
    stoq: StoqRunner, install_plugins: Callable[..., Path], plugins: dict[str, str]
) -> None:
    """Publish fakes of the tests folder as ``stoq-plugin-listfakes``, visible to ``stoq``."""
    site = install_plugins(plugins, dist="stoq-plugin-listfakes")
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS), stoq.env["PYTHONPATH"]])


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (
            "fakes:ExtraArgument",
            "Argument(s) {'verbose'} are declared in the hookimpl but can not be found in the "
            "hookspec",
        ),
        ("fakes:UnknownHook", "implements 'scan_harder', which is not a stoQ hook"),
        ("fakes:NoHooks", "implements none of the stoQ hooks"),
    ],
)
def test_list_flags_a_plugin_that_imports_but_cannot_load_as_plugin_check_does(
    stoq: StoqRunner, install_plugins: Callable[..., Path], target: str, reason: str
) -> None:
    _publish(stoq, install_plugins, {"odd": target})

    listed = stoq("list")
    checked = stoq("plugin", "check", "odd")

    assert listed.code == 0, listed.err
    assert checked.code == 1
    cause = "plugin 'odd' from distribution stoq-plugin-listfakes"
    assert checked.out.startswith(f"odd: failed: {cause}") and reason in checked.out
    row = _rows(listed.out)["odd"]
    assert row[2] == "-"
    assert row[3].startswith(f"error: {cause}") and reason in row[3]
    assert _rows(listed.out)["cli_echo"][3] == f"{DIST} for tests"  # the rest are listed as ever


def test_list_json_gives_the_error_plugin_check_gives(
    stoq: StoqRunner, install_plugins: Callable[..., Path]
) -> None:
    _publish(stoq, install_plugins, {"odd": "fakes:UnknownHook"})

    listed = {info["name"]: info for info in stoq("list", "--json").json()}
    checked = stoq("plugin", "check", "odd")

    assert checked.out == f"odd: failed: {listed['odd']['error']}\n"
    assert listed["odd"]["hooks"] == []


def test_list_flags_a_plugin_directory_plugin_with_a_misspelled_hook(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    write_plain_plugin(tmp_path / "local", "typo", MISSPELLED)

    listed = stoq("list", "--plugin-dir", str(tmp_path / "local"))
    checked = stoq("plugin", "check", "typo", "--plugin-dir", str(tmp_path / "local"))

    assert listed.code == 0, listed.err
    assert checked.code == 1
    error = _rows(listed.out)["typo"][3]
    assert "implements 'scna', which is not a stoQ hook" in error
    assert checked.out == f"typo: failed: {error.removeprefix('error: ')}\n"


def test_list_shows_a_plain_class_in_a_plugin_directory_with_its_hooks(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    write_plain_plugin(stoq.home / "plugins", "nuls")

    done = stoq("list")

    assert done.code == 0, done.err
    assert _rows(done.out)["nuls"] == [
        "0.1",
        str(stoq.home / "plugins"),
        "scan",
        "a quick local plugin",
    ]


def test_list_shows_each_plugins_own_description_else_its_distributions(
    stoq: StoqRunner, install_plugins: Callable[..., Path]
) -> None:
    _publish(
        stoq,
        install_plugins,
        {
            "described": "fake_plugin_identity:PlainNamed",
            "undescribed": "fake_plugin_identity:V3Named",
        },
    )

    done = stoq("list")

    assert done.code == 0, done.err
    rows = _rows(done.out)
    assert rows["described"][3] == "reports the name it had in __init__"
    assert rows["undescribed"][3] == "stoq-plugin-listfakes for tests"
