"""Fixtures: rule files written per test, and test workers published as real entry points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Stoq

TESTS = Path(__file__).parent

# stoQ's fixtures for plugin tests: stoq_with, and the helpers of stoq_core.testing.
pytest_plugins = ["stoq_core.testing"]

#: The workers in yara_testplugins.py, by the plugin name they are published under.
TEST_WORKERS = {
    "probe": "yara_testplugins:ProbeWorker",
    "marker": "yara_testplugins:MarkerWorker",
    "carver": "yara_testplugins:CarverWorker",
}


@pytest.fixture
def test_workers(publish_plugins: Callable[..., Path]) -> None:
    """Publish the workers of ``yara_testplugins.py`` as the entry points in ``TEST_WORKERS``."""
    publish_plugins(TEST_WORKERS, dist="stoq-yara-test-workers", import_path=TESTS)


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
