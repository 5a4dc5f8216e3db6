"""``stoq scan --format summary`` and the default output: what a person at a terminal reads.

One input shows each payload with what each worker found; many show one line per file and a
totals line. Without ``--format``, a terminal on stdout gets the summary; a pipe gets JSON.
Also: a scan in which no worker ran says so on stderr (issue 15, item 5).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from cli_support import StoqRunner, run_on_terminal

RULES = 'rule stoq_test_rule { strings: $a = "stoq" condition: $a }\n'
NO_WORKER = "stoq: no worker ran on any payload: choose workers with -s NAME"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yar"
    path.write_text(RULES)
    return path


def run_with_terminal_stdout(
    stoq: StoqRunner, *args: str, timeout: float = 60
) -> tuple[int, str, str]:
    """Run stoq with stdout on a pseudo-terminal; returns (code, terminal, stderr)."""
    code, terminal, err = run_on_terminal(stoq, *args, stream="stdout", timeout=timeout)
    text = re.sub(r"\x1b\[[0-9;]*m", "", terminal.decode())  # colour, bold and dim
    return code, text.replace("\r\n", "\n"), err.decode()


# -- no worker ran ---------------------------------------------------------------------------


def test_a_scan_with_no_worker_prints_the_json_and_says_how_to_choose_one(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample))

    assert done.code == 0
    assert done.json()["results"][0]["workers"] == {}
    [line] = done.err.splitlines()
    assert line.startswith(NO_WORKER)
    for hint in ("-a NAME", "-R NAME", "'stoq list'"):
        assert hint in line


def test_a_directory_with_no_worker_says_it_once(stoq: StoqRunner, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(3):
        (tree / f"file{index}").write_bytes(b"x" * (index + 1))

    done = stoq("scan", str(tree))

    assert done.code == 0
    assert len(done.lines()) == 3
    assert done.err.count("no worker ran") == 1


def test_no_note_when_a_worker_ran_even_one_that_failed(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_fail")

    assert done.code == 1
    assert "the fake worker always fails" in done.err  # the log's warning
    assert "no worker ran" not in done.err


def test_no_note_when_a_dispatcher_picked_a_worker(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-R", "cli_dispatch")

    assert done.code == 0
    assert done.err == ""


def test_no_note_when_a_worker_comes_from_stoq_cfg(stoq: StoqRunner, sample: Path) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[core]\nalways_dispatch = cli_echo\n")

    done = stoq("scan", str(sample))

    assert (done.code, done.err) == (0, "")


def test_log_level_error_silences_the_no_worker_note(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "--log-level", "error")

    assert (done.code, done.err) == (0, "")
    assert done.json()["results"][0]["workers"] == {}


# -- one input: each payload's findings ------------------------------------------------------


def test_summary_shows_the_sha256_and_the_rule_names_not_just_worker_names(
    stoq: StoqRunner, sample: Path, rules: Path
) -> None:
    done = stoq(
        "scan", str(sample), "-s", "hash", "-a", "yara", "-f", "summary",
        "--plugin-opts", f"yara:worker_rules={rules}",
    )  # fmt: skip

    assert done.code == 0, done.err
    sha256 = hashlib.sha256(sample.read_bytes()).hexdigest()
    lines = done.out.splitlines()
    assert lines[0].startswith(f"{sample}  14 bytes  scan ")
    assert "  hash  sha256 " + sha256 in lines
    assert "  yara  matched stoq_test_rule" in lines
    assert hashlib.md5(sample.read_bytes()).hexdigest() not in done.out  # only what matters
    assert lines[-1] == "no errors"


def test_summary_shows_other_results_compactly(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo", "-f", "summary")

    assert done.code == 0, done.err
    assert "  cli_echo  size=14, filename=sample.bin, greeting=hello" in done.out.splitlines()


def test_summary_shows_extracted_payloads_and_each_error_message(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    sample = tmp_path / "parts.bin"
    sample.write_bytes(b"one|two")

    done = stoq("scan", str(sample), "-a", "cli_carve", "-s", "cli_fail", "-f", "summary")

    assert done.code == 1
    lines = done.out.splitlines()
    assert "  \u21b3 part0  3 bytes  extracted by cli_carve" in lines
    assert "  cli_fail   failed (see the errors)" in lines
    assert "1 error" in lines
    error = "  cli_fail  on parts.bin: scan failed: RuntimeError: the fake worker always fails"
    assert error in lines


def test_summary_says_when_no_worker_ran_on_a_payload(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-f", "summary")

    assert done.code == 0
    assert "  no worker ran" in done.out.splitlines()
    assert NO_WORKER in done.err


# -- many inputs: one line per file, then the totals ------------------------------------------


def test_a_directory_summary_is_one_line_per_file_and_a_totals_line(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(20):
        (tree / f"file{index:02}").write_bytes(b"stoq" if index % 5 == 0 else b"x" * index)
    (tree / "parts").write_bytes(b"a|b|c")
    rules = tmp_path / "rules.yar"
    rules.write_text(RULES)

    done = stoq(
        "scan", str(tree), "-a", "hash,yara", "-s", "cli_carve", "-f", "summary",
        "--plugin-opts", f"yara:worker_rules={rules}",
    )  # fmt: skip

    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert len(lines) == 22
    sha256 = hashlib.sha256(b"stoq").hexdigest()
    assert lines[0].startswith(f"{tree / 'file00'}  4 bytes  sha256 {sha256}  rules stoq_test_rule")
    assert lines[1].startswith(f"{tree / 'file01'}  1 byte  sha256 ")
    assert "rules" not in lines[1]
    assert lines[20].startswith(f"{tree / 'parts'}  5 bytes  ")
    assert lines[20].endswith("  3 extracted")
    assert lines[-1].startswith("scanned 21 files, 24 payloads, 4 with rule matches, no errors in ")


def test_a_many_file_summary_line_carries_the_first_error(stoq: StoqRunner, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"1")
    two.write_bytes(b"2")

    done = stoq("scan", str(one), str(two), "-s", "cli_fail", "-f", "summary")

    assert done.code == 1
    lines = done.out.splitlines()
    assert lines[0] == (
        f"{one}  1 byte  1 error: cli_fail: scan failed: RuntimeError: the fake worker always fails"
    )
    assert lines[-1].startswith("scanned 2 files, 2 payloads, 2 with errors (2 errors) in ")


# -- the default: a summary on a terminal, JSON anywhere else ----------------------------------


def test_a_terminal_gets_the_summary_by_default(stoq: StoqRunner, sample: Path) -> None:
    code, terminal, err = run_with_terminal_stdout(stoq, "scan", str(sample), "-s", "cli_echo")

    assert (code, err) == (0, "")
    lines = terminal.splitlines()
    assert lines[0].startswith(f"{sample}  14 bytes  scan ")
    assert "  cli_echo  size=14, filename=sample.bin, greeting=hello" in lines
    assert lines[-1] == "(the whole response: stoq scan --format json ...)"


def test_format_json_on_a_terminal_prints_the_json(stoq: StoqRunner, sample: Path) -> None:
    code, terminal, err = run_with_terminal_stdout(
        stoq, "scan", str(sample), "-s", "cli_echo", "--format", "json"
    )

    assert (code, err) == (0, "")
    assert json.loads(terminal)["results"][0]["workers"]["cli_echo"]["size"] == 14


def test_a_pipe_gets_json_by_default(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_echo")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["cli_echo"]["size"] == 14


def test_a_directory_on_a_terminal_is_one_line_per_file_cut_to_the_width(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(3):
        (tree / f"file{index}").write_bytes(b"x" * (index + 1))
    stoq.env["COLUMNS"] = "60"

    code, terminal, err = run_with_terminal_stdout(
        stoq, "scan", str(tree), "-s", "cli_echo", "--plugin-opts", "cli_echo:greeting=" + "y" * 80
    )

    assert (code, err) == (0, "")
    lines = terminal.splitlines()
    assert len(lines) == 4
    assert all(len(line) <= 60 for line in lines[:3])
    assert all(line.endswith("\u2026") for line in lines[:3])
    assert lines[-1].startswith("scanned 3 files, 3 payloads, no errors in ")
