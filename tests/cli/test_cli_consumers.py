"""``stoq run --consumers N``: N worker processes with the same options, their output relayed.

Providers that share work out (a queue's) are the point of it; these tests need none: each
child runs its own fake provider. The Redis-backed test is in stoq-plugin-redis's tests.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_support import Done, StoqRunner


def one_line_error(done: Done) -> str:
    assert done.code == 2, done.err
    assert done.out == ""
    assert len(done.err.splitlines()) == 1, done.err
    assert "Traceback" not in done.err
    return done.err


def test_run_with_consumers_relays_every_childs_json_lines_whole(stoq: StoqRunner) -> None:
    done = stoq(
        "run", "--consumers", "3", "-P", "cli_burst", "-a", "cli_echo",
        "--plugin-opts", "cli_burst:count=4", "--request-extra", "batch=7", "urgent=true",
    )  # fmt: skip

    assert done.code == 0, done.err
    responses = done.lines()  # each line is one whole JSON document
    assert len(responses) == 12  # every process runs its own provider
    assert {json.dumps(r["request_meta"]["extra_data"]) for r in responses} == {
        json.dumps({"batch": "7", "urgent": True})
    }


def test_run_with_consumers_gives_each_child_the_time_limits(stoq: StoqRunner) -> None:
    done = stoq(
        "run", "--consumers", "2", "-P", "cli_burst", "-a", "cli_slow", "--timeout", "0.25",
        "--plugin-opts", "cli_burst:count=2", "cli_slow:seconds=60",
    )  # fmt: skip

    assert done.code == 1
    responses = done.lines()
    assert len(responses) == 4
    assert {e["error"] for r in responses for e in r["errors"]} == {"scan timed out after 0.25 s"}


def test_run_with_consumers_exits_with_the_worst_childs_code(stoq: StoqRunner) -> None:
    done = stoq("run", "--consumers", "2", "-P", "cli_burst", "-a", "cli_fail")

    assert done.code == 1
    assert len(done.lines()) == 6


def test_ctrl_c_reaches_every_consumer_once_and_each_drains(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "queued"
    process = subprocess.Popen(
        stoq.command(
            "run", "--consumers", "2", "-P", "cli_endless", "-a", "cli_slow",
            "--plugin-opts", f"cli_endless:marker={marker}", "cli_endless:count=2",
            "cli_slow:seconds=0.5",
        ),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.env, cwd=stoq.cwd,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "no consumer queued anything"
            time.sleep(0.02)
        time.sleep(1.0)  # both children are up and scanning
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 130, err
    # One SIGINT each: they drained (a second one would have aborted them, 'stoq: aborted').
    assert err.decode().count("stopped by SIGINT") == 2, err
    assert "aborted" not in err.decode()
    assert all(
        json.loads(line)["results"][0]["workers"]["cli_slow"] == {"slept": 0.5}
        for line in out.decode().splitlines()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "-P", "cli_burst", "--consumers", "0"], "0 is not in the range x>=1"),
        (["run", "-P", "no_such_plugin", "--consumers", "2"], "'no_such_plugin' is not installed"),
        (["run", "-a", "cli_echo", "--consumers", "2"], "no provider plugins are loaded"),
    ],
)
def test_bad_command_lines_are_one_line_errors(
    stoq: StoqRunner, args: list[str], message: str
) -> None:
    assert message in one_line_error(stoq(*args))
