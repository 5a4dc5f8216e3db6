"""How ``stoq scan`` walks a directory: lazily, without recursion, and never stuck on an entry
that changed between the walk and the read."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from cli_support import StoqRunner

from stoq_cli._inputs import Input, Skipped, collect


def test_a_tree_deeper_than_pythons_recursion_limit_is_scanned(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    # os.walk recursed once per level (a RecursionError past about 1,000): a crafted archive or
    # share can hold such a tree. 1,200 levels of "d/" stay under PATH_MAX.
    tree = tmp_path / "tree"
    deepest = str(tree)
    os.mkdir(deepest)
    for _ in range(1200):  # one level at a time: os.makedirs and Path.mkdir recurse too
        deepest += "/d"
        os.mkdir(deepest)
    Path(deepest, "bottom").write_bytes(b"found")
    (tree / "top").write_bytes(b"first")

    try:
        done = stoq("scan", str(tree), "-s", "cli_echo")
    finally:
        # Removed level by level too: shutil.rmtree (pytest's clean-up) recurses as well.
        os.unlink(os.path.join(deepest, "bottom"))
        while deepest != str(tree):
            os.rmdir(deepest)
            deepest = os.path.dirname(deepest)

    assert done.code == 0, done.err[-2000:]
    names = [r["results"][0]["payload_meta"]["extra_data"]["filename"] for r in done.lines()]
    assert names == ["top", "bottom"]
    assert "Traceback" not in done.err


def test_the_walk_keeps_os_walk_order_and_labels(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for path in ("b/z", "b/a", "a/c/x", "a/y", "m", "c"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(b"x")
    said: list[str] = []

    inputs = collect([f"{tree}/./"], allow_empty=False, warn=said.append)

    expected = [
        os.path.join(directory, name)
        for directory, dirs, files in os.walk(tree)
        if dirs.sort() is None
        for name in sorted(files)
    ]
    items = list(inputs)
    assert [item.label for item in items] == expected  # pathlib's labels: no "./", no "//"
    assert [item.extra_data()["source_dir"] for item in items] == [
        str(Path(label).parent) for label in expected
    ]
    assert said == []


def test_the_walk_reads_a_directory_only_when_the_scan_gets_there(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "a" / "first").write_bytes(b"x")
    said: list[str] = []
    walk = iter(collect([str(tree)], allow_empty=False, warn=said.append))

    first = next(walk)
    # Made after the first file was handed out: a walk done up front would not have seen it.
    (tree / "b" / "later").write_bytes(b"y")

    assert first.label == str(tree / "a" / "first")
    assert [item.label for item in walk] == [str(tree / "b" / "later")]


def test_a_file_swapped_for_a_fifo_after_the_walk_is_skipped_not_waited_on(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "swapped").write_bytes(b"x")
    said: list[str] = []
    (item,) = collect([str(tree)], allow_empty=False, warn=said.append)
    (tree / "swapped").unlink()
    os.mkfifo(tree / "swapped")  # nobody will ever write to it
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(item.read(1024))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)

    assert not reader.is_alive(), "reading the FIFO blocked"
    (result,) = outcome
    assert isinstance(result, Skipped) and result.reason == "a FIFO"
    assert not result.failed  # under a directory, a FIFO is noted, as the walk notes one


@pytest.mark.parametrize("allow_empty", [False, True])
def test_an_empty_walked_file_is_found_empty_when_it_is_read(
    tmp_path: Path, allow_empty: bool
) -> None:
    (tmp_path / "empty").write_bytes(b"")
    walked = Input(str(tmp_path / "empty"), source_dir=str(tmp_path))

    if allow_empty:
        assert walked.read(1024, allow_empty) == b""
    else:
        with pytest.raises(Skipped, match=r"empty \(--allow-empty scans it\)"):
            walked.read(1024, allow_empty)
    # A file named on the command line was checked before the scan: it is read as it is.
    assert Input(str(tmp_path / "empty")).read(1024, allow_empty=False) == b""


def test_a_file_that_grew_since_it_was_opened_is_read_one_byte_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"a" * 10 + b"b" * 200)
    real_fstat = os.fstat

    def fstat_before_it_grew(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, *info[1:6], 10, *info[7:10]))

    monkeypatch.setattr(os, "fstat", fstat_before_it_grew)

    assert Input(str(path)).read(50) == b"a" * 10 + b"b" * 41  # limit + 1: known too big
    assert Input(str(path)).read(500) == b"a" * 10 + b"b" * 200  # all of it, past the size


def test_a_directory_of_only_empty_files_is_nothing_to_scan(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one").write_bytes(b"")
    (tree / "two").write_bytes(b"")

    done = stoq("scan", str(tree), "-s", "cli_echo")

    assert done.code == 2
    assert done.out == ""
    assert f"skipping {tree / 'one'}: empty" in done.err
    assert (
        done.err.strip().splitlines()[-1] == f"stoq: error: nothing to scan: no file under {tree}"
    )


def test_a_messy_tree_gives_the_same_answers_with_jobs(stoq: StoqRunner, tmp_path: Path) -> None:
    # Every kind of entry a walk meets, in one tree: one process and two workers must say the
    # same things about each (the walk is the parent's, the reads are the workers').
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    for index in range(12):
        (tree / f"good{index:02d}").write_bytes(b"x" * (index + 1))
    (tree / "sub" / "deeper" / "last").write_bytes(b"deep")
    (tree / "empty").write_bytes(b"")
    os.mkfifo(tree / "pipe")
    (tree / "dangling").symlink_to(tmp_path / "gone")
    (tree / "linked").symlink_to(tree / "good00")
    (tree / "loop").symlink_to(tree)  # a symlinked directory: not followed
    (tree / "sub" / "locked").mkdir()
    (tree / "sub" / "locked" / "inside").write_bytes(b"unseen")
    (tree / "sub" / "locked").chmod(0)
    try:
        one = stoq("scan", str(tree), "-s", "cli_echo")
        two = stoq("scan", str(tree), "-s", "cli_echo", "--jobs", "2")
    finally:
        (tree / "sub" / "locked").chmod(0o700)

    def answers(done: Any) -> list[tuple[str, int]]:
        return sorted(
            (r["results"][0]["payload_meta"]["extra_data"]["filename"], r["results"][0]["size"])
            for r in done.lines()
        )

    assert one.code == two.code
    assert answers(one) == answers(two)
    assert sorted(one.err.splitlines()) == sorted(two.err.splitlines())
    assert ("last", 4) in answers(one) and ("linked", 1) in answers(one)
    if os.geteuid() != 0:  # root reads the locked directory anyway
        assert one.code == 1 and f"skipping {tree / 'sub' / 'locked'}" in one.err
