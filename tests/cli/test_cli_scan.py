"""``stoq scan``: what it prints, for one file, a directory, stdin, and each output format."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import click.testing
import pytest
from cli_support import StoqRunner

Invoke = Callable[..., click.testing.Result]


def test_scanning_a_file_prints_its_response_indented_with_the_base_name(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo")

    assert done.code == 0, done.err
    assert done.out.startswith('{\n    "results": [')
    root = done.json()["results"][0]
    assert root["payload_meta"]["extra_data"] == {"filename": "sample.bin"}
    assert root["workers"]["cli_echo"] == {
        "size": len(b"MZ stoq sample"), "filename": "sample.bin", "greeting": "hello"
    }  # fmt: skip


def test_a_clean_scan_writes_nothing_to_stderr(stoq: StoqRunner, sample: Path) -> None:
    # No config file exists: that is stoQ's defaults, not a warning.
    done = stoq("scan", str(sample), "-s", "cli_echo")

    assert (done.code, done.err) == (0, "")


def test_compact_prints_the_response_on_one_line(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", "--compact")

    assert done.code == 0, done.err
    assert len(done.out.splitlines()) == 1
    assert done.json()["results"][0]["workers"]["cli_echo"]["greeting"] == "hello"


def test_stoq_home_is_created_on_first_use(stoq: StoqRunner, sample: Path) -> None:
    assert not stoq.home.exists()

    done = stoq("scan", str(sample), "-s", "cli_echo")

    assert done.code == 0, done.err
    assert (stoq.home / "plugins").is_dir()


def test_a_failing_worker_is_reported_in_the_response_and_exits_1(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo,cli_fail")

    assert done.code == 1
    response = done.json()
    assert response["results"][0]["workers"]["cli_echo"]["size"] == 14
    assert [e["plugin_name"] for e in response["errors"]] == ["cli_fail"]
    assert "the fake worker always fails" in response["errors"][0]["error"]
    assert "Traceback" not in done.err


def test_a_directory_is_scanned_file_by_file_as_json_lines(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "b.txt").write_bytes(b"bb")
    (tree / "a.txt").write_bytes(b"a")
    (tree / "sub" / "c.txt").write_bytes(b"ccc")

    done = stoq("scan", str(tree), "-s", "cli_echo")

    assert done.code == 0, done.err
    responses = done.lines()
    assert [r["results"][0]["workers"]["cli_echo"]["size"] for r in responses] == [1, 2, 3]
    assert [r["results"][0]["payload_meta"]["extra_data"] for r in responses] == [
        {"filename": "a.txt", "source_dir": str(tree)},
        {"filename": "b.txt", "source_dir": str(tree)},
        {"filename": "c.txt", "source_dir": str(tree / "sub")},
    ]
    assert len({r["scan_id"] for r in responses}) == 3


def test_several_files_print_one_line_per_file_in_the_order_given(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"1")
    second.write_bytes(b"22")

    done = stoq("scan", str(second), str(first), "-s", "cli_echo")

    assert done.code == 0, done.err
    names = [r["results"][0]["payload_meta"]["extra_data"]["filename"] for r in done.lines()]
    assert names == ["second", "first"]


def test_a_dash_scans_stdin(stoq: StoqRunner) -> None:
    done = stoq("scan", "-", "-s", "cli_echo", stdin=b"from a pipe")

    assert done.code == 0, done.err
    root = done.json()["results"][0]
    assert root["size"] == len(b"from a pipe")
    assert root["payload_meta"]["extra_data"] == {}


def test_without_a_file_stdin_is_scanned_when_it_is_not_a_terminal(stoq: StoqRunner) -> None:
    done = stoq("scan", "-s", "cli_echo", stdin=b"piped")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["cli_echo"]["size"] == 5


def test_jsonl_prints_one_line_per_payload_sharing_the_scan_id(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    sample = tmp_path / "parts.bin"
    sample.write_bytes(b"one|two")

    done = stoq("scan", str(sample), "-a", "cli_carve", "--format", "jsonl")

    assert done.code == 0, done.err
    lines = done.lines()
    assert [len(line["results"]) for line in lines] == [1, 1, 1]
    names = [line["results"][0]["payload_meta"]["extra_data"]["filename"] for line in lines]
    assert names == ["parts.bin", "part0", "part1"]
    assert len({line["scan_id"] for line in lines}) == 1
    assert all(set(line) >= {"request_meta", "errors", "time", "decorators"} for line in lines)


def test_summary_prints_a_table_of_payloads_workers_and_errors(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    sample = tmp_path / "parts.bin"
    sample.write_bytes(b"one|two")

    done = stoq("scan", str(sample), "-a", "cli_carve", "-s", "cli_fail", "-f", "summary")

    assert done.code == 1
    out = done.out
    for expected in ("parts.bin", "part0", "part1", "cli_carve", "cli_fail", "1 error"):
        assert expected in out
    assert "the fake worker always fails" in out
    assert not out.lstrip().startswith("{")


def test_summary_says_when_there_are_no_errors(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", "--format", "summary")

    assert done.code == 0, done.err
    assert "no errors" in done.out
    assert "sample.bin" in done.out


def test_plugin_opts_reach_the_plugin(stoq: StoqRunner, sample: Path) -> None:
    done = stoq(
        "scan", str(sample), "-s", "cli_echo", "--plugin-opts", "cli_echo:greeting=hi=there"
    )

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["cli_echo"]["greeting"] == "hi=there"


def test_request_source_and_extra_are_recorded_with_booleans_parsed(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq(
        "scan", str(sample), "-s", "cli_echo", "--request-source", "my_mail",
        "--request-extra", "server=mail-01", "postfix=true", "--request-extra", "spam=False",
    )  # fmt: skip

    assert done.code == 0, done.err
    assert done.json()["request_meta"] == {
        "archive_payloads": True,
        "source": "my_mail",
        "extra_data": {"server": "mail-01", "postfix": True, "spam": False},
    }


def test_stoq_cfg_in_stoq_home_configures_the_core_and_the_plugins(
    stoq: StoqRunner, sample: Path
) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text(
        "[core]\nalways_dispatch = cli_echo\n\n[cli_echo]\ngreeting = from the config\n"
    )

    done = stoq("scan", str(sample))

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["cli_echo"]["greeting"] == "from the config"


def test_plugin_opts_beat_stoq_cfg(stoq: StoqRunner, sample: Path) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[cli_echo]\ngreeting = from the config\n")

    done = stoq("scan", str(sample), "-s", "cli_echo", "--plugin-opts", "cli_echo:greeting=cli")

    assert done.json()["results"][0]["workers"]["cli_echo"]["greeting"] == "cli"


def test_config_file_option_replaces_the_home_config(
    stoq: StoqRunner, sample: Path, tmp_path: Path
) -> None:
    config = tmp_path / "other.cfg"
    config.write_text("[cli_echo]\ngreeting = other\n")

    done = stoq("scan", str(sample), "-s", "cli_echo", "--config-file", str(config))

    assert done.json()["results"][0]["workers"]["cli_echo"]["greeting"] == "other"


def test_max_recursion_limits_how_deep_extraction_goes(stoq: StoqRunner, tmp_path: Path) -> None:
    sample = tmp_path / "parts.bin"
    sample.write_bytes(b"one|two")

    done = stoq("scan", str(sample), "-a", "cli_carve", "--max-recursion", "1")

    response = done.json()
    assert done.code == 1  # the extracted payloads could not be scanned: an error says so
    assert [r["plugins_run"]["workers"] for r in response["results"]] == [["cli_carve"], [], []]
    assert all("Final worker round" in e["error"] for e in response["errors"])


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("--timeout", "scan timed out after 0.5 s"),
        ("--deadline", "scan stopped at the request deadline (0.5 s)"),
    ],
)
def test_a_time_limit_abandons_a_plugin_call_and_returns_what_was_done(
    stoq: StoqRunner, sample: Path, option: str, error: str
) -> None:
    done = stoq(
        "scan", str(sample), "-s", "cli_echo,cli_slow", option, "0.5",
        "--plugin-opts", "cli_slow:seconds=60",
    )  # fmt: skip

    response = done.json()
    assert done.code == 1
    assert response["results"][0]["workers"]["cli_echo"]["greeting"] == "hello"
    assert "cli_slow" not in response["results"][0]["workers"]
    assert [(e["plugin_name"], e["error"]) for e in response["errors"]] == [("cli_slow", error)]


def test_a_plugins_own_timeout_beats_the_timeout_option(stoq: StoqRunner, sample: Path) -> None:
    done = stoq(
        "scan", str(sample), "-s", "cli_slow", "--timeout", "0.1",
        "--plugin-opts", "cli_slow:seconds=0.4", "cli_slow:timeout=60",
    )  # fmt: skip

    assert done.code == 0, done.out
    assert done.json()["results"][0]["workers"]["cli_slow"] == {"slept": 0.4}


def test_a_dispatcher_picks_the_workers(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-R", "cli_dispatch")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["plugins_run"]["workers"] == ["cli_echo"]


def test_a_decorator_adds_to_the_response(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", "-D", "cli_tag")

    assert done.json()["decorators"] == {"cli_tag": {"payloads": 1}}


def test_with_a_connector_nothing_is_printed_and_the_connector_saves(
    stoq: StoqRunner, sample: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"

    done = stoq(
        "scan", str(sample), "-s", "cli_echo", "-C", "cli_sink",
        "--plugin-opts", f"cli_sink:results_dir={results}",
    )  # fmt: skip

    assert (done.code, done.out) == (0, "")
    saved = [json.loads(path.read_text()) for path in results.iterdir()]
    assert [r["results"][0]["workers"]["cli_echo"]["size"] for r in saved] == [14]


def test_a_failing_connector_still_gets_the_results_printed_and_exits_1(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", "-C", "cli_badsink")

    assert done.code == 1
    response = done.json()
    assert response["results"][0]["workers"]["cli_echo"]["size"] == 14
    assert [e["plugin_name"] for e in response["errors"]] == ["cli_badsink"]
    assert "the fake disk is full" in response["errors"][0]["error"]


def test_allow_empty_scans_an_empty_file(stoq: StoqRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")

    done = stoq("scan", str(empty), "-s", "cli_echo", "--allow-empty")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["size"] == 0


def test_empty_files_under_a_directory_are_skipped_with_a_note(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "empty").write_bytes(b"")
    (tree / "full").write_bytes(b"x")

    done = stoq("scan", str(tree), "-s", "cli_echo")

    assert done.code == 0, done.err
    assert [r["results"][0]["payload_meta"]["extra_data"]["filename"] for r in done.lines()] == [
        "full"
    ]
    assert f"skipping {tree / 'empty'}: empty" in done.err


def test_scanning_imports_only_the_plugins_it_names(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo")

    assert done.code == 0, done.err
    assert not stoq.import_marker.exists()  # cli_broken's module was never imported


def test_a_closed_stdout_ends_a_directory_scan_quietly(stoq: StoqRunner, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(300):
        (tree / f"file{index:03}").write_bytes(b"x")
    process = subprocess.Popen(
        stoq.command("scan", str(tree), "-s", "cli_echo"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.env, cwd=stoq.cwd,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        process.stdout.close()
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert json.loads(first)["results"][0]["payload_meta"]["extra_data"]["filename"] == "file000"
    assert process.returncode == 1
    assert b"Broken pipe" not in err and b"Traceback" not in err


def test_ctrl_c_interrupts_a_scan_with_exit_130_and_no_traceback(
    stoq: StoqRunner, sample: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    process = subprocess.Popen(
        stoq.command(
            "scan", str(sample), "-s", "cli_slow",
            "--plugin-opts", "cli_slow:seconds=600", f"cli_slow:marker={started}",
        ),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.env, cwd=stoq.cwd,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline, "the scan never started"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()

    assert (process.returncode, out) == (130, b"")
    assert err.decode().strip() == "stoq: interrupted"


def test_an_unreadable_entry_under_a_directory_is_skipped_and_exits_1(
    invoke: Invoke, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good").write_bytes(b"x")
    (tree / "dangling").symlink_to(tmp_path / "gone")

    result = invoke("scan", str(tree), "-s", "cli_echo")

    assert result.exit_code == 1
    names = [json.loads(line)["results"][0]["payload_meta"]["extra_data"]["filename"]
             for line in result.stdout.splitlines()]  # fmt: skip
    assert names == ["good"]
    assert f"stoq: skipping {tree / 'dangling'}: No such file or directory" in result.stderr


def test_a_fifo_under_a_directory_is_skipped_with_a_note(invoke: Invoke, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good").write_bytes(b"x")
    os.mkfifo(tree / "pipe")

    result = invoke("scan", str(tree), "-s", "cli_echo")

    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert f"stoq: skipping {tree / 'pipe'}: a FIFO" in result.stderr
