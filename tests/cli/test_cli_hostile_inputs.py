"""Inputs an attacker or an accident hands the command line: a stdin left non-blocking, an empty
FILE argument, a file swapped for a FIFO, a description that cannot be written, an answer that
never ends. Each is read whole or refused in one line, never truncated, hung on or grown without
bound."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
from cli_support import StoqRunner, write_legacy_plugin

from stoq_cli import _inputs
from stoq_cli._inputs import Skipped, collect


def _unread(fd: int) -> int:
    """Bytes in the pipe of read end ``fd`` that nobody has read yet."""
    count = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return int.from_bytes(count, "little")


def test_a_non_blocking_stdin_is_read_to_its_end_not_cut_at_what_had_arrived(
    stoq: StoqRunner,
) -> None:
    # O_NONBLOCK belongs to the pipe, shared with whoever set it (a parent, another reader):
    # one read gave what had arrived so far, and the rest of the payload went unscanned.
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    process = subprocess.Popen(
        stoq.command("scan", "-", "-s", "cli_echo", "--compact"),
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=stoq.env,
        cwd=stoq.cwd,
    )
    try:
        os.write(write_end, b"a" * 1000)
        deadline = time.monotonic() + 60
        while _unread(read_end) and time.monotonic() < deadline:  # stoq has read the first part
            time.sleep(0.05)
        time.sleep(0.3)  # and found nothing more, for a while
        os.write(write_end, b"b" * 1000)
        os.close(write_end)
        out, err = process.communicate(timeout=60)
    finally:
        os.close(read_end)
        process.kill()

    assert process.returncode == 0, err.decode()
    assert json.loads(out)["results"][0]["size"] == 2000


def test_an_empty_file_argument_is_refused_not_taken_for_the_working_directory(
    stoq: StoqRunner,
) -> None:
    # pathlib reads '' as '.': 'stoq scan "$FILE"' with FILE unset scanned every file here.
    (stoq.cwd / "private.txt").write_bytes(b"not for scanning")

    done = stoq("scan", "", "-s", "cli_echo")

    assert (done.code, done.out) == (2, "")
    assert done.err == (
        "stoq: error: '' is not a file name (an unset shell variable?): name a file\n"
    )


def test_a_named_file_swapped_for_a_fifo_is_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file was regular when looked at, a FIFO by the time it is opened: opening it to
    # check it can be read waited for a writer that never came.
    regular = tmp_path / "regular"
    regular.write_bytes(b"x")
    fifo = tmp_path / "swapped"
    os.mkfifo(fifo)
    monkeypatch.setattr(_inputs, "_stat", lambda path: os.stat(regular))
    outcome: list[BaseException | bytes] = []

    def check_and_read() -> None:
        try:
            (item,) = collect([str(fifo)], allow_empty=False, warn=print)
            outcome.append(item.read(1024))
        except BaseException as exc:
            outcome.append(exc)

    checker = threading.Thread(target=check_and_read, daemon=True)
    checker.start()
    checker.join(10)
    if checker.is_alive():  # let the blocked open go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not checker.is_alive(), "checking the named file blocked on the FIFO"
    (result,) = outcome
    assert isinstance(result, Skipped) and result.reason == "a FIFO"
    assert result.failed  # named on the command line: not scanning it is a failure


@pytest.mark.parametrize(
    "description",
    ["a\x01b", "rubout\x7f", "caf\udce9"],  # a control character, DEL, a byte not UTF-8
    ids=["control", "delete", "not-utf-8"],
)
def test_plugin_new_refuses_a_description_it_cannot_write_in_one_line(
    stoq: StoqRunner, description: str
) -> None:
    # Written as it was, the pyproject did not parse (TOML has no raw control characters),
    # and a byte that is not UTF-8 ended in an "unexpected UnicodeEncodeError".
    done = stoq("plugin", "new", "hostile", "--description", description)

    assert (done.code, done.out) == (2, "")
    assert done.err.startswith("stoq: error: description ")
    assert "not printable" in done.err and len(done.err.splitlines()) == 1
    assert list(stoq.cwd.iterdir()) == []


def test_plugin_new_into_a_folder_named_in_bytes_says_where_it_wrote(stoq: StoqRunner) -> None:
    # A --dir holding a byte that is not UTF-8 was made, then echoing its name raised
    # "unexpected UnicodeEncodeError" (exit 1).
    done = stoq("plugin", "new", "hostile", "--dir", os.fsdecode(b"out\xff"))

    assert done.code == 0, done.err
    assert done.out == "created out\\xff/stoq-plugin-hostile (stoq-plugin-hostile: scan)\n"
    assert (stoq.cwd / os.fsdecode(b"out\xff") / "stoq-plugin-hostile" / "pyproject.toml").is_file()


def _limit_memory() -> None:
    # Without the fix the answer grows until it fails: 2 GiB, not the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_uninstall_reads_a_short_answer_from_a_stdin_without_newlines(stoq: StoqRunner) -> None:
    # 'stoq uninstall NAME < /dev/zero' read stdin for the end of a line that never came.
    write_legacy_plugin(stoq.home / "plugins")
    with open("/dev/zero", "rb") as zeros:
        process = subprocess.run(
            stoq.command("uninstall", "echo3"),
            stdin=zeros,
            capture_output=True,
            env=stoq.env,
            cwd=stoq.cwd,
            timeout=60,
            preexec_fn=_limit_memory,
        )
    err = process.stderr.decode()

    assert (process.returncode, process.stdout) == (1, b""), err
    assert err.endswith("stoq: nothing uninstalled\n")
    assert (stoq.home / "plugins" / "echo3").is_dir()
