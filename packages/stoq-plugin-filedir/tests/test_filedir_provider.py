"""The provider role: ``-P filedir`` queues the files of ``source_dir``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stoq_plugin_filedir.plugin as filedir_plugin

from stoq_core import Payload, Stoq, StoqPluginException


def ingest(stoq: Stoq) -> list[Payload]:
    """Run the provider once and return what it queued, in order."""
    provider = stoq.load_plugin("filedir")

    async def run() -> list[Payload]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await provider.ingest(queue)
        return [queue.get_nowait() for _ in range(queue.qsize())]

    return asyncio.run(run())


def names(payloads: list[Payload]) -> list[str]:
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


def test_run_logs_the_missing_source_dir_and_ends(
    make_stoq: Callable[..., Stoq], caplog: pytest.LogCaptureFixture
) -> None:
    stoq = make_stoq(providers=["filedir"])

    asyncio.run(stoq.run())

    failures = [
        r.getMessage() for r in caplog.records if "provider filedir failed" in r.getMessage()
    ]
    assert len(failures) == 1
    assert "source_dir is not set" in failures[0]


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
    with pytest.raises(StoqPluginException, match=f"{option} must be true or false, not 'maybe'"):
        make_stoq({"source_dir": str(source), option: "maybe"}, providers=["filedir"])
