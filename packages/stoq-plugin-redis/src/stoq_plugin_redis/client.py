"""Submitting tasks and reading results: what ``stoq submit`` and ``stoq results`` call.

::

    task_ids = await submit(["sample.exe", "samples/"], url="redis://127.0.0.1:6379/0")
    async for outcome in wait(task_ids):
        print(outcome.task_id, outcome.response or outcome.error)
    async for response in results(follow=True):
        print(response["scan_id"])

Every function raises ``StoqException`` with a one-line message for what a user can get wrong
(a missing file, a bad URL, an unreachable Redis, a refused password).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

import attrs
import redis.asyncio
import redis.exceptions

from stoq_core import PayloadMeta, RequestMeta, StoqException
from stoq_plugin_redis._connection import close, connect, describe, retrying
from stoq_plugin_redis._messages import (
    DEFAULT_ARCHIVER,
    DEFAULT_INLINE_LIMIT,
    DEFAULT_KEY_PREFIX,
    DEFAULT_RESULTS_STREAM,
    DEFAULT_STREAM,
    DEFAULT_URL,
    dead_letter_stream,
    encode_task,
    payload_key,
    result_key,
    show,
    text,
)

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_RESULTS_STREAM",
    "DEFAULT_STREAM",
    "DEFAULT_URL",
    "Outcome",
    "WaitTimeout",
    "results",
    "submit",
    "wait",
]

T = TypeVar("T")

Source = Union[str, "os.PathLike[str]", bytes]

_BATCH = 256  # task messages sent per round trip
_PATIENCE = 30.0  # seconds a long-running read waits out a Redis restart
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a stream entry id, as a marker holds one

log = logging.getLogger("stoq.redis.client")


class WaitTimeout(StoqException):
    """``wait`` ran out of time with tasks still unfinished (their outcomes may come later)."""

    def __init__(self, unfinished: int, total: int, timeout: float) -> None:
        super().__init__(f"{unfinished} of {total} tasks still have no result after {timeout:g} s")
        self.unfinished = unfinished  #: tasks with neither a result nor a dead letter yet
        self.total = total
        self.timeout = timeout


@attrs.frozen
class Outcome:
    """How one submission ended: its response, or why there is none."""

    task_id: str
    response: Optional[dict[str, Any]]  #: the result (a stoQ response as JSON), if any
    error: Optional[str] = None  #: why there is no result, e.g. the dead-letter error


@attrs.frozen
class _Item:
    name: Optional[str]  #: the file's name, for ``extra_data["filename"]``
    path: Optional[Path] = None
    content: Optional[bytes] = None

    def read(self) -> bytes:
        if self.content is not None:
            return self.content
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise StoqException(f"cannot read {self.path}: {exc.strerror}") from None


async def submit(
    sources: Union[Source, Iterable[Source]],
    *,
    url: str = DEFAULT_URL,
    password: Optional[str] = None,
    stream: str = DEFAULT_STREAM,
    inline_limit: int = DEFAULT_INLINE_LIMIT,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    ttl: int = 0,
    archiver: str = DEFAULT_ARCHIVER,
    payload_meta: Optional[PayloadMeta] = None,
    request_meta: Optional[RequestMeta] = None,
) -> list[str]:
    """Queue one task per file (directories recursively) or bytes object; return their task ids.

    A payload of at most ``inline_limit`` bytes travels in its message; a larger one is stored
    under ``<key_prefix>:payload:<sha256>`` (with ``ttl`` seconds to live, 0: no limit) and its
    message carries ``{"archiver": archiver, "task": {"sha256": ...}}`` instead.

    :param sources: paths (``str`` or ``Path``) and/or ``bytes`` payloads.
    :param password: else the URL's, else ``$STOQ_REDIS_PASSWORD``, else ``$REDIS_PASSWORD``.
    :param payload_meta: given to every payload; a file's name is added to its ``extra_data``
        as ``filename`` unless one is given.
    :param request_meta: given to every task's request.
    :returns: the task ids (uuid4), in the order of the payloads sent.
    :raises StoqException: a path does not exist or cannot be read, or Redis cannot be reached.
    """
    items = _expand(sources)
    if inline_limit < 0:
        raise StoqException(f"inline_limit must be 0 or more bytes, not {inline_limit}")
    client = connect(url, password)
    task_ids: list[str] = []
    try:
        for start in range(0, len(items), _BATCH):
            pipe = client.pipeline(transaction=False)
            for item in items[start : start + _BATCH]:
                task_id = str(uuid.uuid4())
                task_ids.append(task_id)
                content = item.read()
                meta = _meta_for(item, payload_meta)
                if len(content) <= inline_limit:
                    fields = encode_task(task_id, meta, request_meta, content=content)
                else:
                    sha256 = hashlib.sha256(content).hexdigest()
                    # Stored before its message is added (a pipeline keeps the order), so no
                    # worker can read the message before the bytes are there.
                    pipe.set(payload_key(key_prefix, sha256), content, ex=ttl or None)
                    fields = encode_task(
                        task_id,
                        meta,
                        request_meta,
                        archiver=archiver,
                        archiver_task={"sha256": sha256},
                    )
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()
    except redis.exceptions.RedisError as exc:
        raise StoqException(describe(exc, url)) from None
    finally:
        await close(client)
    return task_ids


def _expand(sources: Union[Source, Iterable[Source]]) -> list[_Item]:
    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    items: list[_Item] = []
    for source in sources:
        if isinstance(source, (bytes, bytearray, memoryview)):
            items.append(_Item(None, content=bytes(source)))
            continue
        path = Path(source)
        if path.is_dir():
            items.extend(_Item(file.name, path=file) for file in _files_under(path))
        elif path.is_file():
            _check_readable(path)
            items.append(_Item(path.name, path=path))
        elif path.exists():
            raise StoqException(f"{path} is not a regular file or a directory")
        else:
            raise StoqException(f"{path}: no such file or directory")
    return items


def _files_under(directory: Path) -> Iterator[Path]:
    """Regular files below ``directory``, in a stable order (symbolic links are not followed)."""
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            file = Path(root, name)
            if file.is_file() and not file.is_symlink():
                _check_readable(file)
                yield file


def _check_readable(path: Path) -> None:
    # Checked before anything is sent, so a bad file does not leave half a submission behind.
    if not os.access(path, os.R_OK):
        raise StoqException(f"cannot read {path}: permission denied")


def _meta_for(item: _Item, given: Optional[PayloadMeta]) -> PayloadMeta:
    given = given or PayloadMeta()
    extra_data = dict(given.extra_data)
    if item.name is not None:
        extra_data.setdefault("filename", item.name)
    return PayloadMeta(given.should_archive, given.should_scan, extra_data, list(given.dispatch_to))


async def results(
    *,
    url: str = DEFAULT_URL,
    password: Optional[str] = None,
    results_stream: str = DEFAULT_RESULTS_STREAM,
    follow: bool = False,
    start: str = "0-0",
    on_unreadable: Optional[Callable[[str, str], object]] = None,
) -> AsyncIterator[dict[str, Any]]:
    """The responses in the results stream, oldest first, one per task.

    An entry that holds no response (no ``result`` field, or one that is not a JSON object) is
    skipped, and the entries after it are read as usual.

    :param follow: after the last one, wait for more (until cancelled) instead of returning.
    :param start: a results-stream entry id to read after; ``"0-0"`` reads from the start,
        ``"$"`` only what arrives from now on.
    :param on_unreadable: called with a skipped entry's id and why it was skipped; by default
        each is logged as a warning.
    :raises StoqException: Redis cannot be reached: at once if it cannot be reached at first
        (a wrong url, say), after 30 s of trying if it goes away later.
    """
    client = connect(url, password)
    patience = 0.0  # until Redis has answered once
    try:
        last = start
        if last == "$":
            newest: Any = await _run(
                functools.partial(client.xrevrange, results_stream, count=1), url, patience
            )
            last = text(newest[0][0]) if newest else "0-0"
            patience = _PATIENCE
        while True:
            reply = await _run(
                functools.partial(
                    client.xread, {results_stream: last}, count=500, block=1000 if follow else None
                ),
                url,
                patience,
            )
            patience = _PATIENCE
            entries = _entries(reply)
            if not entries:
                if follow:
                    continue
                return
            for entry_id, fields in entries:
                last = text(entry_id)
                try:
                    response = _read_result(fields)
                except _Unreadable as exc:
                    if on_unreadable is None:
                        log.warning("results-stream entry %s skipped: %s", last, exc)
                    else:
                        on_unreadable(last, str(exc))
                    continue
                yield response
    finally:
        await close(client)


class _Unreadable(ValueError):
    """A results-stream entry that holds no response; the text says why."""


def _read_result(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """The response a results-stream entry holds.

    :raises _Unreadable: it has no ``result`` field, or one that is not a JSON object
        (written by something other than the connector, or damaged).
    """
    raw = fields.get(b"result", fields.get("result"))
    about = ""
    task_id = fields.get(b"task_id", fields.get("task_id"))
    if isinstance(task_id, (bytes, str)):
        about = f" (task {show(text(task_id, lenient=True))})"
    if not isinstance(raw, (bytes, str)):
        raise _Unreadable(f"it has no result field{about}")
    try:
        response = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise _Unreadable(f"its result is not UTF-8{about}: {show(raw)}") from None
    except RecursionError:
        raise _Unreadable(f"its result is nested too deeply to read{about}") from None
    except ValueError as exc:
        raise _Unreadable(f"its result is not JSON{about}: {exc}: {show(raw)}") from None
    if not isinstance(response, dict):
        raise _Unreadable(f"its result is not a JSON object{about}: {show(raw)}")
    return response


async def wait(
    task_ids: Iterable[str],
    *,
    url: str = DEFAULT_URL,
    password: Optional[str] = None,
    stream: str = DEFAULT_STREAM,
    results_stream: str = DEFAULT_RESULTS_STREAM,
    dead_letters: Optional[str] = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    timeout: Optional[float] = None,
    poll: float = 0.25,
) -> AsyncIterator[Outcome]:
    """Each task's outcome as it ends: its result, or its dead-letter error.

    :param stream: the task stream; its dead-letter stream (``<stream>:dead`` unless
        ``dead_letters`` names another) is watched for tasks that will have no result.
    :param timeout: seconds to wait in all; ``None`` waits as long as it takes.
    :raises WaitTimeout: ``timeout`` passed with tasks unfinished.
    :raises StoqException: Redis cannot be reached.
    """
    remaining = dict.fromkeys(task_ids)
    total = len(remaining)
    dead = dead_letters or dead_letter_stream(stream)
    loop = asyncio.get_running_loop()
    until = None if timeout is None else loop.time() + timeout
    client = connect(url, password)
    dead_cursor = "-"
    try:
        while remaining:
            for outcome in await _finished(
                client, url, list(remaining), key_prefix, results_stream
            ):
                if outcome.task_id in remaining:
                    del remaining[outcome.task_id]
                    yield outcome
            while remaining:
                buried: Any = await _run(
                    functools.partial(client.xrange, dead, min=dead_cursor, count=1000), url
                )
                if not buried:
                    break
                for entry_id, fields in buried:
                    dead_cursor = f"({text(entry_id)}"
                    # Any message can be dead-lettered, bytes that are not text included.
                    task_id = text(fields.get(b"task_id", b""), lenient=True)
                    if task_id in remaining:
                        del remaining[task_id]
                        error = text(fields.get(b"error", b"dead-lettered"), lenient=True)
                        yield Outcome(task_id, None, error)
            if not remaining:
                return
            if until is not None and loop.time() >= until:
                assert timeout is not None
                raise WaitTimeout(len(remaining), total, timeout)
            await asyncio.sleep(poll)
    finally:
        await close(client)


async def _finished(
    client: redis.asyncio.Redis, url: str, task_ids: list[str], prefix: str, results_stream: str
) -> list[Outcome]:
    outcomes = []
    for start in range(0, len(task_ids), 1000):
        chunk = task_ids[start : start + 1000]
        keys = [result_key(prefix, task_id) for task_id in chunk]
        markers = await _run(functools.partial(client.mget, keys), url)
        done = []
        for task_id, key, marker in zip(chunk, keys, markers):
            if marker is None:
                continue
            # Anything may be written under a marker's key: one that does not name an entry is
            # that task's outcome, not the end of the others'.
            entry_id = text(marker, lenient=True)
            if _ENTRY_ID.fullmatch(entry_id):
                done.append((task_id, entry_id))
            else:
                why = f"its result marker {key} holds {show(marker)}, not a results-stream entry id"
                outcomes.append(Outcome(task_id, None, why))
        if not done:
            continue
        pipe = client.pipeline(transaction=False)
        for _, entry_id in done:
            pipe.xrange(results_stream, min=entry_id, max=entry_id, count=1)
        found = await _run(functools.partial(pipe.execute, raise_on_error=False), url)
        for (task_id, entry_id), entries in zip(done, found):
            if isinstance(entries, Exception):  # an id Redis refuses (its numbers too large)
                why = f"its result marker holds {entry_id!r}, which Redis refuses: {entries}"
                outcomes.append(Outcome(task_id, None, why))
                continue
            if not entries:
                outcomes.append(Outcome(task_id, None, "its result was trimmed from the stream"))
                continue
            try:
                outcomes.append(Outcome(task_id, _read_result(entries[0][1])))
            except _Unreadable as exc:
                why = f"results-stream entry {entry_id} cannot be read: {exc}"
                outcomes.append(Outcome(task_id, None, why))
    return outcomes


def _entries(reply: Any) -> list[Any]:
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return list(next(iter(reply.values()))[0])
    return list(reply[0][1])


async def _run(operation: Callable[[], Awaitable[T]], url: str, patience: float = _PATIENCE) -> T:
    try:
        reply = await retrying(operation, "reading results", log, patience)
    except redis.exceptions.RedisError as exc:
        raise StoqException(describe(exc, url)) from None
    task = asyncio.current_task()
    if task is not None and getattr(task, "cancelling", lambda: 0)():
        # Python 3.11's asyncio.wait_for, which redis-py sends commands with, loses a
        # cancellation that arrives as the send completes: Ctrl-C on 'stoq results --follow'
        # was then ignored. The task still counts it, so honour it here.
        raise asyncio.CancelledError
    return reply
