"""Fixtures: a Stoq isolated in tmp_path, and a test worker published as a real entry point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Stoq

TESTS = Path(__file__).parent

# stoQ's fixtures for plugin tests: stoq_with, and the helpers of stoq_core.testing.
pytest_plugins = ["stoq_core.testing"]


@pytest.fixture
def echo_worker(publish_plugins: Callable[..., Path]) -> None:
    """Publish ``filedir_testplugins:EchoWorker`` as the worker ``echo``."""
    publish_plugins(
        {"echo": "filedir_testplugins:EchoWorker"},
        dist="stoq-filedir-test-workers",
        import_path=TESTS,
    )


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
