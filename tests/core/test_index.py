"""The entry-point index: read back while the import path is unchanged, rebuilt when it is not."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from index_helpers import publish, settle

import stoq_core
from stoq_core import _index
from stoq_core.testing import scan_sync


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory and the standard library as sys.path, the index in tmp_path/index.json.

    The path is only these so that the test decides when it is still (the checkout or a venv
    just installed would not be).
    """
    site = tmp_path / "site"
    site.mkdir()
    stdlib = [p for p in sys.path if p.startswith(sys.base_prefix) and "-packages" not in p]
    monkeypatch.setattr(sys, "path", [str(site), *stdlib])
    stoq_core.use_entry_point_index(tmp_path / "index.json")
    yield site
    stoq_core.use_entry_point_index(None)
    stoq_core.refresh_entry_points()


def index_file(site: Path) -> Path:
    return site.parent / "index.json"


def test_the_index_is_written_once_the_path_is_still_and_read_back(site: Path) -> None:
    publish(site, "idx_one")
    settle(site)
    found = _index.entry_points()
    assert found["idx_one"][0].dist_name == "stoq-idx-one"
    saved = json.loads(index_file(site).read_text())
    assert saved["entry_points"]["idx_one"][0]["value"] == "idx_one:Plugin"

    # A new process (the in-memory copy dropped) takes the file as it is: proven by editing it.
    saved["entry_points"]["idx_one"][0]["summary"] = "read from the index"
    index_file(site).write_text(json.dumps(saved))
    stoq_core.use_entry_point_index(index_file(site))
    assert _index.entry_points()["idx_one"][0].summary == "read from the index"


def test_an_entry_from_the_index_loads_and_scans(site: Path, tmp_path: Path) -> None:
    publish(site, "idx_scan")
    settle(site)
    _index.entry_points()
    stoq_core.use_entry_point_index(index_file(site))  # the next lookup reads the file
    stoq = stoq_core.Stoq(base_dir=str(tmp_path), log_dir=None, always_dispatch=["idx_scan"])
    response = scan_sync(stoq, b"x")
    assert response.results[0].workers == {"idx_scan": {"from": "idx_scan"}}


def test_a_distribution_installed_later_is_seen(site: Path) -> None:
    publish(site, "idx_first")
    settle(site)
    assert set(_index.entry_points()) >= {"idx_first"}
    publish(site, "idx_later")
    stoq_core.use_entry_point_index(index_file(site))
    assert {"idx_first", "idx_later"} <= set(_index.entry_points())


def test_a_removed_distribution_is_forgotten(site: Path) -> None:
    publish(site, "idx_gone")
    settle(site)
    assert "idx_gone" in _index.entry_points()
    for path in sorted(site.glob("stoq_idx_gone-*.dist-info/*")):
        path.unlink()
    next(site.glob("stoq_idx_gone-*.dist-info")).rmdir()
    stoq_core.use_entry_point_index(index_file(site))
    assert "idx_gone" not in _index.entry_points()


def test_a_path_changed_in_the_last_seconds_is_not_trusted(site: Path) -> None:
    publish(site, "idx_racy")
    assert "idx_racy" in _index.entry_points()
    assert not index_file(site).exists()


def test_a_new_path_entry_invalidates_the_index(site: Path, tmp_path: Path) -> None:
    settle(site)
    _index.entry_points()
    assert index_file(site).exists()
    other = tmp_path / "other"
    publish(other, "idx_other")
    sys.path.insert(0, str(other))
    try:
        stoq_core.use_entry_point_index(index_file(site))
        assert "idx_other" in _index.entry_points()
    finally:
        sys.path.remove(str(other))


@pytest.mark.parametrize("content", ["", "{not json", '{"fingerprint": 1}', "[]", '{"a": 1}'])
def test_a_broken_index_is_ignored_and_rewritten(site: Path, content: str) -> None:
    publish(site, "idx_broken")
    settle(site)
    index_file(site).write_text(content)
    assert "idx_broken" in _index.entry_points()
    assert "idx_broken" in json.loads(index_file(site).read_text())["entry_points"]


def test_refresh_reads_the_metadata_even_when_the_index_matches(site: Path) -> None:
    publish(site, "idx_fresh")
    settle(site)
    _index.entry_points()
    saved = json.loads(index_file(site).read_text())
    saved["entry_points"] = {}  # an index that lies, with a matching fingerprint
    index_file(site).write_text(json.dumps(saved))
    stoq_core.refresh_entry_points()
    assert "idx_fresh" in _index.entry_points()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_index_that_cannot_be_written_costs_nothing_but_time(site: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        publish(site, "idx_ro")
        settle(site)
        stoq_core.use_entry_point_index(locked / "cache" / "index.json")
        assert "idx_ro" in _index.entry_points()
    finally:
        locked.chmod(0o700)


def test_an_index_under_a_file_costs_nothing_but_time(site: Path, tmp_path: Path) -> None:
    # Works as root too: a path under a regular file cannot be created by anyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    publish(site, "idx_blocked")
    settle(site)
    stoq_core.use_entry_point_index(blocker / "cache" / "index.json")
    assert "idx_blocked" in _index.entry_points()


def test_entry_values_load_as_entry_points_do(site: Path) -> None:
    (site / "idx_values.py").write_text("class Outer:\n    class Inner:\n        pass\n")
    entry = _index.PluginEntry("n", "idx_values:Outer.Inner [extra]", "d", "1")
    assert entry.load().__qualname__ == "Outer.Inner"
    assert _index.PluginEntry("n", "idx_values", "d", "1").load().__name__ == "idx_values"
    with pytest.raises(ValueError, match="not an entry point"):
        _index.PluginEntry("n", "idx values:X", "d", "1").load()
