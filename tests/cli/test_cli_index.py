"""The entry-point index in $STOQ_HOME: a faster start that never hides a plugin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_support import StoqRunner
from index_helpers import publish, settle


def index_files(home: Path) -> list[Path]:
    return sorted((home / "cache").glob("entry-points-*.json"))


def test_a_plugin_installed_after_a_scan_is_found_by_the_next(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    site = tmp_path / "late-site"
    site.mkdir()
    publish(site, "cli_idx_first")
    settle(site, stoq.cwd)
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), stoq.env["PYTHONPATH"]])

    first = stoq("scan", "-", "-s", "cli_idx_first", stdin=b"x")
    assert first.code == 0, first.err
    publish(site, "cli_idx_later")  # as pip would: a new .dist-info beside the first
    later = stoq("scan", "-", "-s", "cli_idx_later", stdin=b"x")

    assert later.code == 0, later.err
    assert json.loads(later.out)["results"][0]["workers"] == {
        "cli_idx_later": {"from": "cli_idx_later"}
    }


def test_list_reads_the_metadata_even_when_the_index_says_otherwise(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    done = stoq("scan", "-", "-s", "cli_echo", stdin=b"x")
    assert done.code == 0, done.err
    for index in index_files(stoq.home):  # written only if the path was still: doctor any
        saved = json.loads(index.read_text())
        saved["entry_points"] = {}
        index.write_text(json.dumps(saved))

    listed = stoq("list", "--json")

    assert listed.code == 0, listed.err
    assert "cli_echo" in {plugin["name"] for plugin in json.loads(listed.out)}


def test_an_index_that_lies_is_believed_only_while_the_path_is_unchanged(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    """Proves the index is read at all: a doctored index hides a plugin until the path changes."""
    site = tmp_path / "still-site"
    site.mkdir()
    publish(site, "cli_idx_still")
    # A path made only of old directories, so the index is written and trusted.
    stoq.env["PYTHONPATH"] = str(site)
    settle(site, stoq.cwd)
    done = stoq("scan", "-", "-s", "cli_idx_still", stdin=b"x")
    assert done.code == 0, done.err
    indexes = index_files(stoq.home)
    if not indexes:
        pytest.skip("the interpreter's own site-packages changed in the last seconds")
    saved = json.loads(indexes[0].read_text())
    assert "cli_idx_still" in saved["entry_points"]
    saved["entry_points"].pop("cli_idx_still")
    indexes[0].write_text(json.dumps(saved))

    hidden = stoq("scan", "-", "-s", "cli_idx_still", stdin=b"x")
    assert hidden.code == 2 and "'cli_idx_still' is not installed" in hidden.err

    publish(site, "cli_idx_other")  # any install changes the path's times
    found = stoq("scan", "-", "-s", "cli_idx_still", stdin=b"x")
    assert found.code == 0, found.err
