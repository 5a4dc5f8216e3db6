"""The ``redis`` plugin: a Redis Streams work queue, results store and payload store.

One class plays three roles, each chosen by where the user names it:

- provider (``-P redis``): reads task messages from ``stream`` as a member of the consumer group
  ``group`` and queues each as a request;
- connector (``-C redis``): writes each response to ``results_stream``, once per task id;
- archiver (``-A redis`` / ``-S redis``): keeps payload bytes under their sha256.

The provider queues each message as a ``QueueItem`` whose ``on_done`` settles it: once the core
has handed the response to every connector (whichever they are) and none failed, the message is
acknowledged; otherwise its error is recorded and it stays pending for redelivery. See the README
for what happens on every kind of failure.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, Optional

import redis.asyncio
import redis.exceptions

from stoq_core import (
    ArchiverResponse,
    Error,
    Option,
    Payload,
    QueueItem,
    Request,
    StoqConfigParser,
    StoqException,
    StoqPluginException,
    StoqResponse,
)
from stoq_core.helpers import dumps
from stoq_core.plugins import ArchiverPlugin, ConnectorPlugin, ProviderPlugin
from stoq_plugin_redis._batching import Batcher, Merged
from stoq_plugin_redis._connection import RETRYABLE, check_url, connect, retrying
from stoq_plugin_redis._consumer import Delivery, StreamConsumer
from stoq_plugin_redis._messages import (
    DEFAULT_GROUP,
    DEFAULT_KEY_PREFIX,
    DEFAULT_RESULTS_STREAM,
    DEFAULT_STREAM,
    DEFAULT_URL,
    MESSAGE_ID_KEY,
    STREAM_KEY,
    TASK_ID_KEY,
    WRITE_RESULTS_SCRIPT,
    WRITE_RESULTS_SHA,
    MalformedTask,
    check_sha256,
    dead_letter_stream,
    decode_task,
    payload_key,
    result_key,
)

__all__ = ["RedisPlugin"]

# How long a save or an archive waits for an unreachable Redis before failing (the message is
# then delivered again later, so nothing is lost by giving up).
_PATIENCE = 60.0


class _NotStored(Exception):
    """The archiver has no payload under that sha256."""


class _TooLarge(Exception):
    """The payload stored under that sha256 is larger than ``max_payload_size``."""


class RedisPlugin(ProviderPlugin, ConnectorPlugin, ArchiverPlugin):
    """Queue tasks, save results and keep payloads in Redis.

    Options (``--plugin-opts redis:KEY=VALUE`` or a ``[redis]`` section of stoq.cfg):

    - ``url``: ``redis://``, ``rediss://`` or ``unix://`` (default ``redis://127.0.0.1:6379/0``);
    - ``password``: else the URL's, else ``$STOQ_REDIS_PASSWORD``, else ``$REDIS_PASSWORD``;
    - ``stream`` (``stoq:tasks``), ``group`` (``stoq``), ``consumer`` (``host:pid``);
    - ``max_inflight`` (64): messages held unacknowledged at once by this worker;
    - ``claim_idle`` (60 s): a message pending that long on a consumer is taken over;
    - ``max_deliveries`` (3): deliveries before a message goes to ``dead_letter_stream``
      (``<stream>:dead``);
    - ``processing_timeout`` (900 s): a held message not settled by then is left for redelivery;
    - ``delete_acked`` (true): delete a message from ``stream`` once acknowledged;
    - ``stop_when_idle`` (0): return after this many seconds with no work (0: run forever);
    - ``max_payload_size`` (256 MiB, as ``[core] max_payload_size``): a task whose payload is
      larger is dead-lettered unscanned;
    - ``results_stream`` (``stoq:results``), ``result_ttl`` (0 s: keep), ``results_maxlen``
      (0: unbounded);
    - ``key_prefix`` (``stoq``): of ``<prefix>:payload:<sha256>`` and ``<prefix>:result:<task>``;
    - ``ttl`` (0 s: keep): lifetime of payloads the archiver stores.
    """

    options = (
        Option("url", str, DEFAULT_URL, "redis://, rediss:// or unix:// URL of the server"),
        Option(
            "password",
            str,
            None,
            "else the URL's, else $STOQ_REDIS_PASSWORD, else $REDIS_PASSWORD",
        ),
        Option("stream", str, DEFAULT_STREAM, "the stream tasks are read from"),
        Option("group", str, DEFAULT_GROUP, "the consumer group the workers share"),
        Option("consumer", str, None, "this worker's name in the group (host:pid if unset)"),
        Option(
            "dead_letter_stream",
            str,
            None,
            "where undeliverable tasks go (<stream>:dead if unset)",
        ),
        Option("results_stream", str, DEFAULT_RESULTS_STREAM, "the stream results go to"),
        Option("key_prefix", str, DEFAULT_KEY_PREFIX, "prefix of payload and result keys"),
        Option("max_inflight", int, 64, "messages held unacknowledged at once by this worker"),
        Option("max_deliveries", int, 3, "deliveries before a message is dead-lettered"),
        Option("claim_idle", float, 60.0, "seconds pending on a consumer before a takeover"),
        Option(
            "processing_timeout",
            float,
            900.0,
            "seconds a held message may stay unsettled before it is left for redelivery",
        ),
        Option("stop_when_idle", float, 0.0, "return after this many idle seconds (0: never)"),
        Option("delete_acked", bool, True, "delete a message from stream once acknowledged"),
        Option(
            "max_payload_size",
            int,
            256 << 20,
            "bytes a task's payload may have; a larger one is dead-lettered unscanned",
        ),
        Option("result_ttl", int, 0, "seconds a result is kept (0: keep)"),
        Option("results_maxlen", int, 0, "entries results_stream keeps (0: unbounded)"),
        Option("ttl", int, 0, "seconds a stored payload is kept (0: keep)"),
    )

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        options = _Options(config, self.plugin_name)
        try:
            self.url: str = check_url(options.text("url", DEFAULT_URL))
        except StoqException as exc:
            raise StoqPluginException(f"plugin {self.plugin_name!r}: {exc}") from None
        self.password: Optional[str] = options.text("password", "") or None
        self.stream = options.text("stream", DEFAULT_STREAM)
        self.group = options.text("group", DEFAULT_GROUP)
        self.consumer = options.text("consumer", f"{socket.gethostname()}:{os.getpid()}")
        self.dead_letter_stream = options.text(
            "dead_letter_stream", dead_letter_stream(self.stream)
        )
        self.results_stream = options.text("results_stream", DEFAULT_RESULTS_STREAM)
        self.key_prefix = options.text("key_prefix", DEFAULT_KEY_PREFIX)
        self.max_inflight = options.integer("max_inflight", 64, minimum=1)
        self.max_deliveries = options.integer("max_deliveries", 3, minimum=1)
        self.claim_idle = options.number("claim_idle", 60.0, minimum=0.01)
        self.processing_timeout = options.number("processing_timeout", 900.0, minimum=0.01)
        self.stop_when_idle = options.number("stop_when_idle", 0.0, minimum=0.0)
        self.delete_acked = options.boolean("delete_acked", True)
        self.max_payload_size = options.integer("max_payload_size", 256 << 20, minimum=0)
        self.result_ttl = options.integer("result_ttl", 0, minimum=0)
        self.results_maxlen = options.integer("results_maxlen", 0, minimum=0)
        self.ttl = options.integer("ttl", 0, minimum=0)
        self._redis: Optional[redis.asyncio.Redis] = None
        self._redis_loop: Optional[asyncio.AbstractEventLoop] = None
        self._batcher: Optional[Batcher] = None
        self._writes: Optional[Merged[tuple[str, str]]] = None

    def _client(self) -> redis.asyncio.Redis:
        # A redis.asyncio client belongs to the event loop it first ran in; a Stoq object may
        # be driven by several asyncio.run calls in turn, so keep one client per loop.
        loop = asyncio.get_running_loop()
        if self._redis is None or self._redis_loop is not loop:
            self._redis = connect(self.url, self.password)
            self._redis_loop = loop
            self._batcher = Batcher(self._redis)
            self._writes = Merged(self._batcher, self._add_writes)
        return self._redis

    # -- provider --------------------------------------------------------------------------

    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        """Queue an item per task message until ``stop_when_idle`` (or forever)."""
        client = self._client()
        assert self._batcher is not None
        consumer = StreamConsumer(
            client,
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            dead_letter_stream=self.dead_letter_stream,
            log=self.log,
            claim_idle=self.claim_idle,
            max_deliveries=self.max_deliveries,
            max_inflight=self.max_inflight,
            processing_timeout=self.processing_timeout,
            delete_acked=self.delete_acked,
            # The connector's batcher: acknowledgements travel with the results being written.
            batcher=self._batcher,
        )
        self.log.info(
            "reading %s as %s of group %s (max_inflight %d)",
            self.stream,
            self.consumer,
            self.group,
            self.max_inflight,
        )
        try:
            async for delivery in consumer.deliveries(self.stop_when_idle):
                try:
                    item = await self._queue_item(delivery, consumer)
                except Exception as exc:
                    # One message must never stop the reading of those behind it (#12): what
                    # went wrong is its error, and it is delivered again or dead-lettered.
                    debug = self.log.isEnabledFor(logging.DEBUG)
                    self.log.error("queueing message %s failed", delivery.id, exc_info=debug)
                    await consumer.fail(delivery.id, f"queueing it failed: {_describe(exc)}")
                    continue
                if item is None:
                    continue
                try:
                    await queue.put(item)
                except asyncio.CancelledError:
                    consumer.forget(delivery.id)  # never queued: it is delivered again
                    raise
        finally:
            # Stopped (or done): the scans still running settle their messages after this, and
            # must then wait for their acknowledgements; those already asked for are sent now.
            consumer.closed = True
            await consumer.drain()

    async def _queue_item(
        self, delivery: Delivery, consumer: StreamConsumer
    ) -> Optional[QueueItem]:
        """What a message stands for, settled by ``_settle``; None if it was settled here."""
        try:
            task = decode_task(delivery.fields, self.max_payload_size)
            sha256 = None
            if task.content is None and task.archiver == self.plugin_name:
                sha256 = check_sha256((task.archiver_task or {}).get("sha256"))
        except MalformedTask as exc:
            # Delivering it again cannot fix it.
            await consumer.dead_letter(delivery, f"malformed task message: {exc}")
            return None
        except Exception as exc:
            # decode_task's own bug, met by this message: decoding it again would meet it again.
            await consumer.dead_letter(
                delivery, f"malformed task message: decoding it failed: {_describe(exc)}"
            )
            return None
        extra_data = task.request_meta.extra_data
        extra_data[TASK_ID_KEY] = task.task_id
        extra_data[MESSAGE_ID_KEY] = delivery.id
        extra_data[STREAM_KEY] = self.stream
        on_done = functools.partial(self._settle, consumer, delivery.id)
        content = task.content
        if sha256 is not None:
            # Loaded here rather than by the core so that a missing payload is this message's
            # error, retried and dead-lettered like any other, without -S redis being named.
            try:
                content = await self._load(sha256)
            except _TooLarge as exc:
                await consumer.dead_letter(delivery, f"loading the payload failed: {exc}")
                return None
            except _LOAD_FAILURES as exc:
                await consumer.fail(delivery.id, f"loading the payload failed: {exc}")
                return None
        if content is None:
            # Another plugin's archiver loads it; the core gives its request this metadata.
            return QueueItem({str(task.archiver): task.archiver_task}, task.request_meta, on_done)
        request = Request([Payload(content, task.payload_meta)], task.request_meta)
        return QueueItem(request, None, on_done)

    async def _settle(
        self,
        consumer: StreamConsumer,
        message_id: str,
        responses: Sequence[StoqResponse],
        failures: Sequence[Error],
    ) -> None:
        """``QueueItem.on_done``: every connector has the result, or something failed on the way."""
        if not failures:
            consumer.ack(message_id)
            if consumer.closed:
                # The provider has stopped, so nothing waits for the acknowledgement: this scan
                # is among the last of the run, which must not end before it is sent.
                await consumer.drain()
            return
        reasons = "; ".join(
            f"{error.plugin_name}: {error.error}" if error.plugin_name else str(error.error)
            for error in failures
        )
        await consumer.fail(message_id, reasons)

    # -- connector -------------------------------------------------------------------------

    async def save(self, response: StoqResponse) -> None:
        """Write the response to ``results_stream``, unless its task id already has a result."""
        task_id = str(response.request_meta.extra_data.get(TASK_ID_KEY) or response.scan_id)
        written = await retrying(
            lambda: self._write(task_id, response),
            f"saving the result of task {task_id}",
            self.log,
            _PATIENCE,
        )
        if not written:
            self.log.info("task %s already has a result; not writing another", task_id)

    async def _write(self, task_id: str, response: StoqResponse) -> bool:
        self._client()
        writes = self._writes
        assert writes is not None
        item = (task_id, dumps(response.to_dict(), compactly=True))
        try:
            written = await writes(item)
        except redis.exceptions.NoScriptError:
            # First use, or Redis restarted without it: load it, then write once more.
            await self._client().script_load(WRITE_RESULTS_SCRIPT)
            written = await writes(item)
        return bool(written)

    def _add_writes(self, pipe: Any, items: list[tuple[str, str]]) -> None:
        """Queue one EVALSHA writing ``items`` (task id, result JSON), the saves of a pipeline."""
        keys = [self.results_stream]
        args: list[Any] = [self.result_ttl, self.results_maxlen]
        for task_id, result in items:
            keys.append(result_key(self.key_prefix, task_id))
            args.extend((task_id, result))
        # EVALSHA: Redis neither receives nor hashes the script's text for every call.
        pipe.evalsha(WRITE_RESULTS_SHA, len(keys), *keys, *args)

    # -- archiver --------------------------------------------------------------------------

    async def archive(self, payload: Payload, request: Request) -> ArchiverResponse:
        """Store the payload's bytes under ``<key_prefix>:payload:<sha256>``."""
        sha256 = payload.digest("sha256")
        content = payload.content if isinstance(payload.content, bytes) else bytes(payload.content)
        client = self._client()
        await retrying(
            lambda: client.set(payload_key(self.key_prefix, sha256), content, ex=self.ttl or None),
            f"archiving payload {sha256}",
            self.log,
            _PATIENCE,
        )
        return ArchiverResponse({"sha256": sha256})

    async def get(self, task: ArchiverResponse) -> Payload:
        """The payload ``archive`` stored; ``task.results`` is ``{"sha256": ...}``."""
        results = task.results if isinstance(task, ArchiverResponse) else task
        try:
            sha256 = check_sha256(results.get("sha256") if isinstance(results, dict) else None)
        except MalformedTask as exc:
            raise StoqPluginException(f"bad archiver task {results!r}: {exc}") from None
        try:
            return Payload(await self._load(sha256))
        except _TooLarge as exc:
            raise StoqPluginException(str(exc)) from None

    async def _load(self, sha256: str) -> bytes:
        """The payload stored under ``sha256``.

        :raises _NotStored: there is none.
        :raises _TooLarge: it is larger than ``max_payload_size`` (only that much is read).
        """
        client = self._client()
        key = payload_key(self.key_prefix, sha256)
        limit = self.max_payload_size

        async def load() -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.exists(key)
            # One byte past the limit: enough to know it is over, without reading all of it.
            pipe.getrange(key, 0, limit)
            return list(await pipe.execute())

        exists, content = await retrying(load, f"loading payload {sha256}", self.log, _PATIENCE)
        if not exists:
            raise _NotStored(f"no payload {sha256} in Redis (key {key}): expired or never stored")
        if len(content) > limit:
            raise _TooLarge(
                f"payload {sha256} (key {key}) is larger than max_payload_size ({limit} bytes)"
            )
        return bytes(content)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# Failures of loading a payload that another delivery may not meet; a payload key of the wrong
# type (WRONGTYPE) is a ResponseError, retried and then dead-lettered with it.
_LOAD_FAILURES: tuple[type[Exception], ...] = (
    _NotStored,
    redis.exceptions.ResponseError,
    *RETRYABLE,
)


class _Options:
    """Typed reads of the plugin's options, each bad value a one-line error naming the option."""

    def __init__(self, config: StoqConfigParser, plugin_name: str) -> None:
        self.config = config
        self.plugin_name = plugin_name

    def text(self, key: str, default: str) -> str:
        value = self.config.get("options", key, fallback=default)
        return default if value is None else str(value)

    def integer(self, key: str, default: int, minimum: int) -> int:
        return int(self._checked(key, default, minimum, self.config.getint, "a whole number"))

    def number(self, key: str, default: float, minimum: float) -> float:
        return float(self._checked(key, default, minimum, self.config.getfloat, "a number"))

    def boolean(self, key: str, default: bool) -> bool:
        try:
            return bool(self.config.getboolean("options", key, fallback=default))
        except ValueError:
            raise self._bad(key, "true or false") from None

    def _checked(self, key: str, default: Any, minimum: Any, getter: Any, kind: str) -> Any:
        try:
            value = getter("options", key, fallback=default)
        except ValueError:
            raise self._bad(key, kind) from None
        if value < minimum:
            raise self._bad(key, f"{kind} of at least {minimum:g}")
        return value

    def _bad(self, key: str, expected: str) -> StoqPluginException:
        value = self.config.get("options", key, fallback="")
        return StoqPluginException(
            f"plugin {self.plugin_name!r}: option {key} must be {expected}, not {value!r}"
        )
