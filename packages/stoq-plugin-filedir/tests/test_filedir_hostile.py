"""filedir against hostile input: special files, floods of file system events, lost events."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stoq_plugin_filedir.plugin as filedir_plugin
import watchdog.events

from stoq_core import (
    ArchiverResponse,
    Payload,
    Request,
    Stoq,
    StoqPluginException,
    StoqResponse,
)
from stoq_core.testing import call_hook, scan_sync

# Every wait in these tests is bounded by this many seconds.
LIMIT = 10


@contextlib.contextmanager
def waiting_writer(fifo: Path) -> Iterator[threading.Thread]:
    """A thread blocked opening ``fifo`` for writing, as a process feeding a pipe is.

    Its open returns only once someone opens the FIFO for reading; on leaving, the test opens it
    itself so that the thread ends.
    """
    os.mkfifo(fifo)

    def write() -> None:
        os.close(os.open(fifo, os.O_WRONLY))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield writer
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(LIMIT)
        os.close(reader)


def ingest(stoq: Stoq) -> list[Any]:
    provider = stoq.load_plugin("filedir")

    async def run() -> list[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await asyncio.wait_for(provider.ingest(queue), LIMIT)
        return [queue.get_nowait() for _ in range(queue.qsize())]

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("follow_symlinks", "can_walk"),
    [(False, True), (False, False), (True, True)],
    ids=["openat", "no-openat", "follow-symlinks"],
)
def test_a_fifo_in_source_dir_is_never_opened(
    make_stoq: Callable[..., Stoq],
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    follow_symlinks: bool,
    can_walk: bool,
) -> None:
    # Opening a FIFO to look at it completes its writer's wait, and the writer's next write then
    # fails with EPIPE: skipping it must not touch it.
    monkeypatch.setattr(filedir_plugin, "_CAN_WALK", can_walk)
    (source / "b.txt").write_text("fine")
    options = {"source_dir": str(source), "follow_symlinks": follow_symlinks}

    with waiting_writer(source / "a-pipe") as writer:
        payloads = ingest(make_stoq(options, providers=["filedir"]))
        writer.join(0.5)
        still_waiting = writer.is_alive()

    assert [p.content for p in payloads] == [b"fine"]
    assert still_waiting


def test_get_never_opens_a_fifo_in_the_archive(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    stoq = make_stoq({"archive_dir": str(archive)}, source_archivers=["filedir"])

    with waiting_writer(archive / "a-pipe") as writer:
        outcome = call_hook(stoq, "filedir", "get", ArchiverResponse({"path": "a-pipe"}))
        writer.join(0.5)
        still_waiting = writer.is_alive()

    assert outcome.value is None
    [error] = outcome.errors
    assert error.error.endswith(
        "cannot load 'a-pipe' from the archive: not a regular file (a FIFO)"
    )
    assert still_waiting


class _Captured:
    """The watch and the event bridge an ``ingest`` with ``watch`` makes, once it made them."""

    watch: Any = None
    bridge: Any = None


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> _Captured:
    found = _Captured()

    class Watch(filedir_plugin._Watch):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            found.watch = self

    class Bridge(filedir_plugin._EventBridge):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            found.bridge = self

    monkeypatch.setattr(filedir_plugin, "_Watch", Watch)
    monkeypatch.setattr(filedir_plugin, "_EventBridge", Bridge)
    return found


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(LIMIT * 20):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


def test_events_arriving_while_the_queue_is_full_are_held_once_per_file(
    make_stoq: Callable[..., Stoq], source: Path, captured: _Captured
) -> None:
    # Each write() is an event, and watchdog drops only repeats in a row: a writer alternating
    # between two files while the scans lag once grew the watch's events by one per write.
    provider = make_stoq({"source_dir": str(source), "watch": True}, providers=["filedir"])
    provider = provider.load_plugin("filedir")

    async def run() -> tuple[int, list[bytes]]:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        task = asyncio.ensure_future(provider.ingest(queue))
        (source / "fills-the-queue").write_bytes(b"first")
        await until(queue.full)
        (source / "waits-for-room").write_bytes(b"second")
        await until(lambda: "waits-for-room" not in str(list(captured.watch.pending)))
        with open(source / "one", "wb", buffering=0) as one, open(source / "two", "wb") as two:
            for count in range(5000):
                one.write(b"1")
                two.write(b"2")
                two.flush()
                if count % 500 == 0:
                    await asyncio.sleep(0)
        await asyncio.sleep(1)  # watchdog hands over what it has
        held = len(captured.watch.pending)
        contents: list[bytes] = []
        while len(contents) < 4:
            payload: Payload = await asyncio.wait_for(queue.get(), LIMIT)
            contents.append(bytes(payload.content))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return held, contents

    held, contents = asyncio.run(run())

    assert held <= 8  # the kinds of event for two files, not 10,000 writes
    assert contents[:2] == [b"first", b"second"]
    assert sorted(contents[2:]) == [b"1" * 5000, b"2" * 5000]


@pytest.mark.skipif(
    not hasattr(watchdog.events, "EventsLostEvent"),
    reason="this watchdog never reports lost events",
)
def test_a_file_whose_events_were_lost_is_ingested_by_listing_source_dir_again(
    make_stoq: Callable[..., Stoq],
    source: Path,
    captured: _Captured,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # When inotify's queue overflows, the kernel drops events and watchdog says so once; a file
    # whose creation was among them would otherwise never be ingested.
    forward = filedir_plugin._EventBridge.on_any_event

    def drop_the_lost_file(bridge: Any, event: watchdog.events.FileSystemEvent) -> None:
        if "lost" not in os.fsdecode(event.src_path):
            forward(bridge, event)

    monkeypatch.setattr(filedir_plugin._EventBridge, "on_any_event", drop_the_lost_file)
    stoq = make_stoq(
        {"source_dir": str(source), "watch": True, "watch_limit": 2}, providers=["filedir"]
    )
    provider = stoq.load_plugin("filedir")

    async def run() -> list[bytes]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.ensure_future(provider.ingest(queue))
        (source / "seen.txt").write_text("seen")
        first = await asyncio.wait_for(queue.get(), LIMIT)
        (source / "lost.txt").write_text("lost")
        captured.bridge.on_events_lost(watchdog.events.EventsLostEvent(str(source)))
        await asyncio.wait_for(task, LIMIT)
        return [bytes(first.content), bytes(queue.get_nowait().content)]

    assert asyncio.run(run()) == [b"seen", b"lost"]


# -- writing below results_dir and archive_dir ------------------------------------------------

EVIL = b"* * * * * root sh /tmp/evil\n"


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_archive_never_writes_through_a_symlink_planted_in_the_fan_out(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    # Whoever can write below archive_dir (anyone who can write in source_dir, when archive_dir
    # lies inside it) knows the sha1 of what they send, so where it will be archived.
    archive, outside = tmp_path / "archive", tmp_path / "outside"
    outside.mkdir()
    sha1 = hashlib.sha1(EVIL).hexdigest()
    (archive / Path(*sha1[:4])).mkdir(parents=True)
    (archive / Path(*sha1[:5])).symlink_to(outside)
    stoq = make_stoq({"archive_dir": str(archive)}, dest_archivers=["filedir"])

    response = scan_sync(stoq, EVIL)

    assert files_under(outside) == []
    [error] = response.errors
    assert error.plugin_name == "filedir"
    assert "is a symbolic link, and filedir follows none below" in error.error


def test_archive_replaces_a_symlink_planted_at_the_sha1_name_instead_of_trusting_it(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    # A link there once counted as "already archived", so the payload was never kept.
    archive, decoy = tmp_path / "archive", tmp_path / "decoy"
    decoy.write_bytes(b"something else")
    sha1 = hashlib.sha1(EVIL).hexdigest()
    target = archive / Path(*sha1[:5]) / sha1
    target.parent.mkdir(parents=True)
    target.symlink_to(decoy)
    stoq = make_stoq({"archive_dir": str(archive)}, dest_archivers=["filedir"])

    response = scan_sync(stoq, EVIL)

    assert response.errors == []
    assert not target.is_symlink()
    assert target.read_bytes() == EVIL
    assert decoy.read_bytes() == b"something else"


def test_save_never_writes_through_a_symlink_planted_for_a_dated_directory(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    results, outside = tmp_path / "results", tmp_path / "outside"
    results.mkdir()
    outside.mkdir()
    (results / "dated").symlink_to(outside)
    options = {"results_dir": str(results), "date_mode": True, "date_format": "dated/%Y"}
    connector = make_stoq(options, connectors=["filedir"]).load_plugin("filedir")

    with pytest.raises(StoqPluginException, match="is a symbolic link"):
        asyncio.run(connector.save(StoqResponse(Request(), scan_id="planted")))

    assert files_under(outside) == []
