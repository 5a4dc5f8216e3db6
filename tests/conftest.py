"""Shared fixtures: fake plugins are published as real entry points, the way a distribution does."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

# The fixtures plugin authors use; the core's own tests use them too.
pytest_plugins = ["stoq_core.testing"]


@pytest.fixture
def install_plugins(publish_plugins: Callable[..., Path]) -> Callable[..., Path]:
    """``install_plugins({"name": "fakes:Class"}, dist="stoq-plugin-x")`` publishes entry points.

    The targets live in the tests folder (``tests/fakes.py`` and friends); see
    ``stoq_core.testing.publish_plugins``.
    """
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return publish_plugins
