"""``--log-level debug`` on a scan that succeeds: plugin loading, routing and call timings.

At the default level none of it is printed (``test_a_clean_scan_writes_nothing_to_stderr``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import DIST, DIST_VERSION, StoqRunner

MS = r"\d+\.\d+ ms"


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    path = tmp_path / "parts.bin"
    path.write_bytes(b"one|two")
    return path


def debug_lines(err: str) -> list[str]:
    """The messages of stderr's debug lines, without their time stamps."""
    return [line.split("] ", 1)[1] for line in err.splitlines() if " DEBUG] " in line]


def test_debug_shows_each_plugin_loaded_with_its_distribution_version_and_time(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", "--log-level", "debug")

    assert done.code == 0, done.err
    [line] = [line for line in debug_lines(done.err) if "loaded" in line]
    assert re.fullmatch(
        rf"stoq: plugin cli_echo: loaded from distribution {DIST} {DIST_VERSION} in {MS} "
        r"\(hooks: scan\)",
        line,
    ), line


def test_debug_says_which_workers_each_payload_got_and_why(stoq: StoqRunner, parts: Path) -> None:
    done = stoq(
        "scan", str(parts), "-s", "cli_echo", "-a", "cli_carve", "--log-level", "debug",
    )  # fmt: skip

    assert done.code == 0, done.err
    routing = [line for line in debug_lines(done.err) if "round" in line]
    assert routing[0].startswith("stoq: round 1: payload ")
    assert routing[0].endswith(
        " (parts.bin) gets cli_echo (start dispatch), cli_carve (always dispatch)"
    )
    assert [line.split(" gets ")[1] for line in routing[1:]] == ["cli_carve (always dispatch)"] * 2
    assert "(part0)" in routing[1] and "(part1)" in routing[2]


def test_debug_names_the_dispatcher_that_picked_a_worker(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-R", "cli_dispatch", "--log-level", "debug")

    assert done.code == 0, done.err
    assert any(
        line.endswith("(sample.bin) gets cli_echo (dispatcher cli_dispatch)")
        for line in debug_lines(done.err)
    ), done.err


def test_debug_says_a_worker_ran_first_for_another_that_requires_it(
    stoq: StoqRunner, parts: Path
) -> None:
    done = stoq(
        "scan", str(parts), "-s", "cli_echo", "--log-level", "debug",
        "--plugin-opts", "cli_echo:required_workers=cli_carve",
    )  # fmt: skip

    assert done.code == 0, done.err
    routing = [line.split(" gets ")[1] for line in debug_lines(done.err) if " gets " in line]
    assert routing == [
        "cli_carve (required_workers of cli_echo)",
        "cli_echo (its required_workers ran first)",
    ]


def test_debug_says_when_a_payload_gets_no_worker(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "--log-level", "debug")

    assert done.code == 0
    assert any(
        line.startswith("stoq: round 1: payload ") and "(sample.bin) gets no worker" in line
        for line in debug_lines(done.err)
    ), done.err


def test_debug_times_each_plugin_call(stoq: StoqRunner, parts: Path) -> None:
    done = stoq("scan", str(parts), "-a", "cli_carve", "-D", "cli_tag", "--log-level", "debug")

    assert done.code == 0, done.err
    calls = [line for line in debug_lines(done.err) if " took " in line]
    scans = [line for line in calls if line.startswith("stoq: plugin cli_carve: scan of payload ")]
    assert len(scans) == 3
    assert all(re.search(rf" took {MS}$", line) for line in scans)
    assert any(line.startswith("stoq: plugin cli_tag: decorate of scan ") for line in calls)


def test_debug_says_how_long_a_failing_call_ran(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_fail", "--log-level", "debug")

    assert done.code == 1
    assert any(
        re.fullmatch(
            rf"stoq: plugin cli_fail: scan of payload \w{{8}} \(sample.bin\) raised "
            rf"RuntimeError after {MS}",
            line,
        )
        for line in debug_lines(done.err)
    ), done.err


def test_debug_on_run_shows_the_provider_and_each_payloads_route(stoq: StoqRunner) -> None:
    done = stoq(
        "run", "-P", "cli_burst", "-a", "cli_echo", "--plugin-opts", "cli_burst:count=2",
        "--log-level", "debug",
    )  # fmt: skip

    assert done.code == 0, done.err
    lines = debug_lines(done.err)
    assert "stoq: provider cli_burst: ingesting" in lines
    routed = [line for line in lines if line.endswith(" gets cli_echo (always dispatch)")]
    assert len(routed) == 2
    assert any(re.fullmatch(rf"stoq: plugin cli_burst: ingest took {MS}", line) for line in lines)


def test_info_level_logs_no_routing_or_timing(stoq: StoqRunner, parts: Path) -> None:
    done = stoq("scan", str(parts), "-s", "cli_echo", "-a", "cli_carve", "--log-level", "info")

    assert (done.code, done.err) == (0, "")
