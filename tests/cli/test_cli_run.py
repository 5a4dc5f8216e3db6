"""``stoq run``: providers feed the scans until they finish, or until Ctrl-C drains them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from cli_support import StoqRunner


def _start(stoq: StoqRunner, *args: str) -> subprocess.Popen[bytes]:
    """``stoq ARGS`` running in the background, its output piped, for tests that signal it."""
    return subprocess.Popen(
        stoq.command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=stoq.env,
        cwd=stoq.cwd,
    )


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_run_scans_everything_the_provider_queues_and_ends_with_it(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "-a", "cli_echo", "--plugin-opts", "cli_burst:count=4")

    assert done.code == 0, done.err
    sizes = sorted(r["results"][0]["workers"]["cli_echo"]["size"] for r in done.lines())
    assert sizes == [len(b"payload 0")] * 4


def test_run_records_the_request_meta_on_every_response(stoq: StoqRunner) -> None:
    done = stoq(
        "run", "-P", "cli_burst", "-a", "cli_echo",
        "--request-source", "feed", "--request-extra", "batch=7",
    )  # fmt: skip

    assert done.code == 0, done.err
    metas = [r["request_meta"] for r in done.lines()]
    assert metas == [{"archive_payloads": True, "source": "feed", "extra_data": {"batch": "7"}}] * 3


def test_run_with_a_connector_saves_instead_of_printing(stoq: StoqRunner, tmp_path: Path) -> None:
    results = tmp_path / "results"

    done = stoq(
        "run", "-P", "cli_burst", "-a", "cli_echo", "-C", "cli_sink",
        "--plugin-opts", f"cli_sink:results_dir={results}",
    )  # fmt: skip

    assert (done.code, done.out) == (0, ""), done.err
    assert len(list(results.iterdir())) == 3


def test_run_exits_1_when_a_scan_fails(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "-a", "cli_fail")

    assert done.code == 1
    assert all(r["errors"][0]["plugin_name"] == "cli_fail" for r in done.lines())


def test_a_failing_provider_is_logged_and_exits_1_after_its_payloads(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_badprovider", "-a", "cli_echo")

    assert done.code == 1
    assert [r["results"][0]["size"] for r in done.lines()] == [len(b"before the failure")]
    assert "the fake source went away" in done.err
    assert "Traceback" not in done.err


def test_run_takes_its_providers_from_stoq_cfg(stoq: StoqRunner) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[core]\nproviders = cli_burst\n\n[cli_burst]\ncount = 2\n")

    done = stoq("run", "-a", "cli_echo")

    assert done.code == 0, done.err
    assert len(done.lines()) == 2


def test_run_without_a_provider_is_a_usage_error(stoq: StoqRunner) -> None:
    done = stoq("run", "-a", "cli_echo")

    assert done.code == 2
    assert done.err.startswith("stoq: error: no provider plugins are loaded")
    assert len(done.err.splitlines()) == 1


def test_ctrl_c_stops_the_providers_and_drains_what_was_queued(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "queued"
    process = _start(
        stoq,
        "run", "-P", "cli_endless", "-a", "cli_slow",
        "--plugin-opts", f"cli_endless:marker={marker}", "cli_endless:count=4",
        "cli_slow:seconds=0.3",
    )  # fmt: skip
    try:
        _wait_for(marker)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 130, err
    responses = [json.loads(line) for line in out.decode().splitlines()]
    # All four were queued before the Ctrl-C; each was scanned to the end.
    assert len(responses) == 4
    assert all(r["results"][0]["workers"]["cli_slow"] == {"slept": 0.3} for r in responses)
    assert "stoq: stopping" in err.decode()
    assert "stopped by SIGINT: ingested 4, scanned 4, 0 with errors" in err.decode()


def test_a_second_ctrl_c_aborts_the_scans_in_flight(stoq: StoqRunner, tmp_path: Path) -> None:
    marker = tmp_path / "queued"
    process = _start(
        stoq,
        "run", "-P", "cli_endless", "-a", "cli_slow",
        "--plugin-opts", f"cli_endless:marker={marker}", "cli_slow:seconds=600",
    )  # fmt: skip
    try:
        _wait_for(marker)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)  # let the first signal be handled before the second
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 130, err
    assert out == b""  # no 600-second scan finished
    assert "stoq: aborted" in err.decode()


def test_sigterm_drains_like_ctrl_c(stoq: StoqRunner, tmp_path: Path) -> None:
    marker = tmp_path / "queued"
    process = _start(
        stoq,
        "run", "-P", "cli_endless", "-a", "cli_echo",
        "--plugin-opts", f"cli_endless:marker={marker}", "cli_endless:count=2",
    )  # fmt: skip
    try:
        _wait_for(marker)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 143, err
    assert len(out.decode().splitlines()) == 2


def test_a_closed_stdout_ends_the_run_quietly(stoq: StoqRunner) -> None:
    # As in 'stoq run ... | head -1': the reader leaves after one line.
    process = _start(
        stoq,
        "run", "-P", "cli_burst", "-a", "cli_echo", "--plugin-opts", "cli_burst:count=5000"
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        process.stdout.close()
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert json.loads(first)["results"][0]["size"] == len(b"payload 0")
    assert process.returncode == 1
    assert b"Broken pipe" not in err and b"Traceback" not in err
