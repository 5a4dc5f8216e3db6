"""Plugins published into a site directory, and site directories made to look long installed.

Shared by the tests of the entry-point index (tests/core/test_index.py, through the library, and
tests/cli/test_cli_index.py, through the installed ``stoq``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from stoq_core.testing import write_distribution

MODULE = """
from stoq_core import WorkerResponse, hookimpl

class Plugin:
    def __init__(self, config):
        pass

    @hookimpl
    async def scan(self, payload, request):
        return WorkerResponse({"from": __name__})
"""


def publish(site: Path, name: str) -> None:
    """Distribution ``stoq-<name>`` in ``site``: plugin ``name``, module ``name`` beside it.

    Its worker's results are ``{"from": name}``.
    """
    write_distribution(site, f"stoq-{name.replace('_', '-')}", {name: f"{name}:Plugin"})
    (site / f"{name}.py").write_text(MODULE)


def settle(*paths: Path) -> None:
    """Date ``paths`` a minute back, as if the installs happened before this run."""
    past = time.time() - 60
    for path in paths:
        os.utime(path, (past, past))
