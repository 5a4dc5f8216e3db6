"""``stoq run --metrics-port``, ``--trace`` and ``stoq scan --timings`` (issue 16), run as a user
runs them: the metrics endpoint is scraped over loopback and parsed with Prometheus's parser."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import StoqRunner

prometheus_client = pytest.importorskip("prometheus_client")

from metrics_support import free_port, scrape  # noqa: E402


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _scrape_until(port: int, key: tuple[str, Any], value: float) -> dict[Any, float]:
    """The samples once ``key`` reads ``value`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(port)
        if samples.get(key) == value:
            return samples
        assert time.monotonic() < deadline, samples
        time.sleep(0.05)


def test_run_serves_prometheus_metrics_while_it_runs(stoq: StoqRunner, tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "queued"
    child = subprocess.Popen(
        stoq.command(
            "run", "-P", "cli_endless", "-a", "cli_echo,cli_fail", "--metrics-port", str(port),
            "--plugin-opts", f"cli_endless:marker={marker}", "--plugin-opts", "cli_endless:count=3",
        ),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.env, cwd=stoq.cwd,
    )  # fmt: skip
    try:
        _wait_for(marker)
        samples = _scrape_until(port, ("stoq_requests_total", ()), 3)
    finally:
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)

    assert child.returncode == 130, err
    assert len(out.splitlines()) == 3
    assert samples[("stoq_payloads_total", ())] == 3
    assert samples[("stoq_requests_with_errors_total", ())] == 3
    echo = (("hook", "scan"), ("plugin", "cli_echo"))
    assert samples[("stoq_plugin_calls_total", echo)] == 3
    assert samples[("stoq_plugin_call_duration_seconds_count", echo)] == 3
    assert samples[("stoq_plugin_errors_total", (("plugin", "cli_fail"),))] == 3
    assert (
        samples[("stoq_plugin_calls_total", (("hook", "ingest"), ("plugin", "cli_endless")))] == 0
    )
    assert samples[("stoq_run_ingested_total", ())] == 3
    assert samples[("stoq_run_queue_depth", ())] == 0
    assert samples[("stoq_run_consumers", ())] == 2  # provider_consumers' default
    assert samples[("stoq_run_in_flight", ())] == 0


def test_run_with_jobs_serves_the_workers_plugin_calls(stoq: StoqRunner, tmp_path: Path) -> None:
    # The plugins run in two worker processes; this one serves what they count.
    port = free_port()
    marker = tmp_path / "queued"
    child = subprocess.Popen(
        stoq.command(
            "run", "-P", "cli_endless", "-a", "cli_echo,cli_fail", "--metrics-port", str(port),
            "--jobs", "2",
            "--plugin-opts", f"cli_endless:marker={marker}", "--plugin-opts", "cli_endless:count=4",
        ),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.env, cwd=stoq.cwd,
    )  # fmt: skip
    echo = (("hook", "scan"), ("plugin", "cli_echo"))
    try:
        _wait_for(marker)  # each worker sends its counts once a second
        samples = _scrape_until(port, ("stoq_plugin_calls_total", echo), 4)
    finally:
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)

    assert child.returncode == 130, err
    assert len(out.splitlines()) == 4
    assert samples[("stoq_requests_total", ())] == 4
    assert samples[("stoq_plugin_call_duration_seconds_count", echo)] == 4
    fail = (("hook", "scan"), ("plugin", "cli_fail"))
    assert samples[("stoq_plugin_calls_total", fail)] == 4
    assert samples[("stoq_plugin_errors_total", (("plugin", "cli_fail"),))] == 4


def test_run_reads_the_metrics_port_from_stoq_cfg(stoq: StoqRunner, home: Path) -> None:
    port = free_port()
    home.mkdir()
    (home / "stoq.cfg").write_text(f"[core]\nmetrics_port = {port}\nmetrics_host = 127.0.0.1\n")
    with socket.socket() as taken:  # the port is busy: the error proves stoq.cfg was read
        taken.bind(("127.0.0.1", port))
        taken.listen()

        done = stoq("run", "-P", "cli_burst", "-a", "cli_echo")

    assert done.code == 2
    assert done.err.strip().splitlines() == [
        f"stoq: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use "
        "(choose another metrics_port / --metrics-port)"
    ]


def test_scan_never_serves_stoq_cfgs_metrics_port(stoq: StoqRunner, home: Path) -> None:
    port = free_port()
    home.mkdir()
    (home / "stoq.cfg").write_text(f"[core]\nmetrics_port = {port}\n")
    with socket.socket() as taken:  # a running service holds it: a one-off scan must still work
        taken.bind(("127.0.0.1", port))
        taken.listen()
        (stoq.cwd / "a.txt").write_text("hello")

        done = stoq("scan", "a.txt", "-a", "cli_echo")

    assert done.code == 0, done.err


def test_metrics_port_with_consumers_is_one_clear_error(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "--consumers", "2", "--metrics-port", "9999")

    assert done.code == 2
    assert done.err.strip().splitlines() == [
        "stoq: error: --metrics-port cannot be used with --consumers: one port cannot serve "
        "the metrics of several processes"
    ]


def test_scan_timings_print_each_call_and_each_plugins_total_on_stderr(
    stoq: StoqRunner,
) -> None:
    (stoq.cwd / "parts.bin").write_bytes(b"a|b")

    done = stoq("scan", "parts.bin", "-a", "cli_echo,cli_carve", "--timings", "-f", "json")

    assert done.code == 0, done.err
    response = done.json()  # stdout is the response, as without --timings
    assert "timings" not in done.out
    lines = done.err.splitlines()
    assert lines[0].startswith("stoq: timings of parts.bin: 6 plugin call(s), ")
    calls = [line.split() for line in lines[1:] if "total" not in line.split()[:2]]
    assert len(calls) == 6
    ids = {result["payload_id"][:8] for result in response["results"]}
    assert {call[4] for call in calls} == ids  # plugin, hook, time, "ms", payload id, file name
    assert {(call[0], call[1]) for call in calls} == {("cli_echo", "scan"), ("cli_carve", "scan")}
    assert {call[5] for call in calls} == {"parts.bin", "part0", "part1"}
    totals = {line.split()[0]: line.split() for line in lines[1:] if line.split()[1] == "total"}
    assert set(totals) == {"cli_echo", "cli_carve"}
    assert totals["cli_echo"][-2:] == ["3", "call(s)"]


def test_scan_timings_name_what_a_failed_call_raised(stoq: StoqRunner) -> None:
    (stoq.cwd / "a.txt").write_text("x")

    done = stoq("scan", "a.txt", "-a", "cli_fail", "--timings", "-f", "json")

    assert done.code == 1
    [call] = [line for line in done.err.splitlines() if line.startswith("  cli_fail  scan")]
    assert call.endswith("a.txt  RuntimeError")


def test_scan_without_timings_prints_none(stoq: StoqRunner) -> None:
    (stoq.cwd / "a.txt").write_text("x")

    done = stoq("scan", "a.txt", "-a", "cli_echo", "-f", "json")

    assert (done.code, done.err) == (0, "")


def test_trace_without_the_opentelemetry_api_is_one_clear_error(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    # A package of that name that is not the API: importing its trace module fails, as it
    # would with the API absent.
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    stoq.env["PYTHONPATH"] = f"{shadow.parent}:{stoq.env['PYTHONPATH']}"
    (stoq.cwd / "a.txt").write_text("x")

    done = stoq("scan", "a.txt", "-a", "cli_echo", "--trace")

    assert done.code == 2
    assert done.err.strip().splitlines() == [
        "stoq: error: tracing needs the OpenTelemetry API: pip install 'stoq-core[otel]' "
        "(or turn tracing off)"
    ]


def test_trace_with_the_api_but_no_sdk_scans_as_usual(stoq: StoqRunner) -> None:
    pytest.importorskip("opentelemetry.trace")
    (stoq.cwd / "a.txt").write_text("x")

    done = stoq("scan", "a.txt", "-a", "cli_echo", "--trace", "-f", "json")

    assert done.code == 0, done.err
    assert json.loads(done.out)["results"][0]["workers"]["cli_echo"]["size"] == 1
