"""Fixtures: rule files written per test, and test workers published as real entry points."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Stoq

# Tests only: the entry-point cache must forget what it saw before the test distribution existed.
from stoq_core._manager import refresh_entry_points

TESTS = Path(__file__).parent

# stoQ's fixtures for plugin tests: stoq_with, and the helpers of stoq_core.testing.
pytest_plugins = ["stoq_core.testing"]

#: The workers in yara_testplugins.py, by the plugin name they are published under.
TEST_WORKERS = {
    "probe": "yara_testplugins:ProbeWorker",
    "marker": "yara_testplugins:MarkerWorker",
    "carver": "yara_testplugins:CarverWorker",
}


def write_distribution(site: Path, dist: str, entry_points: dict[str, str]) -> Path:
    """Write an installed distribution's ``.dist-info`` under ``site``, as pip would."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[stoq.plugins]\n{lines}")
    return info


@pytest.fixture
def test_workers(tmp_path: Path) -> Iterator[None]:
    """Publish the workers of ``yara_testplugins.py`` as the entry points in ``TEST_WORKERS``."""
    site = tmp_path / "site"
    write_distribution(site, "stoq-yara-test-workers", TEST_WORKERS)
    added = [str(site), str(TESTS)]
    sys.path[:0] = added
    refresh_entry_points()
    yield
    for entry in added:
        sys.path.remove(entry)
    refresh_entry_points()


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., str]:
    """``write_rules("name.yar", source)`` writes a rule file under tmp_path and returns its path."""

    def write(name: str, source: str, directory: str = "rules") -> str:
        path = tmp_path / directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        return str(path)

    return write


@pytest.fixture
def make_stoq(stoq_with: Callable[..., Stoq]) -> Callable[..., Stoq]:
    """``make_stoq(yara={...options}, always_dispatch=[...])``: ``stoq_with`` for yara.

    The Stoq is isolated in tmp_path and has yara loaded through its entry point.
    """

    def make(yara: dict[str, Any] | None = None, **kwargs: Any) -> Stoq:
        return stoq_with("yara", options=yara or {}, **kwargs)

    return make
