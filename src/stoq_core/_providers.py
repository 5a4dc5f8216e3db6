"""``Stoq.run``: providers feed a bounded queue, consumers scan what it holds.

The providers' own failures are logged and counted, and the others go on; a provider that
refuses its configuration before queueing anything (a missing option) ends the run with that
error. Each queued item stands for one or more requests (a ``Payload``, a ``Request``, or
``{archiver: task}`` for a source archiver); ``QueueItem.on_done`` learns how they ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import attrs

from stoq_core._calls import PluginCalls, cut, interrupting, text_of
from stoq_core._manager import LoadedPlugin
from stoq_core.data_classes import (
    ArchiverResponse,
    Error,
    Payload,
    QueueItem,
    Request,
    RequestMeta,
    StoqResponse,
)
from stoq_core.exceptions import StoqException

if TYPE_CHECKING:
    from stoq_core._observe import Observer

__all__ = ["Providers", "RunStats"]


@attrs.define
class RunStats:
    """What ``Stoq.run`` has done so far."""

    ingested: int = 0  #: items the providers put on the queue
    scanned: int = 0  #: responses finished (saved by the connectors)
    with_errors: int = 0  #: of those, responses holding errors
    failed: int = 0  #: providers that raised and queued items that could not be scanned
    in_flight: int = 0  #: queued items being scanned now


class _CountingQueue(asyncio.Queue[Any]):
    """``run``'s queue, counting what the providers put on it."""

    def __init__(self, maxsize: int, stats: RunStats) -> None:
        super().__init__(maxsize)
        self._stats = stats

    def put_nowait(self, item: Any) -> None:  # ``put`` ends here too
        super().put_nowait(item)
        self._stats.ingested += 1


class Providers:
    """The provider loop of ``Stoq`` (a base class of it)."""

    # Set by Stoq.__init__.
    log: logging.Logger
    max_error_length: int
    _calls: PluginCalls
    max_queue: int
    provider_consumers: int
    _providers: dict[str, LoadedPlugin]
    _source_archivers: dict[str, LoadedPlugin]
    _observer: Optional[Observer]  # None unless metrics, traces or timings are on

    if TYPE_CHECKING:

        async def _scan_and_save(
            self, request: Request, add_start_dispatch: Optional[Sequence[str]]
        ) -> tuple[StoqResponse, list[Error]]: ...

    async def run(
        self,
        request_meta: Optional[RequestMeta] = None,
        add_start_dispatch: Optional[Sequence[str]] = None,
        *,
        stop: Optional[asyncio.Event] = None,
        on_response: Optional[Callable[[StoqResponse], object]] = None,
        stats: Optional[RunStats] = None,
    ) -> RunStats:
        """Scan what the providers queue until they have all finished and the queue is drained.

        Results leave through connectors (and ``on_response``, called with each response after
        the connectors have saved it).

        :param stop: when set, the providers are cancelled; what they queued is still scanned.
        :param stats: counters to update as the run goes (a status line can read them live).
        :returns: the counters.
        :raises StoqException: no provider is loaded.
        """
        if not self._providers:
            raise StoqException(
                "no provider plugins are loaded: name one with providers=[...] or -P"
            )
        stats = RunStats() if stats is None else stats
        queue: asyncio.Queue[Any] = _CountingQueue(self.max_queue, stats)
        providers = [
            asyncio.ensure_future(self._ingest(p, queue, stats)) for p in self._providers.values()
        ]
        consumers = [
            asyncio.ensure_future(
                self._consume(queue, request_meta, add_start_dispatch, stats, on_response)
            )
            for _ in range(max(1, self.provider_consumers))
        ]
        ingesting: asyncio.Future[Any] = asyncio.gather(*providers)
        waits: list[asyncio.Future[Any]] = [ingesting]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        observed = (
            contextlib.nullcontext()
            if self._observer is None
            else self._observer.running(queue, stats, len(consumers))
        )
        try:
            with observed:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for provider in providers:  # stopped: one in a thread is abandoned, not awaited
                    provider.cancel()
                await queue.join()
        finally:
            for future in (*providers, *consumers, *waits[1:]):
                future.cancel()
            await asyncio.gather(ingesting, *consumers, return_exceptions=True)
        refused = None if ingesting.cancelled() else ingesting.exception()
        if isinstance(refused, StoqException):
            raise refused  # see _ingest: a provider's configuration error, nothing was scanned
        return stats

    def _run_failed(
        self, stats: RunStats, message: str, exc: Optional[BaseException] = None
    ) -> None:
        stats.failed += 1
        self.log.error(message, exc_info=exc if self.log.isEnabledFor(logging.DEBUG) else None)

    async def _ingest(
        self, provider: LoadedPlugin, queue: asyncio.Queue[Any], stats: RunStats
    ) -> None:
        if self.log.isEnabledFor(logging.DEBUG):  # once per provider
            self.log.debug("provider %s: ingesting", provider.name)
        try:
            await provider.call("ingest", queue)
        except BaseException as exc:  # a provider's own SystemExit or CancelledError too
            if interrupting(exc) or isinstance(exc, GeneratorExit):
                raise
            if isinstance(exc, StoqException) and stats.ingested == 0:
                # Refused before anything was queued: its configuration is at fault (filedir
                # without source_dir), so ``run`` raises it, as for a plugin that cannot load.
                raise
            message = f"provider {provider.name} failed: {type(exc).__name__}: {text_of(exc)}"
            self._run_failed(stats, cut(message, self.max_error_length), exc)

    async def _consume(
        self,
        queue: asyncio.Queue[Any],
        request_meta: Optional[RequestMeta],
        add_start_dispatch: Optional[Sequence[str]],
        stats: RunStats,
        on_response: Optional[Callable[[StoqResponse], object]],
    ) -> None:
        while True:
            entry = await queue.get()
            item = entry.item if isinstance(entry, QueueItem) else entry
            meta = entry.request_meta if isinstance(entry, QueueItem) else None
            responses: list[StoqResponse] = []
            failures: list[Error] = []
            stats.in_flight += 1
            try:
                requests = await self._requests_from(item, meta or request_meta, stats, failures)
                for request in requests:
                    response, unsaved = await self._scan_and_save(request, add_start_dispatch)
                    failures.extend(unsaved)
                    responses.append(response)
                    stats.scanned += 1
                    stats.with_errors += bool(response.errors)
                    if on_response is not None:
                        on_response(response)
            except BaseException as exc:
                if interrupting(exc) or isinstance(exc, GeneratorExit):
                    stats.in_flight -= 1
                    queue.task_done()
                    raise
                message = cut(
                    f"scan of a queued {type(item).__name__} failed: {type(exc).__name__}: "
                    f"{text_of(exc)}",
                    self.max_error_length,
                )
                failures.append(Error(message))
                self._run_failed(stats, message, exc)
            try:
                if isinstance(entry, QueueItem) and entry.on_done is not None:
                    done = entry.on_done(responses, failures)
                    if inspect.isawaitable(done):
                        await done
            except BaseException as exc:  # a provider's callback: its failure, not the run's
                if interrupting(exc) or isinstance(exc, GeneratorExit):
                    raise
                message = f"on_done of a queued item failed: {type(exc).__name__}: {text_of(exc)}"
                self._run_failed(stats, cut(message, self.max_error_length), exc)
            finally:
                stats.in_flight -= 1
                queue.task_done()

    async def _requests_from(
        self,
        item: Any,
        request_meta: Optional[RequestMeta],
        stats: RunStats,
        failures: list[Error],
    ) -> list[Request]:
        """The requests a queue item stands for: a Payload, a Request, or {archiver: task}.

        A task a source archiver cannot load is counted, logged and added to ``failures``.
        """
        if isinstance(item, Payload):
            return [Request([item], fresh_meta(request_meta))]
        if isinstance(item, Request):
            if request_meta is not None and item.request_meta.is_default():
                item.request_meta = fresh_meta(request_meta)
            return [item]
        if not isinstance(item, dict):
            raise StoqException(
                f"a provider queued a {type(item).__name__}; expected Payload, Request, dict "
                "or QueueItem"
            )
        requests = []
        for archiver_name, task in item.items():
            archiver = self._source_archivers.get(archiver_name)
            if archiver is None:
                loaded = ", ".join(self._source_archivers) or "none"
                why = f"source archiver {archiver_name!r} is not loaded (loaded: {loaded})"
            else:
                errors: list[Error] = []
                payload = await self._calls.call(archiver, "get", (ArchiverResponse(task),), errors)
                if isinstance(payload, Payload):
                    requests.append(Request([payload], fresh_meta(request_meta)))
                    continue
                why = errors[0].error if errors else f"get returned {type(payload).__name__}"
            failures.append(Error(f"cannot load {task!r}: {why}", archiver_name))
            self._run_failed(stats, f"queued task for {archiver_name!r} not scanned: {why}")
        return requests


def fresh_meta(request_meta: Optional[RequestMeta]) -> RequestMeta:
    """A copy per request, so one scan's plugins cannot change the next one's metadata."""
    if request_meta is None:
        return RequestMeta()
    return attrs.evolve(request_meta, extra_data=dict(request_meta.extra_data))
