"""``--jobs N``: ``stoq scan`` and ``stoq run`` share the scans out to N worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import StoqRunner

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

JOBS_PLUGINS = {
    "cli_jobs_pid": "cli_jobs_fakes:Pid",
    "cli_jobs_exit": "cli_jobs_fakes:ExitOn",
    "cli_jobs_scribble": "cli_jobs_fakes:Scribble",
    "cli_jobs_fork": "cli_jobs_fakes:ForkThenExit",
    "cli_jobs_atexit": "cli_jobs_fakes:AtExit",
}


@pytest.fixture
def stoq(stoq: StoqRunner, install_plugins: Callable[..., Path]) -> StoqRunner:
    """The CLI runner, with this module's fake workers installed too."""
    site = install_plugins(JOBS_PLUGINS, dist="stoq-plugin-clijobs")
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), stoq.env["PYTHONPATH"]])
    return stoq


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A directory of 40 small files, ``f00.bin`` ... ``f39.bin``, each holding its own name."""
    directory = tmp_path / "samples"
    directory.mkdir()
    for index in range(40):
        (directory / f"f{index:02d}.bin").write_text(f"f{index:02d}.bin")
    return directory


def _start(stoq: StoqRunner, *args: str) -> subprocess.Popen[bytes]:
    """``stoq ARGS`` in the background, in a process group of its own (as a shell runs it)."""
    return subprocess.Popen(
        stoq.command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=stoq.env,
        cwd=stoq.cwd,
        start_new_session=True,
    )


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _group(pgid: int) -> list[str]:
    """The live (not zombie) processes of process group ``pgid``: pid and command line."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{stat.parent.name}: {command}")
    return found


def _no_process_left(pgid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _group(pgid):
        assert time.monotonic() < deadline, f"left running: {_group(pgid)}"
        time.sleep(0.05)


def _comparable(response: dict[str, Any]) -> str:
    """A response without what differs from one scan to the next (ids, time, pids)."""
    response = dict(response)
    del response["scan_id"], response["time"]
    results = []
    for result in response["results"]:
        result = dict(result, payload_id=None)
        result["workers"] = {
            name: {key: value for key, value in found.items() if key not in ("pid", "ppid")}
            for name, found in result["workers"].items()
        }
        results.append(result)
    response["results"] = results
    return json.dumps(response, sort_keys=True)


# -- stoq scan -------------------------------------------------------------------------------


def test_scan_with_jobs_gives_the_responses_of_one_process(stoq: StoqRunner, samples: Path) -> None:
    one = stoq("scan", str(samples), "-a", "cli_jobs_pid,cli_echo")
    two = stoq("scan", str(samples), "-a", "cli_jobs_pid,cli_echo", "--jobs", "2")

    assert (one.code, two.code) == (0, 0), two.err
    assert len(two.lines()) == 40
    assert sorted(map(_comparable, two.lines())) == sorted(map(_comparable, one.lines()))


def test_scan_with_jobs_scans_each_file_once_in_worker_processes(
    stoq: StoqRunner, samples: Path
) -> None:
    process = _start(stoq, "scan", str(samples), "-a", "cli_jobs_pid", "--jobs", "2")
    out, err = process.communicate(timeout=120)

    assert process.returncode == 0, err.decode()
    found = [json.loads(line)["results"][0]["workers"]["cli_jobs_pid"] for line in out.splitlines()]
    assert sorted(item["text"] for item in found) == [f"f{i:02d}.bin" for i in range(40)]
    pids = {item["pid"] for item in found}
    assert len(pids) == 2 and process.pid not in pids
    # Forked from stoq itself, before it has an engine, a loop or a thread: no fork server to
    # start and import the engine first.
    assert {item["ppid"] for item in found} == {process.pid}


@pytest.mark.parametrize("fmt", ["jsonl", "summary"])
def test_scan_with_jobs_prints_every_format(stoq: StoqRunner, samples: Path, fmt: str) -> None:
    done = stoq("scan", str(samples), "-a", "cli_echo", "--jobs", "2", "--format", fmt)

    assert done.code == 0, done.err
    lines = done.out.splitlines()
    if fmt == "jsonl":
        assert sorted(json.loads(line)["results"][0]["payload_meta"]["extra_data"]["filename"]
                      for line in lines) == [f"f{i:02d}.bin" for i in range(40)]  # fmt: skip
    else:
        assert len(lines) == 41 and lines[-1].startswith("scanned 40 files, 40 payloads, no errors")


def test_a_failing_plugins_error_comes_back_from_the_worker_and_exits_1(
    stoq: StoqRunner, samples: Path
) -> None:
    process = _start(stoq, "scan", str(samples), "-a", "cli_fail,cli_jobs_pid", "--jobs", "2")
    out, err = process.communicate(timeout=120)

    assert process.returncode == 1, err.decode()
    responses = [json.loads(line) for line in out.splitlines()]
    assert len(responses) == 40
    for response in responses:
        [error] = response["errors"]
        assert error["plugin_name"] == "cli_fail"
        assert error["error"].endswith("RuntimeError: the fake worker always fails")
        assert response["results"][0]["workers"]["cli_jobs_pid"]["pid"] != process.pid


def _only_f07_lost(responses: list[Any], why: str, plugin: str) -> None:
    """Each of the 40 samples has one response; f07.bin's holds an Error saying ``why`` and no
    results, every other file was scanned by ``plugin``."""
    assert len(responses) == 40  # each file once: none lost, none twice
    lost = [r for r in responses if not r["results"]]
    assert len(lost) == 1
    [error] = lost[0]["errors"]
    assert "f07.bin was not scanned" in error["error"] and why in error["error"]
    scanned = sorted(r["results"][0]["payload_meta"]["extra_data"]["filename"]
                     for r in responses if r["results"])  # fmt: skip
    assert scanned == [f"f{i:02d}.bin" for i in range(40) if i != 7]
    assert all(
        r["results"][0]["workers"] == {plugin: {"ok": True}} for r in responses if r["results"]
    )


def test_a_worker_that_dies_is_reported_and_the_other_files_are_scanned(
    stoq: StoqRunner, samples: Path
) -> None:
    done = stoq(
        "scan", str(samples), "-a", "cli_jobs_exit", "--jobs", "2",
        "--plugin-opts", "cli_jobs_exit:on=f07.bin",
    )  # fmt: skip

    assert done.code == 1
    _only_f07_lost(done.lines(), "exited with code 3", "cli_jobs_exit")
    assert "exited with code 3 while scanning" in done.err and "f07.bin" in done.err
    assert "Traceback" not in done.err


def test_long_paths_and_large_responses_never_block_the_parent(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    # Batches of long paths larger than a pipe, while each worker writes more response than its
    # result pipe holds: a send that waited for a worker, whose writes waited for this process,
    # would hang both for ever.
    directory = str(tmp_path / "long")
    os.mkdir(directory)
    for level in range(14):  # a path of about 3,600 characters: under PATH_MAX
        directory = os.path.join(directory, f"{level:02d}" + "x" * 250)
        os.mkdir(directory)
    text = "y" * 50_000  # each response carries it back (cli_jobs_pid reports the text)
    for index in range(200):
        Path(directory, f"f{index:03d}").write_text(text)

    done = stoq("scan", str(tmp_path / "long"), "-a", "cli_jobs_pid", "--jobs", "2", timeout=120)

    assert done.code == 0, done.err[-2000:]
    found = [r["results"][0] for r in done.lines()]
    assert sorted(r["payload_meta"]["extra_data"]["filename"] for r in found) == [
        f"f{index:03d}" for index in range(200)
    ]
    assert all(r["workers"]["cli_jobs_pid"]["text"] == text for r in found)
    assert len({r["workers"]["cli_jobs_pid"]["pid"] for r in found}) == 2


def test_a_plugin_writing_to_descriptors_not_its_own_costs_its_file_only(
    stoq: StoqRunner, samples: Path
) -> None:
    # It writes junk into the worker's result pipe, and into stoq's own stdout if the worker
    # still held it: the worker is stopped, its file reported, every other file scanned once.
    done = stoq(
        "scan", str(samples), "-a", "cli_jobs_scribble", "--jobs", "2",
        "--plugin-opts", "cli_jobs_scribble:on=f07.bin",
    )  # fmt: skip

    assert done.code == 1, done.err
    # Every line is a response: nothing but them reached stdout.
    _only_f07_lost(done.lines(), "wrote output that is not stoq's", "cli_jobs_scribble")
    assert "Traceback" not in done.err


def _run_lost(responses: list[Any], count: int, why: str) -> list[Any]:
    """Each of ``count`` queued payloads has one response; those not scanned say ``why``."""
    assert len(responses) == count
    lost = [r for r in responses if not r["results"]]
    assert all(why in r["errors"][-1]["error"] for r in lost)
    assert sum(bool(r["results"]) for r in responses) == count - len(lost)
    return lost


def test_run_survives_a_plugin_writing_to_descriptors_not_its_own(stoq: StoqRunner) -> None:
    done = stoq(
        "run", "-P", "cli_burst", "-a", "cli_jobs_scribble", "--jobs", "2",
        "--plugin-opts", "cli_burst:count=40", "cli_jobs_scribble:on=payload 5",
    )  # fmt: skip

    assert done.code == 1, done.err
    lost = _run_lost(done.lines(), 40, "wrote output that is not stoq's")
    # Which request's plugin wrote there the output cannot tell: every one the worker was
    # scanning then or answered since is reported (a few; at most the 18 a worker holds), the
    # requests it held and had not begun go to another worker, and it never writes there again.
    assert 1 <= len(lost) <= 18
    assert "Traceback" not in done.err


@pytest.mark.parametrize("command", ["scan", "run"])
def test_a_dead_worker_is_noticed_while_a_child_of_its_plugin_holds_its_pipe(
    stoq: StoqRunner, samples: Path, tmp_path: Path, command: str
) -> None:
    # The child holds the worker's result pipe open for a minute: waiting for the pipe's end
    # would wait that long; the worker's own end is what counts. stdout and stderr must end
    # with stoq too: multiprocessing's helper processes hold them and would live on while the
    # child held the pipes that keep them alive.
    marker = tmp_path / "child.pid"
    opts = ["--plugin-opts", "cli_jobs_fork:on=f07.bin", f"cli_jobs_fork:marker={marker}"]
    if command == "scan":
        args = ["scan", str(samples), "-a", "cli_jobs_fork", "--jobs", "2", *opts]
    else:
        args = ["run", "-P", "filedir", "-a", "cli_jobs_fork", "--jobs", "2", *opts,
                f"filedir:source_dir={samples}"]  # fmt: skip
    process = _start(stoq, *args)
    try:
        out, err = (stream.decode() for stream in process.communicate(timeout=40))
        code = process.returncode
    finally:
        process.kill()
        if marker.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(marker.read_text()), signal.SIGKILL)

    assert code == 1, err
    responses = [json.loads(line) for line in out.splitlines()]
    _only_f07_lost(responses, "exited with code 3", "cli_jobs_fork")


@pytest.mark.parametrize("command", ["scan", "run"])
def test_plugins_exit_handlers_run_once_in_each_worker(
    stoq: StoqRunner, samples: Path, tmp_path: Path, command: str
) -> None:
    marker = tmp_path / "exited"
    args = ["-a", "cli_jobs_atexit", "--plugin-opts", f"cli_jobs_atexit:marker={marker}"]
    if command == "scan":
        done = stoq("scan", str(samples), "--jobs", "2", *args)
    else:
        done = stoq("run", "-P", "filedir", "--jobs", "2", *args,
                    "--plugin-opts", f"filedir:source_dir={samples}")  # fmt: skip

    assert done.code == 0, done.err
    responses = done.lines()
    workers = {r["results"][0]["workers"]["cli_jobs_atexit"]["pid"] for r in responses}
    assert len(responses) == 40
    # Each process that made the plugin wrote out once, at its end: the workers, and stoq itself
    # (it loads its own engine to check the options).
    exited = [int(pid) for pid in marker.read_text().split()]
    assert sorted(exited) == sorted(set(exited)) and len(exited) <= 3
    assert workers <= set(exited)


def test_ctrl_c_stops_a_scan_with_jobs_and_leaves_no_process(
    stoq: StoqRunner, samples: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "scanning"
    process = _start(
        stoq, "scan", str(samples), "-a", "cli_slow", "--jobs", "2",
        "--plugin-opts", "cli_slow:seconds=30", f"cli_slow:marker={marker}",
    )  # fmt: skip
    try:
        _wait_for(marker)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130
    assert err.decode().strip().endswith("stoq: interrupted")
    assert "Traceback" not in err.decode()
    _no_process_left(process.pid)


def test_jobs_refuses_stdin_among_other_inputs(stoq: StoqRunner, samples: Path) -> None:
    done = stoq("scan", "-", str(samples), "--jobs", "2", stdin=b"data")

    assert done.code == 2
    assert done.err.startswith("stoq: error: --jobs shares files out to worker processes")


def test_jobs_scans_a_single_input_in_this_process(stoq: StoqRunner) -> None:
    done = stoq("scan", "-", "-a", "cli_echo", "--jobs", "2", stdin=b"data")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["cli_echo"]["size"] == 4


@pytest.mark.parametrize("value", ["0", "auto"])
def test_jobs_0_and_auto_mean_one_per_cpu(stoq: StoqRunner, samples: Path, value: str) -> None:
    done = stoq("scan", str(samples), "-a", "cli_echo", "--jobs", value)

    assert (done.code, len(done.lines())) == (0, 40), done.err


@pytest.mark.parametrize("value", ["-1", "many"])
def test_a_bad_jobs_value_is_one_line(stoq: StoqRunner, samples: Path, value: str) -> None:
    done = stoq("scan", str(samples), "--jobs", value)

    assert done.code == 2
    assert done.err.startswith("stoq: error: Invalid value for '-j' / '--jobs'")
    assert len(done.err.splitlines()) == 1


# -- stoq run --------------------------------------------------------------------------------


def test_run_with_jobs_scans_each_queued_payload_once_in_workers(stoq: StoqRunner) -> None:
    process = _start(
        stoq, "run", "-P", "cli_burst", "-a", "cli_jobs_pid", "--jobs", "2",
        "--plugin-opts", "cli_burst:count=30",
    )  # fmt: skip
    out, err = process.communicate(timeout=120)

    assert process.returncode == 0, err.decode()
    found = [json.loads(line)["results"][0]["workers"]["cli_jobs_pid"] for line in out.splitlines()]
    assert sorted(item["text"] for item in found) == sorted(f"payload {i}" for i in range(30))
    assert process.pid not in {item["pid"] for item in found}


def test_run_with_jobs_reports_a_dead_worker_and_goes_on(stoq: StoqRunner) -> None:
    done = stoq(
        "run", "-P", "cli_burst", "-a", "cli_jobs_exit", "--jobs", "2",
        "--plugin-opts", "cli_burst:count=60", "cli_jobs_exit:on=payload 5",
    )  # fmt: skip

    assert done.code == 1
    lost = _run_lost(done.lines(), 60, "exited with code 3")
    # Each worker holds up to 16 requests (it never waits for stoq between two) and scans 2
    # at once: what it was scanning when it died is reported (payload 5, and maybe the one
    # beside it); what it only held is scanned by another worker.
    assert 1 <= len(lost) <= 2


def test_ctrl_c_drains_a_run_with_jobs_and_leaves_no_process(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "queued"
    process = _start(
        stoq, "run", "-P", "cli_endless", "-a", "cli_jobs_pid", "--jobs", "2",
        "--plugin-opts", "cli_endless:count=4", f"cli_endless:marker={marker}",
    )  # fmt: skip
    try:
        _wait_for(marker)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err.decode()
    texts = sorted(json.loads(line)["results"][0]["workers"]["cli_jobs_pid"]["text"]
                   for line in out.splitlines())  # fmt: skip
    assert texts == [f"endless {i}" for i in range(4)]  # what was queued was scanned
    assert "Traceback" not in err.decode()
    _no_process_left(process.pid)


def test_a_second_ctrl_c_kills_the_workers_of_a_run(stoq: StoqRunner, tmp_path: Path) -> None:
    marker = tmp_path / "scanning"
    process = _start(
        stoq, "run", "-P", "cli_burst", "-a", "cli_slow", "--jobs", "2",
        "--plugin-opts", "cli_slow:seconds=60", f"cli_slow:marker={marker}",
    )  # fmt: skip
    try:
        _wait_for(marker)
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130
    assert "stoq: aborted" in err.decode()
    assert "Traceback" not in err.decode()
    _no_process_left(process.pid)


def test_more_jobs_than_the_machine_can_use_are_lowered_with_a_warning(
    stoq: StoqRunner, samples: Path
) -> None:
    # A mistyped --jobs 100000 started processes until the OOM killer stepped in.
    from stoq_cli._params import PROCESSES_PER_CPU, usable_cpus

    limit = PROCESSES_PER_CPU * usable_cpus()
    done = stoq("scan", str(samples), "-a", "cli_jobs_pid", "--jobs", "100000")

    assert done.code == 0, done.err
    assert done.err.splitlines() == [
        f"stoq: --jobs 100000 is more than {PROCESSES_PER_CPU} processes per CPU "
        f"({usable_cpus()} here): starting {limit}"
    ]
    pids = {r["results"][0]["workers"]["cli_jobs_pid"]["pid"] for r in done.lines()}
    assert len(done.lines()) == 40 and 1 < len(pids) <= limit


def test_more_consumers_than_the_machine_can_use_are_lowered_too(stoq: StoqRunner) -> None:
    done = stoq("run", "--consumers", "100000", "--jobs", "2")

    assert done.code == 2
    warning, error = done.err.splitlines()
    assert warning.startswith("stoq: --consumers 100000 is more than") and "starting" in warning
    assert "--consumers and --jobs cannot be combined" in error


def test_jobs_and_consumers_cannot_be_combined(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "--jobs", "2", "--consumers", "2")

    assert done.code == 2
    assert done.err.startswith("stoq: error: --consumers and --jobs cannot be combined")
