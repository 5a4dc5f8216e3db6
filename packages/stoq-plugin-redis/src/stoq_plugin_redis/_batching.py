"""Commands from concurrent scans sent together: one pipeline, one round trip, many results.

With ``provider_consumers`` scans saving and settling at once, each waiting its own round trip
would make Redis round trips, not scanning, the limit: every round trip costs the worker and
Redis a system call or two and a pass of their event loops. A ``Batcher`` collects the commands
issued while the event loop runs other tasks (results to write, messages to acknowledge) and
sends them as one pipeline; each caller still gets its own replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, Optional, TypeVar

import redis.asyncio

__all__ = ["Batcher", "Merged"]

T = TypeVar("T")

#: ``add(pipeline)``: queues one or more commands on the pipeline.
Adder = Callable[[Any], Any]


class Batcher:
    """Sends the commands queued while a pipeline is built or on its way together, in the next.

    One pipeline is in flight at a time, and the next is built only after the callers the last
    one answered have run: their next commands join it, so batches stay as large as the number
    of concurrent scans (a second pipeline in flight halved them and measured no faster).
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._queued: list[tuple[Adder, asyncio.Future[list[Any]]]] = []
        self._gathering = False  # a flush is scheduled and has not taken the queue yet
        self._in_flight = False
        self._flushing: Optional[asyncio.Future[None]] = None  # kept: a task is weakly held

    def submit(self, add: Adder) -> asyncio.Future[list[Any]]:
        """Have ``add(pipeline)`` queue its commands in the next pipeline sent.

        ``add`` is called when that pipeline is built, not now, so it may gather everything
        asked of it meanwhile into one command (as the consumer does with acknowledgements).

        :returns: a future of the replies of the commands ``add`` queued, in order; it raises
            the first error reply, or the error that stopped the whole pipeline.
        """
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append((add, future))
        self._schedule()
        return future

    async def call(self, add: Adder) -> Any:
        """``add(pipeline)`` queues exactly one command; returns its reply, or raises its error."""
        return (await self.submit(add))[0]

    def _schedule(self) -> None:
        if self._queued and not self._gathering and not self._in_flight:
            # A task: it first runs after the tasks ready now, which may queue more meanwhile.
            self._gathering = True
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        self._gathering = False
        batch, self._queued = self._queued, []
        self._in_flight = True
        try:
            await self._send(batch)
        finally:
            self._in_flight = False
            self._schedule()

    async def _send(self, batch: list[tuple[Adder, asyncio.Future[list[Any]]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        spans = []
        for add, future in batch:
            start = len(pipe)
            try:
                add(pipe)
            except Exception as exc:  # a bug in the caller: fail it, not the others
                future.set_exception(exc)
            spans.append((start, len(pipe)))
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), (start, end) in zip(batch, spans):
            if future.done():  # its caller was cancelled
                continue
            mine = replies[start:end]
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


class Merged(Generic[T]):
    """Requests of one kind that travel as one command per pipeline, each caller's item in it.

    Results written or messages acknowledged by concurrent scans become one EVALSHA or one XACK:
    Redis parses and runs one command instead of many, and the worker packs one.

    :param build: ``build(pipeline, items)`` queues the command for ``items`` (in order); its
        reply, if a list, is taken as one reply per item.
    """

    def __init__(self, batcher: Batcher, build: Callable[[Any, list[T]], Any]) -> None:
        self._batcher = batcher
        self._build = build
        self._items: list[T] = []
        self._sent: Optional[asyncio.Future[list[Any]]] = None

    async def __call__(self, item: T) -> Any:
        """Send ``item`` with the others of the next pipeline; returns its part of the reply.

        :raises: the command's error, or the error that stopped the whole pipeline.
        """
        index = len(self._items)
        self._items.append(item)
        if self._sent is None:
            self._sent = self._batcher.submit(self._add)
        # Shielded: a caller cancelled while waiting must not cancel the others' command.
        replies = await asyncio.shield(self._sent)
        reply = replies[0] if replies else None
        return reply[index] if isinstance(reply, list) else reply

    def _add(self, pipe: Any) -> None:
        items, self._items, self._sent = self._items, [], None
        self._build(pipe, items)
