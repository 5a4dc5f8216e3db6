"""Fixtures for the CLI's tests: the installed ``stoq`` script run as a user runs it.

Every test gets its own ``STOQ_HOME`` (not created: the CLI must create it) and the fake plugins of
``cli_fakes`` published as the entry points of a test distribution, visible to the child process
through ``PYTHONPATH``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click.testing
import pytest
from cli_support import CLI_TESTS, DIST, DIST_VERSION, PLUGINS, StoqRunner

import stoq_core
from stoq_cli.main import cli


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The test's $STOQ_HOME; it does not exist until stoq creates it."""
    return tmp_path / "stoq-home"


@pytest.fixture
def plugin_site(install_plugins: Callable[..., Path]) -> Path:
    """The fake plugins as entry points, for this process and (through PYTHONPATH) for children."""
    if str(CLI_TESTS) not in sys.path:  # where cli_fakes lives, for in-process tests
        sys.path.insert(0, str(CLI_TESTS))
    return install_plugins(PLUGINS, dist=DIST, version=DIST_VERSION)


@pytest.fixture
def stoq(tmp_path: Path, home: Path, plugin_site: Path) -> StoqRunner:
    """``stoq(*args)`` runs the installed script; the working directory is an empty one."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = tmp_path / "broken-plugin-imported"
    env = dict(os.environ)
    for name in ("NO_COLOR", "FORCE_COLOR", "STOQ_HOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    python_path = [str(plugin_site), str(CLI_TESTS)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    env.update(
        STOQ_HOME=str(home),
        PYTHONPATH=os.pathsep.join(python_path),
        STOQ_TEST_IMPORT_MARKER=str(marker),
        COLUMNS="200",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INDEX="1",
    )
    return StoqRunner(home=home, cwd=cwd, env=env, import_marker=marker)


@pytest.fixture
def invoke(
    plugin_site: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., click.testing.Result]]:
    """``invoke(*args)`` runs the command line in this process with click's CliRunner."""
    monkeypatch.setenv("STOQ_HOME", str(home))
    runner = click.testing.CliRunner()
    logger = logging.getLogger("stoq")
    handlers = list(logger.handlers)

    def run(*args: str, stdin: bytes | None = None) -> click.testing.Result:
        return runner.invoke(cli, list(args), input=stdin)

    yield run
    # The command named this test's home for the entry-point index; the next test has another.
    stoq_core.use_entry_point_index(None)
    # The engine logs to the stderr it saw, CliRunner's, which is now closed.
    for handler in set(logger.handlers) - set(handlers):
        logger.removeHandler(handler)
        handler.close()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "samples" / "sample.bin"
    path.parent.mkdir()
    path.write_bytes(b"MZ stoq sample")
    return path
