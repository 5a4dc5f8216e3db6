"""Shared fixtures: fake plugins are published as real entry points, the way a distribution does."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

# The fixtures plugin authors use; the core's own tests use them too.
pytest_plugins = ["stoq_core.testing"]


def pytest_configure(config: pytest.Config) -> None:
    # Plugin directories the tests write must not be group-writable, whatever the umask of the
    # machine: stoQ refuses v3 plugins that others can write.
    os.umask(0o022)
    deliver_ctrl_c()


def deliver_ctrl_c() -> None:
    """Let the commands the tests start be interrupted, however the tests were started.

    A command started in the background of a shell without job control (``nox &``) has SIGINT
    ignored, and every process it starts inherits that: the Ctrl-C tests then wait forever. A
    handled signal is reset to its default at exec, so handling it here is enough.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def install_plugins(publish_plugins: Callable[..., Path]) -> Callable[..., Path]:
    """``install_plugins({"name": "fakes:Class"}, dist="stoq-plugin-x")`` publishes entry points.

    The targets live in the tests folder (``tests/fakes.py`` and friends); see
    ``stoq_core.testing.publish_plugins``.
    """
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return publish_plugins


@pytest.fixture(scope="session")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hostile plugins (``tests/hostile``) built and installed into a folder of their own.

    A real wheel's ``.dist-info``, so each hostile plugin takes the entry-point path of any
    third-party plugin; the folder goes on ``sys.path`` (``hostile``) or a child's ``PYTHONPATH``.
    """
    import subprocess

    site = tmp_path_factory.mktemp("hostile-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(TESTS / "hostile"),
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return site


@pytest.fixture
def hostile(hostile_site: Path) -> Iterator[Path]:
    """The hostile plugins published for this test (in this process); returns their folder."""
    from stoq_core.testing import published

    with published(hostile_site):
        yield hostile_site


@pytest.fixture(scope="session")
def command_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests/commandplugin`` (a distribution adding ``stoq`` commands) built and installed into
    a folder of its own, as ``hostile_site`` does, for a child's ``PYTHONPATH``."""
    import subprocess

    site = tmp_path_factory.mktemp("command-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(TESTS / "commandplugin")],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    return site
