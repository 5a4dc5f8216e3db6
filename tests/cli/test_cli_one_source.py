"""``stoq --version``, ``stoq list`` and a scan read a home through the same readers, so they agree.

Each test gives the home something the CLI once read by rules of its own (``.stoq`` values without
v3's interpolation, broken ``.stoq`` files skipped without a word, the first of two
distributions claiming a name): the three commands must say the same thing about it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import click.testing
import pytest
from cli_support import StoqRunner
from index_helpers import publish, settle

from stoq_core.testing import write_distribution


def _write_v3_plugin(directory: Path, name: str, version: str, module: bool = True) -> Path:
    """A v3 plugin whose worker reports the version it was given from its .stoq file."""
    directory.mkdir(parents=True)
    stoq_file = directory / f"{name}.stoq"
    stoq_file.write_text(
        f"[Core]\nName = {name}\nModule = {name}\n\n[Documentation]\nVersion = {version}\n"
    )
    if module:
        (directory / f"{name}.py").write_text(
            "from stoq_core import WorkerResponse\n"
            "from stoq_core.plugins import WorkerPlugin\n\n\n"
            "class Reporter(WorkerPlugin):\n"
            "    async def scan(self, payload, request):\n"
            "        return WorkerResponse({'version': self.__version__})\n"
        )
    return stoq_file


def _version_rows(out: str) -> dict[str, str]:
    """``stoq --version``'s plugin lines by their first word (a name, or a broken file's path)."""
    return {
        line.split()[0]: line.strip()
        for line in out.splitlines()
        if line.startswith("  ") and line.strip()
    }


def _listed(stoq: StoqRunner) -> dict[str, dict[str, object]]:
    done = stoq("list", "--json")
    assert done.code == 0, done.err
    return {info["name"]: info for info in json.loads(done.out)}


def test_a_percent_in_a_stoq_file_reads_as_v3_read_it_everywhere(stoq: StoqRunner) -> None:
    # v3 read .stoq files with basic interpolation: '%%' is one '%'.
    _write_v3_plugin(stoq.home / "plugins" / "pct", "pct", "2.0%%rc1")

    version = stoq("--version")
    listed = _listed(stoq)
    scanned = stoq("scan", "-", "-s", "pct", stdin=b"x")

    assert version.code == 0, version.err
    assert _version_rows(version.out)["pct"].split()[:2] == ["pct", "2.0%rc1"]
    assert listed["pct"]["version"] == "2.0%rc1"
    assert scanned.code == 0, scanned.err
    assert json.loads(scanned.out)["results"][0]["workers"]["pct"] == {"version": "2.0%rc1"}


def test_a_broken_stoq_file_is_reported_alike_and_never_loaded(stoq: StoqRunner) -> None:
    # Name and Module are there, the module is not: the old --version listed it as a plugin.
    stoq_file = _write_v3_plugin(stoq.home / "plugins" / "nomod", "nomod", "1.0", module=False)
    reason = f"module {stoq_file.parent / 'nomod.py'} does not exist"

    version = stoq("--version")
    listed = _listed(stoq)
    scanned = stoq("scan", "-", "-s", "nomod", stdin=b"x")

    assert version.code == 0, version.err
    rows = _version_rows(version.out)
    assert "nomod" not in rows
    assert rows[str(stoq_file)].endswith(f"error: {reason}")
    assert "nomod" not in listed
    assert listed[str(stoq_file)]["error"] == reason
    assert scanned.code == 2
    assert "plugin 'nomod' is not installed" in scanned.err


def test_an_unparsable_stoq_file_is_reported_not_skipped(stoq: StoqRunner) -> None:
    folder = stoq.home / "plugins" / "garbled"
    folder.mkdir(parents=True)
    stoq_file = folder / "garbled.stoq"
    stoq_file.write_text("Name = garbled\n")

    version = stoq("--version")
    listed = _listed(stoq)

    assert version.code == 0, version.err
    error = listed[str(stoq_file)]["error"]
    assert isinstance(error, str) and error.startswith("not a valid .stoq file")
    assert _version_rows(version.out)[str(stoq_file)].endswith(f"error: {error}")


def test_a_name_two_distributions_claim_is_a_conflict_everywhere(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    # The old --version showed the first distribution's as if nothing were wrong.
    site = tmp_path / "rival-site"
    write_distribution(site, "stoq-plugin-rival", {"cli_echo": "cli_fakes:Echo"}, "9.9")
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), stoq.env["PYTHONPATH"]])

    version = stoq("--version")
    listed = _listed(stoq)
    scanned = stoq("scan", "-", "-s", "cli_echo", stdin=b"x")

    assert version.code == 0, version.err
    row = _version_rows(version.out)["cli_echo"]
    assert "error: conflict" in row and "stoq-plugin-rival" in row + str(listed["cli_echo"])
    assert "more than one distribution" in str(listed["cli_echo"]["error"])
    assert scanned.code == 2
    assert "more than one distribution" in scanned.err


def test_version_reads_the_index_a_scan_wrote(stoq: StoqRunner, tmp_path: Path) -> None:
    """--version reads the same entry-point index as a scan, not the metadata by itself."""
    site = tmp_path / "still-site"
    site.mkdir()
    publish(site, "cli_one_still")
    stoq.env["PYTHONPATH"] = str(site)  # only old directories, so the index is written
    settle(site, stoq.cwd)
    done = stoq("scan", "-", "-s", "cli_one_still", stdin=b"x")
    assert done.code == 0, done.err
    indexes = sorted((stoq.home / "cache").glob("entry-points-*.json"))
    if not indexes:
        pytest.skip("the interpreter's own site-packages changed in the last seconds")
    saved = json.loads(indexes[0].read_text())
    saved["entry_points"]["cli_one_still"][0]["dist_version"] = "7.7.7"
    indexes[0].write_text(json.dumps(saved))

    version = stoq("--version")

    assert version.code == 0, version.err
    assert _version_rows(version.out)["cli_one_still"].split()[1] == "7.7.7"


def test_the_role_table_covers_every_hook_in_scan_order() -> None:
    from stoq_core.hookspecs import HOOK_NAMES
    from stoq_core.plugins import PLUGIN_LIST_HOOKS, ROLE_HOOKS, ROLES, ArchiverPlugin

    assert tuple(role.hook for role in ROLES) == HOOK_NAMES
    assert PLUGIN_LIST_HOOKS["connectors"] == "save"
    assert set(ROLE_HOOKS[ArchiverPlugin]) == {"archive", "get"}


def test_list_help_names_each_hooks_role_from_the_core_table(stoq: StoqRunner) -> None:
    from stoq_core.plugins import ROLES

    done = stoq("list", "--help")

    assert done.code == 0, done.err
    rows = [line.split(None, 1) for line in done.out.splitlines()]
    for role in ROLES:
        assert [role.hook, role.name] in rows


def test_debug_from_one_command_line_does_not_reach_the_next(
    invoke: Callable[..., click.testing.Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a command line said lives in its click context, not in the process."""
    monkeypatch.delenv("STOQ_DEBUG", raising=False)

    loud = invoke("scan", "-", "-s", "cli_broken", "--log-level", "debug", stdin=b"x")
    quiet = invoke("scan", "-", "-s", "cli_broken", stdin=b"x")

    assert loud.exit_code == quiet.exit_code == 2
    assert "Traceback" in loud.stderr
    assert "Traceback" not in quiet.stderr
