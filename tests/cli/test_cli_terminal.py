"""What a terminal on stderr shows: the progress bar of ``scan`` and the counts of ``run``.

stderr is a real pseudo-terminal here; stdout stays a pipe, as when results are redirected.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest
from cli_support import StoqRunner, run_on_terminal

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")


def run_with_terminal_stderr(
    stoq: StoqRunner, *args: str, timeout: float = 60
) -> tuple[int, str, str]:
    """Run stoq with stderr on a 120-column pseudo-terminal; returns (code, stdout, terminal)."""
    code, terminal, out = run_on_terminal(
        stoq, *args, stream="stderr", columns=120, timeout=timeout
    )
    return code, out.decode(), terminal.decode(errors="replace")


def test_scanning_a_directory_draws_a_progress_bar_on_a_terminal(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(5):
        (tree / f"file{index}").write_bytes(b"x" * (index + 1))

    code, out, terminal = run_with_terminal_stderr(stoq, "scan", str(tree), "-s", "cli_echo")

    assert code == 0, terminal
    assert len([json.loads(line) for line in out.splitlines()]) == 5  # stdout: results only
    assert "scanning" in terminal
    assert "5/5" in terminal


def test_the_progress_bar_escapes_a_hostile_file_name(stoq: StoqRunner, tmp_path: Path) -> None:
    hostile, plain = tmp_path / "a\x1b]0;owned\x07name", tmp_path / "plain"
    hostile.write_bytes(b"x")
    plain.write_bytes(b"y")

    # The last file's name is the one the bar shows as it ends.
    code, _, terminal = run_with_terminal_stderr(
        stoq, "scan", str(plain), str(hostile), "-s", "cli_echo"
    )

    assert code == 0, terminal
    assert "\x1b]0;" not in terminal and "\x07" not in terminal  # the title was never set
    assert "2/2" in terminal


def test_one_file_draws_no_progress_bar(stoq: StoqRunner, sample: Path) -> None:
    code, out, terminal = run_with_terminal_stderr(stoq, "scan", str(sample), "-s", "cli_echo")

    assert code == 0, terminal
    assert json.loads(out)["results"][0]["workers"]["cli_echo"]["size"] == 14
    assert terminal == ""


def test_run_shows_a_live_line_of_counts_on_a_terminal(stoq: StoqRunner) -> None:
    code, out, terminal = run_with_terminal_stderr(
        stoq, "run", "-P", "cli_burst", "-a", "cli_echo,cli_fail",
        "--plugin-opts", "cli_burst:count=5",
    )  # fmt: skip

    assert code == 1, terminal  # cli_fail fails every scan
    assert len(out.splitlines()) == 5
    assert "ingested 5 \u00b7 scanned 5 \u00b7 errors 5 \u00b7 " in terminal
    assert "/s" in terminal


def test_no_file_with_stdin_on_a_terminal_is_a_usage_error_not_a_wait(stoq: StoqRunner) -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            stoq.command("scan", "-s", "cli_echo"), stdin=follower, capture_output=True,
            env=stoq.env, cwd=stoq.cwd, timeout=60,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)

    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.decode().startswith("stoq: error: no FILE given")
