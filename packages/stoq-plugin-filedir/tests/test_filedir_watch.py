"""The provider with ``watch``: v3's dirmon, queueing files as they arrive."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Payload, Request, Stoq

# Every wait in these tests is bounded by this many seconds.
LIMIT = 10


async def get(queue: asyncio.Queue[Any]) -> Payload:
    payload: Payload = await asyncio.wait_for(queue.get(), LIMIT)
    return payload


def watch(
    stoq: Stoq, scenario: Callable[[asyncio.Queue[Any]], Awaitable[None]], source: Path
) -> list[Payload]:
    """Start the watch, create ``ready.txt``, wait until it is queued (so the watch is running),
    play ``scenario``, then wait for ``watch_limit`` files. Returns everything queued after
    ready.txt."""
    provider = stoq.load_plugin("filedir")

    async def run() -> list[Payload]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.ensure_future(provider.ingest(queue))
        (source / "ready.txt").write_text("ready")
        first = await get(queue)
        assert first.content == b"ready"
        await scenario(queue)
        await asyncio.wait_for(task, LIMIT)
        return [queue.get_nowait() for _ in range(queue.qsize())]

    return asyncio.run(run())


@pytest.fixture
def watching(make_stoq: Callable[..., Stoq], source: Path) -> Callable[..., Stoq]:
    def make(**options: Any) -> Stoq:
        options = {"source_dir": str(source), "watch": True, **options}
        return make_stoq(options, providers=["filedir"])

    return make


def test_files_already_there_are_ingested_first(
    watching: Callable[..., Stoq], source: Path
) -> None:
    (source / "old.txt").write_text("old")
    provider = watching(watch_limit=1).load_plugin("filedir")

    async def run() -> Payload:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await asyncio.wait_for(provider.ingest(queue), LIMIT)
        return queue.get_nowait()

    assert asyncio.run(run()).content == b"old"


def test_a_file_created_after_the_start_is_ingested(
    watching: Callable[..., Stoq], source: Path
) -> None:
    async def create(queue: asyncio.Queue[Any]) -> None:
        (source / "new.txt").write_bytes(b"new file")

    payloads = watch(watching(watch_limit=2), create, source)

    assert [(p.content, p.results.payload_meta.extra_data) for p in payloads] == [
        (b"new file", {"filename": "new.txt", "source_dir": str(source)})
    ]


def test_a_file_is_read_only_once_its_writer_has_closed_it(
    watching: Callable[..., Stoq], source: Path
) -> None:
    async def write_slowly(queue: asyncio.Queue[Any]) -> None:
        with open(source / "slow.bin", "wb") as handle:
            handle.write(b"first half, ")
            handle.flush()
            await asyncio.sleep(0.3)
            handle.write(b"second half")

    payloads = watch(watching(watch_limit=2), write_slowly, source)

    assert [p.content for p in payloads] == [b"first half, second half"]


def test_a_file_renamed_into_the_directory_is_ingested(
    watching: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    async def rename_in(queue: asyncio.Queue[Any]) -> None:
        (tmp_path / "elsewhere.txt").write_text("moved in")
        os.rename(tmp_path / "elsewhere.txt", source / "arrived.txt")

    payloads = watch(watching(watch_limit=2), rename_in, source)

    assert [(p.content, p.results.payload_meta.extra_data["filename"]) for p in payloads] == [
        (b"moved in", "arrived.txt")
    ]


def test_each_file_is_queued_once(watching: Callable[..., Stoq], source: Path) -> None:
    async def create_two(queue: asyncio.Queue[Any]) -> None:
        (source / "one.txt").write_text("one")
        await asyncio.sleep(0.2)
        (source / "two.txt").write_text("two")

    payloads = watch(watching(watch_limit=3), create_two, source)

    assert [p.content for p in payloads] == [b"one", b"two"]


@pytest.mark.parametrize("polling", [False, True], ids=["notified", "polling"])
def test_a_file_renamed_after_it_was_ingested_is_not_queued_again(
    watching: Callable[..., Stoq], source: Path, polling: bool
) -> None:
    # The same version under a new name (#12); the change that follows is a new version.
    async def rename_then_change(queue: asyncio.Queue[Any]) -> None:
        os.rename(source / "ready.txt", source / "renamed.txt")
        await asyncio.sleep(0.5)
        with open(source / "renamed.txt", "ab") as handle:
            handle.write(b", changed")

    stoq = watching(watch_limit=2, watch_polling=polling, watch_settle=0.2)
    payloads = watch(stoq, rename_then_change, source)

    assert [(p.content, p.results.payload_meta.extra_data["filename"]) for p in payloads] == [
        (b"ready, changed", "renamed.txt")
    ]


def test_a_file_moved_into_a_subdirectory_after_it_was_ingested_is_not_queued_again(
    watching: Callable[..., Stoq], source: Path
) -> None:
    (source / "sub").mkdir()

    async def move_then_create(queue: asyncio.Queue[Any]) -> None:
        os.rename(source / "ready.txt", source / "sub" / "ready.txt")
        await asyncio.sleep(0.3)
        (source / "sub" / "new.txt").write_text("new")

    payloads = watch(watching(watch_limit=2, recursive=True), move_then_create, source)

    assert [p.content for p in payloads] == [b"new"]


def test_a_new_file_over_max_payload_size_is_queued_as_an_error(
    watching: Callable[..., Stoq], source: Path
) -> None:
    async def create_big(queue: asyncio.Queue[Any]) -> None:
        (source / "big.bin").write_bytes(b"B" * 100)

    payloads = watch(watching(watch_limit=2, max_payload_size=10), create_big, source)

    [request] = payloads
    assert isinstance(request, Request)
    assert request.payloads[0].results.payload_meta.extra_data["filename"] == "big.bin"
    assert [e.error for e in request.errors] == [
        f"max_payload_size (10 bytes) exceeded: {source / 'big.bin'} is 100 bytes; not read"
    ]


def test_new_files_in_subdirectories_are_ingested_when_recursive(
    watching: Callable[..., Stoq], source: Path
) -> None:
    (source / "sub").mkdir()

    async def create_deep(queue: asyncio.Queue[Any]) -> None:
        (source / "sub" / "deep.txt").write_text("deep")

    payloads = watch(watching(watch_limit=2, recursive=True), create_deep, source)

    assert [(p.content, p.results.payload_meta.extra_data["source_dir"]) for p in payloads] == [
        (b"deep", str(source / "sub"))
    ]


def test_polling_waits_for_a_file_to_stop_changing(
    watching: Callable[..., Stoq], source: Path
) -> None:
    # Without close events, a file counts as written once it stays the same for watch_settle.
    async def write_slowly(queue: asyncio.Queue[Any]) -> None:
        with open(source / "slow.bin", "wb") as handle:
            handle.write(b"first half, ")
            handle.flush()
            await asyncio.sleep(0.2)
            handle.write(b"second half")

    stoq = watching(watch_limit=2, watch_polling=True, watch_settle=0.6)
    payloads = watch(stoq, write_slowly, source)

    assert [p.content for p in payloads] == [b"first half, second half"]


def test_cancelling_the_watch_stops_the_observer_thread(
    watching: Callable[..., Stoq], source: Path
) -> None:
    provider = watching().load_plugin("filedir")
    before = set(threading.enumerate())

    async def run() -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.ensure_future(provider.ingest(queue))
        (source / "a.txt").write_text("a")
        await get(queue)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())

    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []
