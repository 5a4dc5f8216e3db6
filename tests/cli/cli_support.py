"""Helpers of the CLI's tests: running the installed ``stoq`` script, and v3 plugin directories.

A module of its own (not conftest.py) so that test modules can import it by a name no other test
directory uses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

from stoq_core.testing import CommandResult, StoqCommand, stoq_script

CLI_TESTS = Path(__file__).parent

DIST = "stoq-plugin-clitest"
DIST_VERSION = "0.3.1"

PLUGINS = {
    "cli_echo": "cli_fakes:Echo",
    "cli_carve": "cli_fakes:Carver",
    "cli_fail": "cli_fakes:Failing",
    "cli_slow": "cli_fakes:Slow",
    "cli_dispatch": "cli_fakes:Dispatch",
    "cli_sink": "cli_fakes:Sink",
    "cli_badsink": "cli_fakes:BrokenSink",
    "cli_tag": "cli_fakes:Tagger",
    "cli_burst": "cli_fakes:Burst",
    "cli_endless": "cli_fakes:Endless",
    "cli_badprovider": "cli_fakes:FailingProvider",
    "cli_wontstart": "cli_fakes:WontStart",
    "cli_broken": "cli_broken_import:Anything",
}


#: The ``stoq`` script beside this interpreter (the code under test), else the one on PATH.
stoq_executable = stoq_script

#: A finished ``stoq`` process: ``code``, ``out``, ``err``, ``json()``, ``lines()``.
Done = CommandResult


@attrs.define
class StoqRunner(StoqCommand):
    """Runs ``stoq`` in a child process with the test's home and plugins: the core's public
    ``StoqCommand``, with an environment the fixture builds whole (``PYTHONPATH`` included)."""

    import_marker: Path

    def environment(self) -> dict[str, str]:
        return self.env


def write_legacy_plugin(parent: Path, name: str = "echo3", version: str = "3.0.1") -> Path:
    """A stoQ v3 plugin directory, ``parent/name``: a .stoq file beside its module."""
    directory = parent / name
    directory.mkdir(parents=True)
    (directory / f"{name}.stoq").write_text(
        f"[Core]\nName = {name}\nModule = {name}\n\n"
        f"[Documentation]\nAuthor = tests\nVersion = {version}\nDescription = a v3 worker\n"
    )
    (directory / f"{name}.py").write_text(
        "from stoq_core import WorkerResponse\n"
        "from stoq_core.plugins import WorkerPlugin\n\n\n"
        "class LegacyEcho(WorkerPlugin):\n"
        "    async def scan(self, payload, request):\n"
        f"        return WorkerResponse({{'legacy': {version!r}}})\n"
    )
    return directory


def run_on_terminal(
    stoq: StoqRunner,
    *args: str,
    stream: str,
    columns: int | None = None,
    timeout: float = 60,
) -> tuple[int, bytes, bytes]:
    """Run ``stoq`` with ``stream`` (``"stdout"`` or ``"stderr"``) on a pseudo-terminal, the
    other on a pipe; returns (exit code, what the terminal got, what the pipe got)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    leader, follower = pty.openpty()
    env = {**stoq.env, "TERM": "xterm-256color"}
    if columns is not None:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env.pop("COLUMNS", None)
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: follower}
    process = subprocess.Popen(
        stoq.command(*args), stdin=subprocess.DEVNULL, env=env, cwd=stoq.cwd, **streams
    )
    os.close(follower)
    terminal = bytearray()
    deadline = time.monotonic() + timeout
    try:
        # Drain the terminal while the process runs, or it blocks once the buffer fills.
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the process closed its end
                    break
                if not chunk:
                    break
                terminal += chunk
            elif process.poll() is not None:
                break
        out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        process.kill()
        os.close(leader)
    piped = err if stream == "stdout" else out
    return process.returncode, bytes(terminal), piped or b""
