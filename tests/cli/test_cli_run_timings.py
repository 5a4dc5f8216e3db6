"""``stoq run --timings`` (issue 16): each response's plugin call times on stderr as it is
printed, in ``stoq scan --timings``'s table, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_support import StoqRunner, run_on_terminal


def _tables(err: str) -> dict[str, list[list[str]]]:
    """stderr's timing tables: each header's label -> the words of its call lines (not totals)."""
    tables: dict[str, list[list[str]]] = {}
    calls: list[list[str]] = []
    for line in err.splitlines():
        if line.startswith("stoq: timings of "):
            label, _, _ = line[len("stoq: timings of ") :].rpartition(": ")
            calls = tables.setdefault(label, [])
        elif line.startswith("  ") and line.split()[1] != "total":
            calls.append(line.split())
    return tables


def _without_ids(response: dict[str, Any]) -> str:
    """A response's JSON without what differs from one scan of the same payload to the next."""
    response = dict(response, scan_id=None, time=None)
    response["results"] = [dict(result, payload_id=None) for result in response["results"]]
    return json.dumps(response, sort_keys=True)


def test_run_timings_print_a_table_per_response_labelled_by_file_name(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.txt").write_text("alpha")
    (source / "b.txt").write_text("beta")

    done = stoq(
        "run", "-P", "filedir", "-s", "cli_echo", "-a", "cli_carve", "--timings",
        "--plugin-opts", f"filedir:source_dir={source}",
    )  # fmt: skip

    assert done.code == 0, done.err
    responses = done.lines()  # stdout is JSON lines only, as without --timings
    assert len(responses) == 2
    tables = _tables(done.err)
    assert set(tables) == {"a.txt", "b.txt"}
    for response in responses:
        [result] = response["results"]
        calls = tables[result["payload_meta"]["extra_data"]["filename"]]
        # plugin, hook, time, "ms", payload id, file name
        assert sorted((call[0], call[1]) for call in calls) == [
            ("cli_carve", "scan"),
            ("cli_echo", "scan"),
        ]
        assert {call[4] for call in calls} == {result["payload_id"][:8]}


def test_run_timings_leave_stdout_as_it_is_without_them(stoq: StoqRunner) -> None:
    args = ("run", "-P", "cli_burst", "-s", "cli_echo", "--plugin-opts", "cli_burst:count=3")

    timed = stoq(*args, "--timings")
    plain = stoq(*args)

    assert (timed.code, plain.code) == (0, 0), timed.err
    assert "timings" not in timed.out
    assert sorted(map(_without_ids, timed.lines())) == sorted(map(_without_ids, plain.lines()))
    assert plain.err == ""


def test_run_timings_label_a_payload_with_no_file_name_by_its_id(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "-s", "cli_echo", "--timings")

    assert done.code == 0, done.err
    ids = {response["results"][0]["payload_id"] for response in done.lines()}
    assert len(ids) == 3
    tables = _tables(done.err)
    assert set(tables) == ids
    for payload_id, calls in tables.items():
        assert [(call[0], call[1], call[4]) for call in calls] == [
            ("cli_echo", "scan", payload_id[:8])
        ]


def test_run_timings_go_above_the_status_line_on_a_terminal(stoq: StoqRunner) -> None:
    code, terminal, _ = run_on_terminal(
        stoq, "run", "-P", "cli_burst", "-s", "cli_echo", "--timings", stream="stderr"
    )

    assert code == 0
    assert terminal.count(b"stoq: timings of ") == 3
    assert terminal.count(b"  cli_echo  scan ") == 3


def test_run_timings_with_jobs_is_one_line_and_exit_2(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "-s", "cli_echo", "--timings", "--jobs", "2")

    assert (done.code, done.out) == (2, "")
    assert done.err.splitlines() == [
        "stoq: error: --timings cannot be combined with --jobs: run in one process"
    ]


def test_run_timings_with_consumers_is_one_line_and_exit_2(stoq: StoqRunner) -> None:
    done = stoq("run", "-P", "cli_burst", "-s", "cli_echo", "--timings", "--consumers", "2")

    assert (done.code, done.out) == (2, "")
    [line] = done.err.splitlines()
    assert line.startswith("stoq: error: --timings cannot be combined with --consumers: ")
