"""The command line under hostile conditions (issue 12): stdout belongs to results.

A plugin's output never reaches the JSON on stdout; a closed or full stdout, a closed stderr,
an endless stdin and nonsensical limits each end in one ``stoq: error: ...`` line and the right
exit code, never a traceback or a lost result; the first Ctrl-C of a ``stoq run`` writing to a
slow reader is never lost. Every test runs the installed ``stoq`` in a child process.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import termios
import threading
import time
from pathlib import Path

import attrs
import pytest
from cli_support import Done, StoqRunner

# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def hostile_stoq(stoq: StoqRunner, hostile_site: Path) -> StoqRunner:
    """``stoq`` with the hostile plugins (tests/hostile) installed as well."""
    python_path = os.pathsep.join([str(hostile_site), stoq.env["PYTHONPATH"]])
    return attrs.evolve(stoq, env={**stoq.env, "PYTHONPATH": python_path})


def _shell(stoq: StoqRunner, redirect: str, *args: str, timeout: float = 120) -> Done:
    """``stoq ARGS REDIRECT`` through sh, for what subprocess cannot set up (``>&-``)."""
    done = subprocess.run(
        ["sh", "-c", f'exec "$0" "$@" {redirect}', *stoq.command(*args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=stoq.env,
        cwd=stoq.cwd,
        timeout=timeout,
    )
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


def _one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stoq: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def _configure(home: Path, core: str) -> None:
    home.mkdir(exist_ok=True)
    (home / "stoq.cfg").write_text(f"[core]\n{core}\n")


# -- a plugin's output goes to stderr ---------------------------------------------------------


@pytest.mark.parametrize("plugin", ["hostile", "hostile_sync"])
def test_a_plugins_print_and_fd_1_writes_go_to_stderr_not_among_the_results(
    hostile_stoq: StoqRunner, sample: Path, plugin: str
) -> None:
    done = hostile_stoq("scan", str(sample), "-s", plugin, "--plugin-opts", f"{plugin}:mode=print")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"][plugin] == {"hostile": plugin}  # all of stdout
    assert f"HOSTILE-PRINT from {plugin}" in done.err
    assert "HOSTILE-FD1" in done.err


def test_a_plugins_child_process_writes_to_stderr(hostile_stoq: StoqRunner, sample: Path) -> None:
    done = hostile_stoq(
        "scan", str(sample), "-s", "hostile", "--plugin-opts", "hostile:mode=print_child"
    )

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["hostile"] == {"hostile": "hostile"}
    assert "HOSTILE-CHILD" in done.err


def test_stoq_run_prints_only_json_lines_while_its_plugins_print(
    hostile_stoq: StoqRunner,
) -> None:
    done = hostile_stoq(
        "run", "-P", "hostile", "-a", "hostile",
        "--plugin-opts", "hostile:mode=print", "hostile:hooks=scan", "hostile:payloads=3",
    )  # fmt: skip

    assert done.code == 0, done.err
    assert len(done.lines()) == 3  # every line of stdout is a response
    assert done.err.count("HOSTILE-PRINT") == 3


# -- stdout closed or full, stderr closed -----------------------------------------------------


@pytest.mark.parametrize("command", ["scan", "run"])
def test_a_closed_stdout_without_connectors_is_a_usage_error(
    stoq: StoqRunner, sample: Path, command: str
) -> None:
    args = [str(sample)] if command == "scan" else ["-P", "cli_burst"]

    done = _shell(stoq, ">&-", command, *args, "-a", "cli_echo")

    assert done.code == 2
    _one_error_line(done.err, "stdout is closed", "-C")


def test_a_closed_stdout_with_a_connector_scans_and_saves(
    stoq: StoqRunner, sample: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"

    done = _shell(
        stoq, ">&-", "scan", str(sample), "-s", "cli_echo",
        "-C", "cli_sink", "--plugin-opts", f"cli_sink:results_dir={results}",
    )  # fmt: skip

    assert (done.code, done.err) == (0, "")
    assert len(list(results.iterdir())) == 1


@pytest.mark.parametrize("command", ["scan", "run", "list"])
def test_a_full_stdout_is_one_error_line_and_exit_1(
    stoq: StoqRunner, sample: Path, command: str
) -> None:
    args = {
        "scan": [str(sample), "-a", "cli_echo"],
        "run": ["-P", "cli_burst", "-a", "cli_echo"],
        "list": ["--json"],
    }[command]

    done = _shell(stoq, "> /dev/full", command, *args)

    assert done.code == 1  # the scan ran
    _one_error_line(done.err, "cannot write results: No space left on device")


def test_with_stderr_closed_error_lines_never_reach_stdout(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    done = _shell(stoq, "2>&-", "scan", str(tmp_path / "missing.bin"), "-s", "cli_echo")

    assert (done.code, done.out) == (2, "")


def test_with_stderr_closed_stdout_holds_only_the_response(
    hostile_stoq: StoqRunner, sample: Path
) -> None:
    done = _shell(
        hostile_stoq, "2>&-", "scan", str(sample), "-s", "hostile,cli_fail",
        "--plugin-opts", "hostile:mode=print",
    )  # fmt: skip

    assert done.code == 1
    assert [error["plugin_name"] for error in done.json()["errors"]] == ["cli_fail"]


# -- inputs over max_payload_size -------------------------------------------------------------


def test_stdin_is_read_no_further_than_max_payload_size(stoq: StoqRunner, home: Path) -> None:
    _configure(home, "max_payload_size = 1000")
    process = subprocess.Popen(
        stoq.command("scan", "-", "-s", "cli_echo"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.env, cwd=stoq.cwd,
    )  # fmt: skip
    assert process.stdin is not None

    def feed() -> None:
        # 8 MB and no end: stoq must stop reading at the limit, not wait for an end of file.
        try:
            for _ in range(128):
                process.stdin.write(b"\0" * 65536)  # type: ignore[union-attr]
                process.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 1, err
    response = json.loads(out)
    assert response["results"] == []
    [error] = response["errors"]
    assert "stdin is larger than max_payload_size (1000 bytes)" in error["error"]


def test_an_oversized_file_gets_an_error_response_and_the_others_are_scanned(
    stoq: StoqRunner, home: Path, tmp_path: Path
) -> None:
    _configure(home, "max_payload_size = 1000")
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(b"B" * 1001)
    small.write_bytes(b"S" * 1000)  # at the limit: scanned

    done = stoq("scan", "-s", "cli_echo", "--", str(big), str(small))

    assert done.code == 1, done.err
    too_big, scanned = done.lines()
    assert too_big["results"] == []
    assert f"{big} is larger than max_payload_size (1000 bytes)" in too_big["errors"][0]["error"]
    assert scanned["results"][0]["workers"]["cli_echo"]["size"] == 1000
    assert scanned["errors"] == []


def test_an_oversized_input_still_has_its_line_in_jsonl_format(
    stoq: StoqRunner, home: Path
) -> None:
    _configure(home, "max_payload_size = 10")

    done = stoq("scan", "-", "-s", "cli_echo", "--format", "jsonl", stdin=b"x" * 11)

    assert done.code == 1, done.err
    [line] = done.lines()
    assert line["results"] == []
    assert "stdin is larger than max_payload_size (10 bytes)" in line["errors"][0]["error"]


def test_an_oversized_file_under_a_directory_gets_an_error_response(
    stoq: StoqRunner, home: Path, tmp_path: Path
) -> None:
    _configure(home, "max_payload_size = 1000")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a-big").write_bytes(os.urandom(50_000))
    (tree / "b-small").write_bytes(b"small")

    done = stoq("scan", str(tree), "-s", "cli_echo")

    assert done.code == 1, done.err
    too_big, scanned = done.lines()
    assert "a-big is larger than max_payload_size" in too_big["errors"][0]["error"]
    assert scanned["results"][0]["payload_meta"]["extra_data"]["filename"] == "b-small"


# -- limits: one usage error line, exit 2 -----------------------------------------------------


@pytest.mark.parametrize("option", ["--timeout", "--deadline"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5"])
def test_a_time_limit_that_is_not_a_finite_number_is_a_usage_error(
    stoq: StoqRunner, sample: Path, option: str, value: str
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", f"{option}={value}")

    assert (done.code, done.out) == (2, "")
    _one_error_line(done.err, option)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--max-recursion", "-5"], "--max-recursion"), (["--log-level", "bogus"], "--log-level")],
)
def test_a_bad_limit_or_log_level_is_a_usage_error(
    stoq: StoqRunner, sample: Path, args: list[str], fragment: str
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", *args)

    assert (done.code, done.out) == (2, "")
    _one_error_line(done.err, fragment)


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("max_recursion = -5", "max_recursion"),
        ("max_result_size = -1", "max_result_size"),
        ("timeout = nan", "timeout"),
        ("log_level = bogus", "log_level"),
        ("log_syntax = xml", "log_syntax"),
    ],
)
@pytest.mark.parametrize("command", ["scan", "run", "run --consumers 2"])
def test_a_bad_core_setting_in_stoq_cfg_is_one_error_line_and_exit_2(
    stoq: StoqRunner, home: Path, sample: Path, setting: str, fragment: str, command: str
) -> None:
    _configure(home, setting)
    args = [str(sample)] if command == "scan" else ["-P", "cli_burst"]

    done = stoq(*command.split(), *args, "-a", "cli_echo")

    assert (done.code, done.out) == (2, "")
    _one_error_line(done.err, fragment)


# -- Ctrl-C while stdout is slow --------------------------------------------------------------


def _unread_bytes(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


def test_the_first_ctrl_c_is_not_lost_while_stdout_is_slow(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for index in range(400):  # a few hundred KB of responses: more than the pipe holds
        (source / f"first{index:03}").write_bytes(os.urandom(64))
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err_file:
        process = subprocess.Popen(
            stoq.command(
                "run", "-P", "filedir", "-a", "hash", "--plugin-opts",
                f"filedir:source_dir={source}", "filedir:watch=true",
            ),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file,
            env=stoq.env, cwd=stoq.cwd,
        )  # fmt: skip
    assert process.stdout is not None
    try:
        # Nobody reads stdout: wait until the pipe is full and stoq waits on its write.
        capacity = fcntl.fcntl(process.stdout.fileno(), fcntl.F_GETPIPE_SZ)
        deadline = time.monotonic() + 120
        while _unread_bytes(process.stdout.fileno()) < capacity - 4096:
            assert process.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "stdout never filled up"
            time.sleep(0.05)
        # New files: the watch's thread wakes the event loop for each, filling its self-pipe,
        # where asyncio used to look for the signal.
        for index in range(2000):
            (source / f"more{index:04}").write_bytes(b"more")
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)  # reading lets the run finish
    finally:
        process.kill()
        process.wait()

    err = err_path.read_text()
    assert process.returncode == 128 + signal.SIGINT, err
    assert "stoq: stopped by SIGINT" in err
    assert "Exception ignored" not in err
    assert all(json.loads(line)["results"] for line in out.splitlines())
