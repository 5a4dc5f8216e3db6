"""Fixtures: a Stoq isolated in tmp_path, and a test worker published as a real entry point."""

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


def write_distribution(site: Path, dist: str, entry_points: dict[str, str]) -> Path:
    """Write an installed distribution's ``.dist-info`` under ``site``, as pip would."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[stoq.plugins]\n{lines}")
    return info


@pytest.fixture
def echo_worker(tmp_path: Path) -> Iterator[None]:
    """Publish ``filedir_testplugins:EchoWorker`` as the worker ``echo``."""
    site = tmp_path / "site"
    write_distribution(
        site, "stoq-filedir-test-workers", {"echo": "filedir_testplugins:EchoWorker"}
    )
    added = [str(site), str(TESTS)]
    sys.path[:0] = added
    refresh_entry_points()
    yield
    for entry in added:
        sys.path.remove(entry)
    refresh_entry_points()


@pytest.fixture
def make_stoq(stoq_with: Callable[..., Stoq]) -> Callable[..., Stoq]:
    """``make_stoq(filedir={...options}, connectors=[...])``: ``stoq_with`` for filedir.

    The Stoq is isolated in tmp_path and has filedir loaded through its entry point.
    """

    def make(filedir: dict[str, Any] | None = None, **kwargs: Any) -> Stoq:
        return stoq_with("filedir", options=filedir or {}, **kwargs)

    return make


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """An empty directory to ingest."""
    directory = tmp_path / "source"
    directory.mkdir()
    return directory
