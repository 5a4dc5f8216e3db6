"""``isolate = true`` from the command line: ``--timeout`` holds for a plugin that holds the GIL
or swallows its cancellation, and no plugin process outlives ``stoq`` (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import Done, StoqRunner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# Catastrophic backtracking for about 25 s here: far past --timeout, yet a run of the old code
# ends (and fails) rather than hanging for hours.
GIL_N = "29"


@pytest.fixture
def hostile_stoq(stoq: StoqRunner, hostile_site: Path) -> StoqRunner:
    """``stoq`` that also finds the hostile plugins."""
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(hostile_site), stoq.env["PYTHONPATH"]])
    return stoq


def run(stoq: StoqRunner, *args: str) -> tuple[Done, int, list[int]]:
    """Run ``stoq *args``: what it did, its process id, and the plugin processes it left
    running when it exited."""
    process = subprocess.Popen(
        stoq.command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=stoq.env,
        cwd=stoq.cwd,
    )
    out, err = process.communicate(timeout=300)
    done = Done(process.returncode, out.decode(), err.decode())
    return done, process.pid, _plugin_processes_of(process.pid)


def _plugin_processes_of(parent: int) -> list[int]:
    """Live plugin processes started by ``parent`` (their command line names it), after a
    generous wait for any that are on their way out."""
    give_up = time.monotonic() + 60
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"stoq_core._isolation_child" in b" ".join(argv) and state != "Z":
                if argv[-2:] == [str(parent).encode(), b""]:
                    found.append(int(proc.name))
        if not found or time.monotonic() > give_up:
            return found
        time.sleep(0.1)


def test_timeout_stops_an_isolated_plugin_holding_the_gil(
    hostile_stoq: StoqRunner, sample: Path
) -> None:
    done, _, left = run(
        hostile_stoq,
        "scan", str(sample), "-s", "hostile,hostile2", "--timeout", "2",
        "--plugin-opts", "hostile:isolate=true", "hostile:mode=gil", f"hostile:n={GIL_N}",
    )  # fmt: skip

    assert done.code == 1, done.err
    response = done.json()
    assert response["results"][0]["workers"] == {"hostile2": {"hostile": "hostile2"}}
    assert [(e["plugin_name"], e["error"]) for e in response["errors"]] == [
        ("hostile", "scan timed out after 2 s")
    ]
    assert "Traceback" not in done.err
    assert left == []


def test_isolate_in_stoq_cfg_stops_a_plugin_that_swallows_its_cancellation(
    hostile_stoq: StoqRunner, sample: Path
) -> None:
    hostile_stoq.home.mkdir()
    (hostile_stoq.home / "stoq.cfg").write_text(
        "[hostile]\nisolate = true\nmode = swallow_cancel\nseconds = 30\n"
        "[hostile2]\nisolate = true\nmode = pid\n"
    )

    done, stoq_pid, left = run(
        hostile_stoq, "scan", str(sample), "-s", "hostile,hostile2", "--timeout", "1"
    )

    assert done.code == 1, done.err
    response = done.json()
    assert [(e["plugin_name"], e["error"]) for e in response["errors"]] == [
        ("hostile", "scan timed out after 1 s")
    ]
    assert response["results"][0]["workers"]["hostile2"]["pid"] != stoq_pid
    assert left == []


def test_a_plugin_printing_in_its_process_leaves_stdout_to_the_results(
    hostile_stoq: StoqRunner, sample: Path
) -> None:
    done, _, _ = run(
        hostile_stoq,
        "scan", str(sample), "-s", "hostile", "--plugin-opts", "hostile:isolate=true",
        "hostile:mode=print", "hostile:hooks=scan",
    )  # fmt: skip

    assert done.code == 0, done.err
    assert json.loads(done.out)["results"][0]["workers"] == {"hostile": {"hostile": "hostile"}}
    assert "HOSTILE-PRINT" in done.err and "HOSTILE-FD1" in done.err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("hostile:isolate_memory=lots", "option isolate_memory must be a size such as 512M or 2G"),
        ("hostile:isolate=perhaps", "option isolate must be true or false, not 'perhaps'"),
    ],
)
def test_a_bad_isolate_option_is_one_line_and_exit_2(
    hostile_stoq: StoqRunner, sample: Path, option: str, message: str
) -> None:
    done = hostile_stoq(
        "scan", str(sample), "-s", "hostile", "--plugin-opts", "hostile:isolate=true", option
    )

    assert done.code == 2
    assert done.out == ""
    [line] = done.err.splitlines()
    assert line.startswith("stoq: error: ") and message in line
