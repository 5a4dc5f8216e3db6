"""One member of a Redis Streams consumer group: what it reads, holds, acknowledges or gives up.

The guarantees rest on the group's pending list (PEL): a message read is pending on this consumer
until it is acknowledged, whatever happens to this process. So:

- a message is acknowledged only once its result is saved by every connector (``ack``, called
  from the provider's ``QueueItem.on_done``); a failure records the error and leaves it pending
  (``fail``);
- a message pending on any consumer for ``claim_idle`` seconds is taken over (XAUTOCLAIM), which
  counts one more delivery; one delivered more than ``max_deliveries`` times is moved, with its
  last error, to the dead-letter stream and acknowledged there, in one script;
- while this consumer holds a message, a heartbeat (XCLAIM ... JUSTID, which does not count a
  delivery) keeps it from looking idle, so a slow scan is not taken over by another consumer;
- at most ``max_inflight`` messages are held at once: once full, reading waits until half of them
  are settled, so that each XREADGROUP brings many.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Optional

import attrs
import redis.asyncio
import redis.exceptions

from stoq_plugin_redis._batching import Batcher
from stoq_plugin_redis._connection import RETRYABLE, is_outage, retrying
from stoq_plugin_redis._messages import (
    DEAD_LETTER_SCRIPT,
    MAX_COPY_BYTES,
    MAX_COPY_FIELDS,
    MAX_NAME,
    errors_key,
    text,
)

__all__ = ["Delivery", "StreamConsumer"]

# How long acknowledging or recording a failure waits for Redis before leaving the message to
# be delivered again (its result, if saved, is not written twice).
_SETTLE_PATIENCE = 60.0

_ERROR_LIMIT = 4000  # characters of an error kept in Redis


@attrs.define
class Delivery:
    """A message handed out by the consumer, which holds it until it is settled."""

    id: str
    fields: Mapping[bytes, bytes]
    deliveries: int  #: how many times the group has delivered it, this time included


@attrs.define(eq=False)
class StreamConsumer:
    """Reads ``stream`` as ``consumer`` of ``group``; see the module's docstring."""

    client: redis.asyncio.Redis
    stream: str
    group: str
    consumer: str
    dead_letter_stream: str
    log: logging.Logger
    claim_idle: float = 60.0
    max_deliveries: int = 3
    max_inflight: int = 64
    processing_timeout: float = 900.0
    delete_acked: bool = True
    #: sends the acknowledgements; by default a batcher of its own
    batcher: Batcher = attrs.field(
        default=attrs.Factory(lambda self: Batcher(self.client), takes_self=True)
    )
    # message id -> (when it was handed out, its delivery count)
    _held: dict[str, tuple[float, int]] = attrs.field(init=False, factory=dict)
    #: set when the provider stops reading: the last scans then wait for their acknowledgements
    closed: bool = attrs.field(init=False, default=False)
    _unacked: list[str] = attrs.field(init=False, factory=list)
    _acking: Optional[asyncio.Future[None]] = attrs.field(init=False, default=None)
    _room: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)
    _claim_cursor: str = attrs.field(init=False, default="0-0")
    _bury: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._bury = self.client.register_script(DEAD_LETTER_SCRIPT)

    @property
    def _errors(self) -> str:
        return errors_key(self.stream)

    # -- reading ---------------------------------------------------------------------------

    async def deliveries(self, stop_when_idle: float = 0.0) -> AsyncIterator[Delivery]:
        """Messages to process, new ones and ones taken over from idle consumers, held until settled.

        :param stop_when_idle: return once nothing new has come, nothing is held and nothing is
            pending in the group for this many seconds; 0 never returns.
        """
        loop = asyncio.get_running_loop()
        await retrying(self._create_group, f"creating group {self.group}", self.log)
        heartbeat = asyncio.ensure_future(self._heartbeat())
        claim_every = max(0.05, self.claim_idle / 2)
        block = max(0.01, min(1.0, claim_every, stop_when_idle / 4 if stop_when_idle else 1.0))
        idle_since: Optional[float] = None
        next_claim = 0.0  # take over what dead consumers left at once, not after claim_every
        pause = 0.1
        try:
            while True:
                free = await self._room_for_more()
                try:
                    got: list[Delivery] = []
                    if loop.time() >= next_claim:
                        next_claim = loop.time() + claim_every
                        got = await self._reclaim(free)
                    if len(got) < free:
                        got.extend(await self._read_new(free - len(got), int(block * 1000)))
                    pause = 0.1
                except RETRYABLE as exc:
                    if not is_outage(exc):
                        raise
                    self.log.warning("Redis unreachable (%s); retrying in %.1f s", exc, pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    idle_since = None
                    continue
                except redis.exceptions.ResponseError as exc:
                    if not _group_gone(exc):
                        raise
                    # Redis came back without its data (no persistence), or the stream or group
                    # was deleted: start the group again.
                    self.log.warning(
                        "group %s of %s is gone; creating it again", self.group, self.stream
                    )
                    await retrying(self._create_group, f"creating group {self.group}", self.log)
                    continue
                now = loop.time()
                for delivery in got:
                    self._held[delivery.id] = (now, delivery.deliveries)
                    yield delivery
                if got or self._held:
                    idle_since = None
                elif stop_when_idle > 0:
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= stop_when_idle and await self._drained():
                        await self._leave()
                        return
        finally:
            heartbeat.cancel()

    async def _create_group(self) -> None:
        try:
            # From the stream's start: tasks submitted before any worker existed are read too.
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _room_for_more(self) -> int:
        # Once full, wait until half the messages are settled: a read per settled message
        # would cost a round trip each, while the other half keeps the scans busy meanwhile.
        if len(self._held) < self.max_inflight:
            return self.max_inflight - len(self._held)
        while len(self._held) > self.max_inflight // 2:
            self._room.clear()
            await self._room.wait()
        return self.max_inflight - len(self._held)

    async def _read_new(self, count: int, block_ms: int) -> list[Delivery]:
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return [Delivery(text(mid), fields, 1) for mid, fields in entries if fields is not None]

    async def _reclaim(self, count: int) -> list[Delivery]:
        """Take over messages idle for ``claim_idle`` (on any consumer); bury the overdelivered."""
        reply: Any = await self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=int(self.claim_idle * 1000),
            start_id=self._claim_cursor,
            count=count,
        )
        self._claim_cursor = text(reply[0])
        claimed = [(text(mid), fields) for mid, fields in reply[1]]
        claimed = [(mid, fields) for mid, fields in claimed if mid not in self._held]
        if not claimed:
            return []
        pipe = self.client.pipeline(transaction=False)
        for mid, _ in claimed:
            pipe.xpending_range(self.stream, self.group, min=mid, max=mid, count=1)
            pipe.hget(self._errors, mid)
        replies = await pipe.execute()
        taken = []
        for index, (mid, fields) in enumerate(claimed):
            pending, last_error = replies[2 * index], replies[2 * index + 1]
            if not pending:
                continue  # settled by its previous holder meanwhile
            if fields is None:  # deleted from the stream while pending (Redis 6.2 reports it)
                await self.client.xack(self.stream, self.group, mid)
                continue
            delivery = Delivery(mid, fields, int(pending[0]["times_delivered"]))
            if delivery.deliveries > self.max_deliveries:
                # Lenient: the errors hash is anyone's to write, and this read must not die of it.
                error = text(last_error, lenient=True) if last_error else _NO_ERROR
                try:
                    await self._dead_letter_now(delivery, error)
                except RETRYABLE:
                    raise  # an outage: the read loop waits it out
                except Exception as exc:
                    # Not this reader's to die of: the message stays pending, tried again later.
                    self.log.error("could not dead-letter message %s: %s", mid, exc)
            else:
                self.log.info(
                    "took over message %s (delivery %d of %d)",
                    mid,
                    delivery.deliveries,
                    self.max_deliveries,
                )
                taken.append(delivery)
        return taken

    async def _drained(self) -> bool:
        try:
            summary = await self.client.xpending(self.stream, self.group)
        except RETRYABLE:
            return False
        except redis.exceptions.ResponseError as exc:
            if not _group_gone(exc):
                raise
            return False  # deleted since the last read, which the next one makes again
        return int(summary["pending"]) == 0

    async def _leave(self) -> None:
        # Deleting a consumer deletes its pending messages too: only leave with none.
        try:
            mine = await self.client.xpending_range(
                self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not mine:
                await self.client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.exceptions.RedisError as exc:
            self.log.debug("could not leave group %s: %s", self.group, exc)

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        every = max(0.02, self.claim_idle / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await self._beat(loop.time())
            except redis.exceptions.RedisError as exc:
                # The next beat tries again; the read loop reports an outage.
                self.log.debug("heartbeat failed: %s", exc)

    async def _beat(self, now: float) -> None:
        for mid, (since, _) in list(self._held.items()):
            if now - since > self.processing_timeout:
                await self.fail(
                    mid, f"not finished within processing_timeout ({self.processing_timeout:g} s)"
                )
        held: list[Any] = list(self._held)
        if not held:
            return
        # JUSTID: resets the idle time without counting a delivery.
        await self.client.xclaim(self.stream, self.group, self.consumer, 0, held, justid=True)

    # -- settling --------------------------------------------------------------------------

    def ack(self, message_id: str) -> None:
        """The message is done: acknowledge it (and delete it, with ``delete_acked``), soon.

        Returns at once. The acknowledgements asked for while a pipeline is on its way go
        together in the next one, as one XACK (and one XDEL), beside the results being written;
        the message is held (counted in ``max_inflight``) until then. ``drain`` waits for them.
        """
        self._unacked.append(message_id)
        if self._acking is None:
            self._acking = asyncio.ensure_future(self._send_acks())

    async def drain(self) -> None:
        """Wait until every acknowledgement asked for has been sent (or given up)."""
        while self._acking is not None:
            # Shielded: a caller cancelled while waiting must not stop the acknowledgements.
            await asyncio.shield(self._acking)

    async def _send_acks(self) -> None:
        pause, failing_since = 0.1, None
        try:
            while self._unacked:
                taken: list[str] = []
                try:
                    await self.batcher.submit(functools.partial(self._take_acks, taken))
                except redis.exceptions.RedisError as exc:
                    loop_time = asyncio.get_running_loop().time()
                    failing_since = failing_since if failing_since is not None else loop_time
                    if is_outage(exc) and loop_time - failing_since + pause <= _SETTLE_PATIENCE:
                        self.log.warning(
                            "acknowledging %d message(s): Redis unreachable (%s); retrying in "
                            "%.1f s",
                            len(taken),
                            exc,
                            pause,
                        )
                        self._unacked[:0] = taken
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, 5.0)
                        continue
                    self.log.error(
                        "could not acknowledge %d message(s) (%s): they will be delivered again",
                        len(taken),
                        exc,
                    )
                pause, failing_since = 0.1, None
                for mid in taken:
                    self._release(mid)
        finally:
            self._acking = None

    def _take_acks(self, taken: list[str], pipe: Any) -> None:
        # Called when the pipeline is built: everything settled until then goes in it.
        taken.extend(self._unacked)
        self._unacked.clear()
        self._add_acks(pipe, taken)

    def _add_acks(self, pipe: Any, ids: list[str]) -> None:
        """Queue the acknowledgement of ``ids``, every message settled since the last pipeline."""
        pipe.xack(self.stream, self.group, *ids)
        if self.delete_acked:
            pipe.xdel(self.stream, *ids)
        # Only a message delivered before can have an error recorded against it.
        redelivered = [mid for mid in ids if self._held.get(mid, _UNKNOWN)[1] > 1]
        if redelivered:
            pipe.hdel(self._errors, *redelivered)

    async def fail(self, message_id: str, error: str) -> None:
        """Processing failed: keep ``error`` as its last error, leave it pending for redelivery."""
        self.log.warning(
            "message %s failed: %s; it stays pending for redelivery after %g s",
            message_id,
            error,
            self.claim_idle,
        )
        try:
            await retrying(
                lambda: self.client.hset(self._errors, message_id, error[:_ERROR_LIMIT]),
                f"recording the error of {message_id}",
                self.log,
                _SETTLE_PATIENCE,
            )
        except redis.exceptions.RedisError as exc:
            self.log.error("could not record the error of message %s: %s", message_id, exc)
        finally:
            self._release(message_id)

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Processing can never succeed: move the message to the dead-letter stream now.

        If Redis refuses (or cannot be reached for a while), the message stays pending and is
        dead-lettered by whichever consumer takes it over ``max_deliveries`` times.
        """
        try:
            await retrying(
                lambda: self._dead_letter_now(delivery, error),
                f"dead-lettering {delivery.id}",
                self.log,
                _SETTLE_PATIENCE,
            )
        except redis.exceptions.RedisError as exc:
            self.log.error("could not dead-letter message %s: %s", delivery.id, exc)
        finally:
            self._release(delivery.id)

    async def _dead_letter_now(self, delivery: Delivery, error: str) -> None:
        entry: list[tuple[str, Any]] = [
            ("error", error[:_ERROR_LIMIT]),
            ("deliveries", str(delivery.deliveries)),
            ("message_id", delivery.id),
            ("stream", self.stream),
            ("group", self.group),
            ("consumer", self.consumer),
        ]
        size = sum(len(key) + len(value) for key, value in delivery.fields.items())
        copy = len(delivery.fields) <= MAX_COPY_FIELDS and size <= MAX_COPY_BYTES
        if not copy:
            # The entry still names the task, so that a submitter waiting for it hears of it.
            task_id = delivery.fields.get(b"task_id")
            if isinstance(task_id, bytes) and len(task_id) <= MAX_NAME * 4:
                entry.insert(0, ("task_id", task_id))
            entry.append(
                (
                    "kept",
                    f"the message ({size} bytes in {len(delivery.fields)} fields) is too large "
                    f"to copy: it stays in {self.stream} under its message_id",
                )
            )
        args: list[Any] = [
            self.group,
            delivery.id,
            "1" if self.delete_acked else "0",
            MAX_COPY_FIELDS if copy else 0,
        ]
        for field, value in entry:
            args.extend((field, value))
        moved = await self._bury(
            keys=[self.stream, self.dead_letter_stream, self._errors], args=args
        )
        if moved:
            self.log.error(
                "message %s moved to %s (delivery %d): %s",
                delivery.id,
                self.dead_letter_stream,
                delivery.deliveries,
                error,
            )

    def forget(self, message_id: str) -> None:
        """Stop holding the message without settling it: it stays pending, for redelivery."""
        self._release(message_id)

    def _release(self, message_id: str) -> None:
        if self._held.pop(message_id, None) is not None:
            self._room.set()


def _group_gone(exc: redis.exceptions.ResponseError) -> bool:
    """Whether Redis refused a command because the group, or the whole stream, is gone."""
    # redis-py has no class for these: the error code is all there is. NOGROUP: no such group
    # (or stream). UNBLOCKED: the stream was deleted while an XREADGROUP waited on it (Redis 7).
    message = str(exc)
    return "NOGROUP" in message or "UNBLOCKED" in message


# A message no longer held: its delivery count is unknown, so count it as delivered before.
_UNKNOWN = (0.0, 2)

_NO_ERROR = (
    "no error was recorded: the worker processing it probably crashed or was killed "
    "(or it was not acknowledged within claim_idle)"
)
