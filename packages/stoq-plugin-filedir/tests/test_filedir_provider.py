"""The provider role: ``-P filedir`` queues the files of ``source_dir``."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stoq_plugin_filedir.plugin as filedir_plugin

from stoq_core import Request, Stoq, StoqPluginException


def ingest(stoq: Stoq) -> list[Any]:
    """Run the provider once and return what it queued, in order."""
    provider = stoq.load_plugin("filedir")

    async def run() -> list[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await provider.ingest(queue)
        return [queue.get_nowait() for _ in range(queue.qsize())]

    return asyncio.run(run())


def names(items: list[Any]) -> list[str]:
    payloads = [item.payloads[0] if isinstance(item, Request) else item for item in items]
    return [p.results.payload_meta.extra_data["filename"] for p in payloads]


def test_each_file_becomes_a_payload_with_its_filename_and_directory(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    (source / "a.txt").write_bytes(b"first")
    (source / "b.bin").write_bytes(b"\x00second")

    payloads = ingest(make_stoq({"source_dir": str(source)}, providers=["filedir"]))

    assert [(p.content, p.results.payload_meta.extra_data) for p in payloads] == [
        (b"first", {"filename": "a.txt", "source_dir": str(source)}),
        (b"\x00second", {"filename": "b.bin", "source_dir": str(source)}),
    ]


def test_subdirectories_are_not_entered_by_default(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    (source / "top.txt").write_text("top")
    (source / "sub").mkdir()
    (source / "sub" / "deep.txt").write_text("deep")

    payloads = ingest(make_stoq({"source_dir": str(source)}, providers=["filedir"]))

    assert names(payloads) == ["top.txt"]


def test_recursive_ingests_subdirectories_naming_each_file_s_own_directory(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    (source / "top.txt").write_text("top")
    (source / "sub" / "inner").mkdir(parents=True)
    (source / "sub" / "inner" / "deep.txt").write_text("deep")

    payloads = ingest(
        make_stoq({"source_dir": str(source), "recursive": True}, providers=["filedir"])
    )

    assert sorted(
        (p.results.payload_meta.extra_data["source_dir"], p.content) for p in payloads
    ) == [
        (str(source), b"top"),
        (str(source / "sub" / "inner"), b"deep"),
    ]


def test_symlinked_files_and_directories_are_skipped_by_default(
    make_stoq: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "dir" / "inner.txt").write_text("inner")
    (source / "real.txt").write_text("real")
    (source / "link.txt").symlink_to(outside / "secret.txt")
    (source / "linkdir").symlink_to(outside / "dir")

    payloads = ingest(
        make_stoq({"source_dir": str(source), "recursive": True}, providers=["filedir"])
    )

    assert names(payloads) == ["real.txt"]


def test_follow_symlinks_reads_linked_files_and_directories(
    make_stoq: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "dir" / "inner.txt").write_text("inner")
    (source / "link.txt").symlink_to(outside / "secret.txt")
    (source / "linkdir").symlink_to(outside / "dir")

    payloads = ingest(
        make_stoq(
            {"source_dir": str(source), "recursive": True, "follow_symlinks": True},
            providers=["filedir"],
        )
    )

    assert sorted(p.content for p in payloads) == [b"inner", b"secret"]


def test_a_symlink_loop_is_walked_once(make_stoq: Callable[..., Stoq], source: Path) -> None:
    (source / "a.txt").write_text("a")
    (source / "sub").mkdir()
    (source / "sub" / "back").symlink_to(source)

    payloads = ingest(
        make_stoq(
            {"source_dir": str(source), "recursive": True, "follow_symlinks": True},
            providers=["filedir"],
        )
    )

    assert names(payloads) == ["a.txt"]


# Swaps directory ``argv[1]`` for a symbolic link to ``argv[2]`` and back, each step an atomic
# rename, until killed (or bounded); prints a line once it has started.
SWAPPER = """
import os, sys
name, target = sys.argv[1], sys.argv[2]
link, real = name + ".link", name + ".real"
os.symlink(target, link)
print("swapping", flush=True)
for _ in range(5_000_000):
    os.rename(name, real)
    os.rename(link, name)
    os.rename(name, link)
    os.rename(real, name)
"""


def test_a_directory_swapped_for_a_symlink_while_ingesting_is_never_followed(
    make_stoq: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    # Listed as a directory, then a link when its file is opened: each name is opened in turn
    # with no link followed, so the walk never leaves source_dir.
    (source / "sub").mkdir()
    (source / "sub" / "sample").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sample").write_bytes(b"OUTSIDE")
    provider = make_stoq(
        {"source_dir": str(source), "recursive": True}, providers=["filedir"]
    ).load_plugin("filedir")
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(source / "sub"), str(outside)],
        stdout=subprocess.PIPE,
    )

    async def ingest_many() -> list[bytes]:
        read = []
        for _ in range(400):
            queue: asyncio.Queue[Any] = asyncio.Queue()
            await provider.ingest(queue)
            read += [bytes(queue.get_nowait().content) for _ in range(queue.qsize())]
        return read

    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == b"swapping\n"
        read = asyncio.run(ingest_many())
        still_swapping = swapper.poll() is None
    finally:
        swapper.kill()
        swapper.wait(60)

    assert still_swapping
    assert b"OUTSIDE" not in read
    assert set(read) == {b"inside"}


def test_a_fifo_is_skipped_with_a_log_line_and_the_rest_is_ingested(
    make_stoq: Callable[..., Stoq], source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Tests run as root, who reads any mode-000 file; a FIFO is what cannot be read as a file
    # (and opening it naively would wait forever for a writer).
    os.mkfifo(source / "a-pipe")
    (source / "b.txt").write_text("fine")
    caplog.set_level(logging.INFO, logger="stoq.filedir")

    payloads = ingest(make_stoq({"source_dir": str(source)}, providers=["filedir"]))

    assert names(payloads) == ["b.txt"]
    assert f"skipping {source / 'a-pipe'}: not a regular file (a FIFO)" in caplog.messages


def test_a_file_that_vanished_is_skipped_with_a_log_line(
    make_stoq: Callable[..., Stoq], source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A link whose target is gone: listed, then not there when opened, as a deleted file is.
    (source / "gone.txt").symlink_to(source / "deleted-meanwhile")
    (source / "kept.txt").write_text("kept")
    caplog.set_level(logging.INFO, logger="stoq.filedir")

    payloads = ingest(
        make_stoq({"source_dir": str(source), "follow_symlinks": True}, providers=["filedir"])
    )

    assert names(payloads) == ["kept.txt"]
    assert f"skipping {source / 'gone.txt'}: No such file or directory" in caplog.messages


@pytest.mark.parametrize(("batch_files", "batch_bytes"), [(3, 1 << 20), (64, 10), (1, 1)])
def test_files_read_in_batches_are_all_queued_in_order_with_skips_between(
    make_stoq: Callable[..., Stoq],
    source: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    batch_files: int,
    batch_bytes: int,
) -> None:
    # Batches end on a count, on a byte budget smaller than one file, or after every file.
    monkeypatch.setattr(filedir_plugin, "_READ_BATCH_FILES", batch_files)
    monkeypatch.setattr(filedir_plugin, "_READ_BATCH_BYTES", batch_bytes)
    expected = []
    for i in range(10):
        if i == 4:
            os.mkfifo(source / f"f{i}")
            continue
        (source / f"f{i}").write_bytes(b"%d" % i * (i + 1))
        expected.append(f"f{i}")
    caplog.set_level(logging.INFO, logger="stoq.filedir")

    payloads = ingest(make_stoq({"source_dir": str(source)}, providers=["filedir"]))

    assert names(payloads) == expected
    assert [p.content for p in payloads] == [
        b"%d" % int(n[1:]) * (int(n[1:]) + 1) for n in expected
    ]
    assert f"skipping {source / 'f4'}: not a regular file (a FIFO)" in caplog.messages


def test_results_and_archive_directories_inside_source_dir_are_not_ingested(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    (source / "sample.txt").write_text("sample")
    for own in ("results", "archive"):
        (source / own).mkdir()
        (source / own / "output").write_text("written by filedir")
    options = {
        "source_dir": str(source),
        "recursive": True,
        "results_dir": str(source / "results"),
        "archive_dir": str(source / "archive"),
    }

    payloads = ingest(make_stoq(options, providers=["filedir"]))

    assert names(payloads) == ["sample.txt"]


def test_a_file_over_max_payload_size_is_an_error_and_the_rest_is_ingested(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    # #12: a 6 GB file made the provider fail with MemoryError, and no other file was ingested.
    (source / "a.txt").write_bytes(b"small")
    (source / "big.bin").write_bytes(b"B" * 101)
    (source / "c.txt").write_bytes(b"C" * 100)

    items = ingest(
        make_stoq({"source_dir": str(source), "max_payload_size": 100}, providers=["filedir"])
    )

    assert names(items) == ["a.txt", "big.bin", "c.txt"]
    assert [item.content for item in (items[0], items[2])] == [b"small", b"C" * 100]
    oversized = items[1]
    assert isinstance(oversized, Request)
    [placeholder] = oversized.payloads
    meta = placeholder.results.payload_meta
    assert (placeholder.content, meta.should_scan, meta.should_archive) == (b"", False, False)
    assert meta.extra_data == {"filename": "big.bin", "source_dir": str(source)}
    [error] = oversized.errors
    assert (error.plugin_name, error.payload_id) == ("filedir", placeholder.results.payload_id)
    assert error.error == (
        f"max_payload_size (100 bytes) exceeded: {source / 'big.bin'} is 101 bytes; not read"
    )


def test_a_file_over_max_payload_size_is_not_read_whole(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    # A sparse file: 64 MiB to read, no disk space used.
    with open(source / "huge.bin", "wb") as handle:
        handle.truncate(64 << 20)
    (source / "kept.txt").write_bytes(b"kept")
    stoq = make_stoq(
        {"source_dir": str(source), "max_payload_size": 1 << 20}, providers=["filedir"]
    )

    tracemalloc.start()
    try:
        items = ingest(stoq)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 16 << 20
    assert names(items) == ["huge.bin", "kept.txt"]
    assert "max_payload_size (1048576 bytes) exceeded" in items[0].errors[0].error


def test_max_payload_size_defaults_to_the_core_s(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    stoq = make_stoq({"source_dir": str(source)}, providers=["filedir"])

    assert stoq.load_plugin("filedir").max_payload_size == stoq.max_payload_size == 256 << 20


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", r"option 'max_payload_size' must be a whole number \(int\), not 'lots'"),
        ("0", "1 or more, not 0"),
    ],
)
def test_a_max_payload_size_that_is_not_a_positive_number_is_an_error(
    make_stoq: Callable[..., Stoq], source: Path, value: str, message: str
) -> None:
    with pytest.raises(StoqPluginException, match=message):
        make_stoq({"source_dir": str(source), "max_payload_size": value}, providers=["filedir"])


def test_a_missing_source_dir_stops_construction(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"

    with pytest.raises(StoqPluginException, match=f"source_dir {missing}: no such directory"):
        make_stoq({"source_dir": str(missing)}, providers=["filedir"])


def test_a_source_dir_that_is_a_file_stops_construction(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")

    with pytest.raises(StoqPluginException, match="not a directory"):
        make_stoq({"source_dir": str(tmp_path / "file")}, providers=["filedir"])


def test_ingest_without_source_dir_is_a_one_line_error(make_stoq: Callable[..., Stoq]) -> None:
    with pytest.raises(StoqPluginException, match="source_dir is not set") as error:
        ingest(make_stoq(providers=["filedir"]))

    assert "\n" not in str(error.value)


def test_run_raises_the_missing_source_dir_before_scanning_anything(
    make_stoq: Callable[..., Stoq],
) -> None:
    # A configuration error, as a plugin that fails to load is: the CLI's one line and exit 2.
    stoq = make_stoq(providers=["filedir"])

    with pytest.raises(StoqPluginException, match="source_dir is not set"):
        asyncio.run(asyncio.wait_for(stoq.run(), 60))


def test_a_source_dir_removed_after_construction_is_reported_at_ingest(
    make_stoq: Callable[..., Stoq], source: Path
) -> None:
    stoq = make_stoq({"source_dir": str(source)}, providers=["filedir"])
    source.rmdir()

    with pytest.raises(StoqPluginException, match="no such directory"):
        ingest(stoq)


@pytest.mark.parametrize("option", ["recursive", "follow_symlinks", "watch"])
def test_a_yes_no_option_that_is_neither_is_an_error(
    make_stoq: Callable[..., Stoq], source: Path, option: str
) -> None:
    message = rf"option '{option}' must be true or false \(bool\), not 'maybe'"
    with pytest.raises(StoqPluginException, match=message):
        make_stoq({"source_dir": str(source), option: "maybe"}, providers=["filedir"])
