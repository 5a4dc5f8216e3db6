"""The engine: ``Stoq`` routes payloads through dispatchers, workers, archivers, decorators and connectors.

The flow is stoQ v3's (see ``spec/v3-behaviour.md``): a request is scanned in rounds; in each
round every scannable payload gets the always-dispatch workers and whatever the dispatchers pick;
the workers of a round run concurrently; extracted payloads join the request and are scanned in
the next round, until no work is left or ``max_recursion`` rounds have run.

Every plugin call goes through ``_call``, which turns a raise into an ``Error`` naming the plugin
and the payload, so one failing plugin never stops a scan.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import time
import types
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from typing import Any, Optional, TypeVar, Union

import attrs

from stoq_core import _logging
from stoq_core._budget import (
    CURRENT_LEDGER,
    ExtractionBudget,
    ExtractionLimitExceeded,
    Ledger,
)
from stoq_core._manager import LoadedPlugin, PluginInfo, PluginManager
from stoq_core._watchdog import Watchdog
from stoq_core.config import StoqConfigParser, read_stoq_cfg
from stoq_core.data_classes import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    Error,
    ExtractedPayload,
    Payload,
    PayloadMeta,
    PayloadResults,
    QueueItem,
    Request,
    RequestMeta,
    StoqResponse,
    WorkerResponse,
    subresponse_results,
)
from stoq_core.exceptions import StoqException, StoqPluginException
from stoq_core.helpers import check_results

__all__ = ["RunStats", "Stoq"]

T = TypeVar("T")

_UNSET: Any = object()
_FAILED: Any = object()  # a plugin call that raised; its Error is already recorded

# [core] defaults, as v3 had them.
_DEFAULTS = {
    "max_queue": 100,
    "provider_consumers": 2,
    "max_recursion": 10,
    "max_required_worker_depth": 10,
    "log_level": "INFO",
    "log_maxbytes": 1500000,
    "log_backup_count": 5,
    "log_syntax": "text",
    "timeout": 600.0,
    "deadline": 0.0,
    "max_payloads": 10_000,
    "max_extracted_bytes": 1 << 30,
    "max_payload_size": 256 << 20,
    "max_result_size": 64 << 20,
}

# The hook each role calls, for the error raised when a named plugin cannot play its role.
_ROLE_HOOKS = {
    "providers": "ingest",
    "source_archivers": "get",
    "dest_archivers": "archive",
    "connectors": "save",
    "dispatchers": "get_dispatches",
    "decorators": "decorate",
    "always_dispatch": "scan",
}


@attrs.define
class RunStats:
    """What ``Stoq.run`` has done so far."""

    ingested: int = 0  #: items the providers put on the queue
    scanned: int = 0  #: responses finished (saved by the connectors)
    with_errors: int = 0  #: of those, responses holding errors
    failed: int = 0  #: providers that raised and queued items that could not be scanned


class _CountingQueue(asyncio.Queue[Any]):
    """``run``'s queue, counting what the providers put on it."""

    def __init__(self, maxsize: int, stats: RunStats) -> None:
        super().__init__(maxsize)
        self._stats = stats

    def put_nowait(self, item: Any) -> None:  # ``put`` ends here too
        super().put_nowait(item)
        self._stats.ingested += 1


class _DependencyError(Exception):
    """A worker's ``required_workers`` cannot be satisfied (cycle, depth, or not loadable)."""


class Stoq:
    """stoQ's engine. Arguments left ``None`` come from the ``[core]`` section of stoq.cfg.

    :param base_dir: defaults to the current directory.
    :param config_file: defaults to ``base_dir/stoq.cfg``, read only if it exists.
    :param log_dir: defaults to ``base_dir/logs``; ``None`` or blank disables the file log.
    :param log_level: ``DEBUG``, ``INFO`` (default), ``WARNING``, ...
    :param plugin_dir_list: v3 plugin directories; defaults to ``[base_dir/plugins]``.
    :param plugin_opts: ``{plugin_name: {option: value}}``, beating stoq.cfg.
    :param providers: provider plugins for ``run``.
    :param provider_consumers: concurrent scans in ``run`` (default 2).
    :param source_archivers: archivers that load payloads for ``run``.
    :param dest_archivers: archivers that save payloads after a scan.
    :param connectors: plugins that save each response.
    :param dispatchers: plugins that pick workers per payload.
    :param decorators: plugins that add to each finished response.
    :param always_dispatch: workers run on every payload, extracted ones included.
    :param max_queue: size of ``run``'s queue (default 100).
    :param max_recursion: scan rounds per request (default 10).
    :param max_required_worker_depth: longest ``required_workers`` chain (default 10).
    :param timeout: seconds one plugin call may take (default 600; 0: no limit). A plugin's own
        ``timeout`` option overrides it. See ``_call`` for what a timeout can stop.
    :param deadline: seconds a request's scan rounds may take in all (default 0: no limit); at
        the deadline the unfinished workers are abandoned and the response is built from the rest.
    :param max_payloads: payloads one request may hold (default 10000).
    :param max_extracted_bytes: bytes of extracted payloads one request may hold (default 1 GiB).
    :param max_payload_size: bytes one extracted payload may have (default 256 MiB).
    :param max_result_size: bytes of text one plugin's results may hold (default 64 MiB);
        results that are larger, or not made of JSON's types, are dropped with an ``Error``.

    Whatever a limit drops is reported as an ``Error`` naming the limit.
    """

    def __init__(
        self,
        base_dir: Optional[str] = None,
        config_file: Optional[str] = None,
        log_dir: Optional[str] = _UNSET,
        log_level: Optional[str] = None,
        plugin_dir_list: Optional[Sequence[str]] = None,
        plugin_opts: Optional[dict[str, dict[str, Any]]] = None,
        providers: Optional[Sequence[str]] = None,
        provider_consumers: Optional[int] = None,
        source_archivers: Optional[Sequence[str]] = None,
        dest_archivers: Optional[Sequence[str]] = None,
        connectors: Optional[Sequence[str]] = None,
        dispatchers: Optional[Sequence[str]] = None,
        decorators: Optional[Sequence[str]] = None,
        always_dispatch: Optional[Sequence[str]] = None,
        max_queue: Optional[int] = None,
        max_recursion: Optional[int] = None,
        max_required_worker_depth: Optional[int] = None,
        timeout: Optional[float] = None,
        deadline: Optional[float] = None,
        max_payloads: Optional[int] = None,
        max_extracted_bytes: Optional[int] = None,
        max_payload_size: Optional[int] = None,
        max_result_size: Optional[int] = None,
    ) -> None:
        self.base_dir = os.path.abspath(base_dir or os.getcwd())
        config_file = config_file or os.path.join(self.base_dir, "stoq.cfg")
        self._config = _read_config(config_file)

        def core(arg: Any, key: str, kind: str = "str") -> Any:
            # An argument beats the file, even a falsy one (v3 used ``arg or config``).
            if arg is not None:
                return arg
            getters: dict[str, Callable[..., Any]] = {
                "int": self._config.getint,
                "float": self._config.getfloat,
                "list": self._config.getlist,
            }
            getter = getters.get(kind, self._config.get)
            try:
                return getter(
                    "core", key, fallback=_DEFAULTS.get(key, [] if kind == "list" else None)
                )
            except ValueError as exc:
                raise StoqException(f"{config_file}: [core] {key}: {exc}") from None

        if log_dir is _UNSET:
            log_dir = self._config.get(
                "core", "log_dir", fallback=os.path.join(self.base_dir, "logs")
            )
        self.log = _logging.configure(
            core(log_level, "log_level"),
            log_dir or None,
            core(None, "log_maxbytes", "int"),
            core(None, "log_backup_count", "int"),
            core(None, "log_syntax"),
        )
        self.max_queue: int = core(max_queue, "max_queue", "int")
        self.provider_consumers: int = core(provider_consumers, "provider_consumers", "int")
        self.max_recursion: int = core(max_recursion, "max_recursion", "int")
        self.max_required_worker_depth: int = core(
            max_required_worker_depth, "max_required_worker_depth", "int"
        )
        self.timeout: float = core(timeout, "timeout", "float")
        self.deadline: float = core(deadline, "deadline", "float")
        self.max_payloads: int = core(max_payloads, "max_payloads", "int")
        self.max_extracted_bytes: int = core(max_extracted_bytes, "max_extracted_bytes", "int")
        self.max_payload_size: int = core(max_payload_size, "max_payload_size", "int")
        self.max_result_size: int = core(max_result_size, "max_result_size", "int")
        if plugin_dir_list is None:
            plugin_dir_list = self._config.getlist(
                "core", "plugin_dir_list", fallback=[os.path.join(self.base_dir, "plugins")]
            )
        self.plugin_dir_list = list(plugin_dir_list)
        self.plugins = PluginManager(self.plugin_dir_list, self._config, plugin_opts)

        self._providers = self._load_role("providers", core(providers, "providers", "list"))
        self._source_archivers = self._load_role(
            "source_archivers", core(source_archivers, "source_archivers", "list")
        )
        self._dest_archivers = self._load_role(
            "dest_archivers", core(dest_archivers, "dest_archivers", "list")
        )
        self._connectors = self._load_role("connectors", core(connectors, "connectors", "list"))
        self._dispatchers = self._load_role("dispatchers", core(dispatchers, "dispatchers", "list"))
        self._decorators = self._load_role("decorators", core(decorators, "decorators", "list"))
        self.always_dispatch: list[str] = list(
            dict.fromkeys(core(always_dispatch, "always_dispatch", "list"))
        )
        self._load_role("always_dispatch", self.always_dispatch)
        self._watchdog = Watchdog()
        self._simple_workers: dict[str, LoadedPlugin] = {}  # workers with no required_workers
        self._next_scan_at = 0.0
        self._ratelimit_lock: Optional[asyncio.Lock] = None

    # -- plugins ---------------------------------------------------------------------------

    def _load_role(self, role: str, names: Iterable[str]) -> dict[str, LoadedPlugin]:
        loaded = {}
        for name in names:
            plugin = self.plugins.load(name)
            hook = _ROLE_HOOKS[role]
            if hook not in plugin.hooks:
                raise StoqPluginException(
                    f"plugin {name!r} cannot be used in {role}: it does not implement {hook!r} "
                    f"(it implements {', '.join(plugin.hooks)})"
                )
            loaded[name] = plugin
        return loaded

    def load_plugin(self, plugin_name: str) -> Any:
        """The plugin object registered as ``plugin_name``, loading it if needed (once per ``Stoq``)."""
        return self.plugins.load(plugin_name).obj

    def list_plugins(self) -> dict[str, PluginInfo]:
        """Every available plugin (entry points and plugin directories), broken ones with their error."""
        return self.plugins.info()

    # -- scanning --------------------------------------------------------------------------

    async def scan(
        self,
        content: Union[bytes, str],
        payload_meta: Optional[PayloadMeta] = None,
        request_meta: Optional[RequestMeta] = None,
        add_start_dispatch: Optional[Sequence[str]] = None,
        ratelimit: Optional[str] = None,
    ) -> StoqResponse:
        """Scan ``content`` as a one-payload request.

        :param ratelimit: ``"COUNT/SECONDS"``: calls are spaced at least SECONDS/COUNT apart
            (an ``asyncio.sleep``; the event loop keeps running).
        """
        if ratelimit:
            await self._wait_ratelimit(ratelimit)
        request = Request([Payload(content, payload_meta)], request_meta)
        # Through scan_request, as in v3: a subclass that overrides it sees every scan.
        return await self.scan_request(request, add_start_dispatch)

    async def _wait_ratelimit(self, ratelimit: str) -> None:
        try:
            count, seconds = ratelimit.split("/")
            interval = float(seconds) / float(count)
        except ValueError:
            raise StoqException(
                f"ratelimit {ratelimit!r} is not COUNT/SECONDS, e.g. '10/1'"
            ) from None
        if self._ratelimit_lock is None:
            self._ratelimit_lock = asyncio.Lock()
        async with self._ratelimit_lock:
            now = time.monotonic()
            if self._next_scan_at > now:
                await asyncio.sleep(self._next_scan_at - now)
                now = self._next_scan_at
            self._next_scan_at = now + interval

    async def scan_request(
        self, request: Request, add_start_dispatch: Optional[Sequence[str]] = None
    ) -> StoqResponse:
        """Scan every payload of ``request`` and what they yield, then archive, decorate and save."""
        response, _ = await self._scan_and_save(request, add_start_dispatch)
        return response

    async def _scan_and_save(
        self, request: Request, add_start_dispatch: Optional[Sequence[str]]
    ) -> tuple[StoqResponse, list[Error]]:
        """``scan_request``'s work; also returns the errors of connectors that failed to save."""
        await _Scan(self, request, add_start_dispatch or ()).run()
        if self._dest_archivers and request.request_meta.archive_payloads:
            await self._archive(request)
        response = StoqResponse(request)
        # Checked here, not in the callees: a coroutine made only to return costs a little on
        # every scan, and most runs have no decorators or connectors.
        if self._decorators:
            await self._decorate(response)
        return response, (await self._save(response) if self._connectors else [])

    async def _archive(self, request: Request) -> None:
        calls = []
        for payload in request.payloads:
            if payload.results.payload_meta.should_archive:
                for archiver in self._dest_archivers.values():
                    calls.append((payload, archiver))
        outcomes = await self._call_each(
            [
                (archiver, "archive", (payload, request), request.errors, payload.results)
                for payload, archiver in calls
            ]
        )
        for (payload, archiver), outcome in zip(calls, outcomes):
            payload.results.plugins_run["archivers"].append(archiver.name)
            self._take(
                outcome,
                ArchiverResponse,
                archiver,
                request.errors,
                payload.results,
                payload.results.archivers,
            )

    async def _decorate(self, response: StoqResponse) -> None:
        decorators = list(self._decorators.values())
        outcomes = await self._call_each(
            [
                (decorator, "decorate", (response,), response.errors, None)
                for decorator in decorators
            ]
        )
        for decorator, outcome in zip(decorators, outcomes):
            self._take(
                outcome, DecoratorResponse, decorator, response.errors, None, response.decorators
            )

    async def _save(self, response: StoqResponse) -> list[Error]:
        """Every connector's ``save``; returns the errors of those that failed."""
        failed: list[Error] = []
        await self._call_each(
            [
                (connector, "save", (response,), failed, None)
                for connector in self._connectors.values()
            ]
        )
        response.errors.extend(failed)
        return failed

    def _take(
        self,
        outcome: Any,
        expected: type[Any],
        plugin: LoadedPlugin,
        errors: list[Error],
        about: Optional[PayloadResults],
        results: dict[str, Any],
    ) -> Any:
        """File a plugin's response: its results under its name, its errors in ``errors``.

        :returns: the response if it is of the ``expected`` type, else ``None``.
        """
        if outcome is None or outcome is _FAILED:
            return None
        if not isinstance(outcome, expected):
            errors.append(
                Error(
                    f"returned {type(outcome).__name__}, expected {expected.__name__} or None",
                    plugin.name,
                    _id(about),
                )
            )
            return None
        found = getattr(outcome, "results", None)
        if found is not None:
            problem = check_results(found, self.max_result_size)
            if problem is None:
                results[plugin.name] = found
            else:
                errors.append(Error(f"{problem}; results dropped", plugin.name, _id(about)))
        if outcome.errors:
            errors.extend(_errors(outcome.errors, plugin.name, about))
        return outcome

    async def _call(
        self,
        plugin: LoadedPlugin,
        hook: str,
        args: tuple[Any, ...],
        errors: list[Error],
        about: Optional[PayloadResults] = None,
        until: Optional[float] = None,
    ) -> Any:
        """Run one hook of one plugin within its time limits.

        A raise, or running past the plugin's ``timeout`` or the request's deadline (``until``,
        in event-loop time), becomes an ``Error`` and ``_FAILED`` is returned.
        """
        started = self._start(plugin, hook, args, errors, about)
        if type(started) is not _Waiting:
            return started
        return await self._finish(started, plugin, hook, errors, about, until)

    async def _call_each(
        self,
        calls: Sequence[
            tuple[LoadedPlugin, str, tuple[Any, ...], list[Error], Optional[PayloadResults]]
        ],
        until: Optional[float] = None,
        ledgers: Optional[Sequence[Ledger]] = None,
    ) -> list[Any]:
        """``_call`` for each ``(plugin, hook, args, errors, about)``: started one after another,
        the calls that wait then wait concurrently. ``ledgers``: one per call, for workers.

        What ``asyncio.gather`` over the ``_call``s would do, except that a call finishing
        without waiting (most do) costs no task: a round of 1,000 payloads would cost 1,000.
        """
        outcomes: list[Any] = []
        waiting: list[tuple[int, _Waiting]] = []
        try:
            for index, (plugin, hook, args, errors, about) in enumerate(calls):
                ledger = None if ledgers is None else ledgers[index]
                outcome = self._start(plugin, hook, args, errors, about, ledger)
                if type(outcome) is _Waiting:
                    waiting.append((len(outcomes), outcome))
                outcomes.append(outcome)
        except BaseException:
            for _, started in waiting:
                started.context.run(started.call.close)
            raise
        if waiting:
            finishing = []
            for index, started in waiting:
                plugin, hook, _, errors, about = calls[index]
                finishing.append(self._finish(started, plugin, hook, errors, about, until))
            for (index, _), outcome in zip(waiting, await _gather(finishing)):
                outcomes[index] = outcome
        return outcomes

    def _start(
        self,
        plugin: LoadedPlugin,
        hook: str,
        args: tuple[Any, ...],
        errors: list[Error],
        about: Optional[PayloadResults],
        ledger: Optional[Ledger] = None,
    ) -> Any:
        """Run a call up to its first real wait: its outcome, or ``_Waiting`` if it waits.

        Nothing watches the call until then (nothing could interrupt it before its first wait),
        and most calls (hashing, parsing) finish without waiting, so they never pay for the
        watchdog's running loop, task and clock lookups.
        """
        began = time.monotonic()
        # A context of its own, as the task asyncio.gather made per call gave it: what the
        # plugin sets in a ContextVar stays with this call, not the next plugin or the caller.
        context = contextvars.copy_context()
        if ledger is not None:  # a worker's call: what it extracts is charged to its ledger
            context.run(CURRENT_LEDGER.set, ledger)
        try:
            call = plugin.callers[hook](*args)
            waiting_on = context.run(call.send, None)
        except StopIteration as finished:
            return finished.value
        except Exception as exc:
            return self._failed(plugin, hook, exc, errors, about)
        return _Waiting(call, waiting_on, began, context)

    async def _finish(
        self,
        started: _Waiting,
        plugin: LoadedPlugin,
        hook: str,
        errors: list[Error],
        about: Optional[PayloadResults],
        until: Optional[float],
    ) -> Any:
        """Await a call ``_start`` left waiting, within its time limits (counted from its start)."""
        limit = plugin.timeout if plugin.timeout is not None else self.timeout
        if not limit and until is None:
            try:
                return await _carry_on(started)
            except Exception as exc:
                return self._failed(plugin, hook, exc, errors, about)
        watchdog = self._watchdog
        elapsed = time.monotonic() - started.began
        token, deadline = watchdog.enter(limit, until, elapsed)
        try:
            return await _carry_on(started)
        except asyncio.CancelledError:
            if not watchdog.expired(token):
                raise
            # The watchdog cancelled this task; take the cancellation back so the scan goes on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            ledger = started.context.get(CURRENT_LEDGER)
            if ledger is not None:
                ledger.abandoned = True
            if deadline == until:
                message = f"{hook} stopped at the request deadline ({self.deadline:g} s)"
            else:
                message = f"{hook} timed out after {limit:g} s"
            errors.append(Error(message, plugin.name, _id(about)))
            self.log.warning("plugin %s: %s", plugin.name, message)
            return _FAILED
        except Exception as exc:
            return self._failed(plugin, hook, exc, errors, about)
        finally:
            watchdog.leave(token)

    def _failed(
        self,
        plugin: LoadedPlugin,
        hook: str,
        exc: Exception,
        errors: list[Error],
        about: Optional[PayloadResults],
    ) -> Any:
        message = f"{hook} failed: {type(exc).__name__}: {exc}"
        errors.append(Error(message, plugin.name, _id(about)))
        self.log.warning(
            "plugin %s: %s", plugin.name, message, exc_info=self.log.isEnabledFor(logging.DEBUG)
        )
        return _FAILED

    # -- providers -------------------------------------------------------------------------

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
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for provider in providers:  # stopped: one in a thread is abandoned, not awaited
                provider.cancel()
            await queue.join()
        finally:
            for future in (*providers, *consumers, *waits[1:]):
                future.cancel()
            await asyncio.gather(ingesting, *consumers, return_exceptions=True)
        return stats

    def _run_failed(
        self, stats: RunStats, message: str, exc: Optional[BaseException] = None
    ) -> None:
        stats.failed += 1
        self.log.error(message, exc_info=exc if self.log.isEnabledFor(logging.DEBUG) else None)

    async def _ingest(
        self, provider: LoadedPlugin, queue: asyncio.Queue[Any], stats: RunStats
    ) -> None:
        try:
            await provider.call("ingest", queue)
        except Exception as exc:
            self._run_failed(
                stats, f"provider {provider.name} failed: {type(exc).__name__}: {exc}", exc
            )

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
            except Exception as exc:
                message = (
                    f"scan of a queued {type(item).__name__} failed: {type(exc).__name__}: {exc}"
                )
                failures.append(Error(message))
                self._run_failed(stats, message, exc)
            try:
                if isinstance(entry, QueueItem) and entry.on_done is not None:
                    done = entry.on_done(responses, failures)
                    if inspect.isawaitable(done):
                        await done
            except Exception as exc:
                self._run_failed(
                    stats, f"on_done of a queued item failed: {type(exc).__name__}: {exc}", exc
                )
            finally:
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
            return [Request([item], _fresh(request_meta))]
        if isinstance(item, Request):
            if request_meta is not None and item.request_meta.is_default():
                item.request_meta = _fresh(request_meta)
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
                payload = await self._call(archiver, "get", (ArchiverResponse(task),), errors)
                if isinstance(payload, Payload):
                    requests.append(Request([payload], _fresh(request_meta)))
                    continue
                why = errors[0].error if errors else f"get returned {type(payload).__name__}"
            failures.append(Error(f"cannot load {task!r}: {why}", archiver_name))
            self._run_failed(stats, f"queued task for {archiver_name!r} not scanned: {why}")
        return requests

    # -- responses -------------------------------------------------------------------------

    async def reconstruct_all_subresponses(
        self, stoq_response: StoqResponse
    ) -> AsyncGenerator[StoqResponse, None]:
        """For each payload in turn, a response rooted at it holding everything extracted from it.

        Each keeps the original ``time``, ``scan_id``, request metadata and errors; the decorators
        run again on it.
        """
        for tree in subresponse_results(stoq_response):
            request = Request(
                request_meta=stoq_response.request_meta, errors=list(stoq_response.errors)
            )
            response = StoqResponse(request, time=stoq_response.time, scan_id=stoq_response.scan_id)
            response.results = tree
            await self._decorate(response)
            yield response


class _Scan:
    """The rounds of one ``scan_request``.

    Every payload takes this path, so it is written for the common request (no dispatchers,
    always-dispatch workers that require no others, nothing extracted): that case costs one
    round with no helper calls, and everything else takes the general methods below.
    """

    __slots__ = (
        "budget",
        "dropped",
        "given_up",
        "pending",
        "reported",
        "request",
        "seen",
        "stoq",
        "until",
    )

    def __init__(self, stoq: Stoq, request: Request, start: Sequence[str]) -> None:
        self.stoq = stoq
        self.request = request
        # Workers owed to a payload next round: start dispatch, dispatch_to, deferred dependants.
        self.pending: dict[Payload, list[str]] = {}
        if start:
            for payload in request.payloads:
                if payload.results.payload_meta.should_scan:
                    self.pending[payload] = list(start)
        self.until = (
            asyncio.get_running_loop().time() + stoq.deadline if stoq.deadline > 0 else None
        )
        self.budget = ExtractionBudget(stoq.max_extracted_bytes)
        # Made when first needed (most requests need none of them):
        self.seen: Optional[dict[str, Payload]] = None  # sha256 -> payload
        self.given_up: Optional[set[tuple[int, str]]] = None  # (id(payload), plugin) not to retry
        # Errors reported once per request: dispatcher errors, and workers that cannot load.
        self.reported: Optional[set[tuple[Optional[str], ...]]] = None
        # One Error per extraction limit, and how many payloads it dropped.
        self.dropped: Optional[dict[str, tuple[Error, int]]] = None

    async def run(self) -> None:
        stoq = self.stoq
        request = self.request
        payloads = request.payloads
        always = stoq.always_dispatch
        simple = stoq._simple_workers
        for round_number in range(1, stoq.max_recursion + 1):
            owed, self.pending = self.pending, {}
            work: dict[tuple[Payload, str], LoadedPlugin] = {}
            if stoq._dispatchers:
                scannable = [p for p in payloads if p.results.payload_meta.should_scan]
                picks = await self._dispatch(scannable)
                for payload, picked in zip(scannable, picks):
                    for name in dict.fromkeys([*owed.get(payload, ()), *always, *picked]):
                        self._schedule(payload, name, work)
            else:
                given_up = self.given_up
                for payload in payloads:
                    results = payload.results
                    if not results.payload_meta.should_scan:
                        continue
                    extra = owed.get(payload)
                    names = always if extra is None else dict.fromkeys([*extra, *always])
                    ran = results.plugins_run["workers"]
                    for name in names:
                        worker = simple.get(name)
                        if worker is None or given_up:
                            self._schedule(payload, name, work)
                        elif name not in ran:
                            work[payload, name] = worker
            if not work:
                return
            if self.until is not None and asyncio.get_running_loop().time() >= self.until:
                request.errors.append(
                    Error(
                        f"request deadline ({stoq.deadline:g} s) reached before round "
                        f"{round_number}: {len(work)} worker runs not started"
                    )
                )
                return
            known = len(payloads)
            if len(work) == 1:
                # ``_call`` written out: most requests take this path, and most calls finish
                # without waiting, so they are spared a coroutine.
                (((payload, _), worker),) = work.items()
                results = payload.results
                ledger = Ledger(self.budget)
                outcome = stoq._start(
                    worker, "scan", (payload, request), request.errors, results, ledger
                )
                if type(outcome) is _Waiting:
                    outcome = await stoq._finish(
                        outcome, worker, "scan", request.errors, results, self.until
                    )
                ledger.settle()
                self._take_worker(payload, worker, outcome, round_number)
            else:
                pairs = list(work.items())
                ledgers = [Ledger(self.budget) for _ in pairs]
                outcomes = await stoq._call_each(
                    [
                        (worker, "scan", (payload, request), request.errors, payload.results)
                        for (payload, _), worker in pairs
                    ],
                    self.until,
                    ledgers,
                )
                # Every call of the round has returned: give back what each charged while
                # extracting, then charge the payloads kept (so none is counted twice).
                for ledger in ledgers:
                    ledger.settle()
                for ((payload, _), worker), outcome in zip(pairs, outcomes):
                    self._take_worker(payload, worker, outcome, round_number)
            if not (self.pending or stoq._dispatchers or len(payloads) > known):
                # Every payload has had every always-dispatch worker and nothing new arrived:
                # another round would find no work, so skip building it.
                return

    async def _dispatch(self, payloads: list[Payload]) -> list[list[str]]:
        """The workers the dispatchers pick for each of ``payloads`` this round.

        Dispatchers are asked every round (they may route on new results), so an error is
        recorded once per payload, and a dispatcher that raised is not asked about it again.
        """
        stoq, request = self.stoq, self.request
        asked = [
            (payload, dispatcher)
            for payload in payloads
            for dispatcher in stoq._dispatchers.values()
            if not self._gave_up(payload, dispatcher.name)
        ]
        errors: dict[Payload, list[Error]] = {payload: [] for payload in payloads}
        outcomes = await stoq._call_each(
            [
                (dispatcher, "get_dispatches", (payload, request), errors[payload], payload.results)
                for payload, dispatcher in asked
            ]
        )
        picks: dict[Payload, list[str]] = {payload: [] for payload in payloads}
        for (payload, dispatcher), outcome in zip(asked, outcomes):
            if outcome is _FAILED:
                self._give_up(payload, dispatcher.name)
            response = stoq._take(
                outcome, DispatcherResponse, dispatcher, errors[payload], payload.results, {}
            )
            if response is not None:
                picks[payload].extend(response.plugin_names)
                payload.dispatch_meta[dispatcher.name] = response.meta
        for payload in payloads:
            for error in errors[payload]:
                if self._first_report((error.error, error.plugin_name, error.payload_id)):
                    request.errors.append(error)
        return [picks[payload] for payload in payloads]

    def _give_up(self, payload: Payload, plugin: str) -> None:
        """Never ask ``plugin`` about ``payload`` again in this request."""
        if self.given_up is None:
            self.given_up = set()
        self.given_up.add((id(payload), plugin))

    def _gave_up(self, payload: Payload, plugin: str) -> bool:
        return self.given_up is not None and (id(payload), plugin) in self.given_up

    def _first_report(self, key: tuple[Optional[str], ...]) -> bool:
        """True the first time ``key`` is reported in this request."""
        if self.reported is None:
            self.reported = set()
        if key in self.reported:
            return False
        self.reported.add(key)
        return True

    def _schedule(
        self, payload: Payload, name: str, work: dict[tuple[Payload, str], LoadedPlugin]
    ) -> None:
        """Add ``name`` (or, first, the required workers it still lacks) to this round's work."""
        if name in payload.results.plugins_run["workers"] or self._gave_up(payload, name):
            return
        worker = self.stoq._simple_workers.get(name)
        if worker is not None:  # the common case: a loaded worker that requires no other
            work.setdefault((payload, name), worker)
            return
        try:
            runnable = self._resolve(payload, name, (), 0)
        except _DependencyError as exc:
            self._give_up(payload, name)
            self.request.errors.append(Error(str(exc), name, payload.results.payload_id))
            return
        except StoqException as exc:  # not installed, failed to load, or not a worker
            self._give_up(payload, name)
            if self._first_report((name,)):
                self.request.errors.append(Error(str(exc), name, payload.results.payload_id))
            return
        if runnable[-1].name != name:
            # Its required workers go first; it comes back next round.
            self.pending.setdefault(payload, []).append(name)
        for worker in runnable:
            work.setdefault((payload, worker.name), worker)

    def _resolve(
        self, payload: Payload, name: str, chain: tuple[str, ...], depth: int
    ) -> list[LoadedPlugin]:
        """The workers to run now for ``name``: itself if its requirements have run, else theirs."""
        stoq = self.stoq
        if name in chain:
            raise _DependencyError(
                f"Circular required_workers dependency: {' -> '.join((*chain, name))}"
            )
        if depth > stoq.max_required_worker_depth:
            raise _DependencyError(
                f"Max required plugin depth ({stoq.max_required_worker_depth}) reached at {name!r} "
                f"({' -> '.join(chain)})"
            )
        worker = stoq.plugins.load(name)
        if "scan" not in worker.hooks:
            raise StoqPluginException(
                f"plugin {name!r} is not a worker: it does not implement 'scan'"
            )
        if not worker.required_workers:
            stoq._simple_workers[name] = worker
            return [worker]
        ran = payload.results.plugins_run["workers"]
        missing = [r for r in sorted(worker.required_workers) if r not in ran]
        if not missing:
            return [worker]
        runnable: list[LoadedPlugin] = []
        for required in missing:
            try:
                runnable.extend(self._resolve(payload, required, (*chain, name), depth + 1))
            except StoqException as exc:
                raise _DependencyError(
                    f"required worker {required!r} of {name!r} is unavailable: {exc}"
                ) from exc
        return runnable

    def _take_worker(
        self, payload: Payload, worker: LoadedPlugin, outcome: Any, round_number: int
    ) -> None:
        results = payload.results
        results.plugins_run["workers"].append(worker.name)
        response = self.stoq._take(
            outcome,
            WorkerResponse,
            worker,
            self.request.errors,
            results,
            results.workers,
        )
        if response is None:
            return
        if response.dispatch_to:
            self.pending.setdefault(payload, []).extend(response.dispatch_to)
        for extracted in response.extracted:
            self._add_extracted(payload, worker.name, extracted, round_number)

    def _add_extracted(
        self, parent: Payload, worker: str, extracted: Any, round_number: int
    ) -> None:
        request = self.request
        if not isinstance(extracted, ExtractedPayload):
            request.errors.append(
                Error(
                    f"extracted a {type(extracted).__name__}, expected ExtractedPayload",
                    worker,
                    parent.results.payload_id,
                )
            )
            return
        child = Payload(
            extracted.content, extracted.payload_meta, [worker], [parent.results.payload_id]
        )
        if self.seen is None:
            self.seen = {}
            for payload in request.payloads:
                self.seen.setdefault(payload.digest(), payload)
        digest = child.digest()
        twin = self.seen.get(digest)
        if twin is not None:
            twin.results.extracted_by.append(worker)
            twin.results.extracted_from.append(parent.results.payload_id)
            return
        limit = self._over_budget(child)
        if limit is not None:
            self._drop(limit, parent, worker)
            return
        try:
            # Not a check then a charge: an abandoned call's thread may charge in between.
            self.budget.charge(child.results.size)
        except ExtractionLimitExceeded:
            self._drop(
                f"max_extracted_bytes ({self.stoq.max_extracted_bytes} bytes)", parent, worker
            )
            return
        self.seen[digest] = child
        request.payloads.append(child)
        if round_number >= self.stoq.max_recursion:
            request.errors.append(
                Error(
                    f"Final worker round ({round_number}) reached, unable to process payload",
                    None,
                    child.results.payload_id,
                )
            )
        elif child.results.payload_meta.should_scan and child.results.payload_meta.dispatch_to:
            self.pending.setdefault(child, []).extend(child.results.payload_meta.dispatch_to)

    def _over_budget(self, child: Payload) -> Optional[str]:
        """The extraction limit ``child`` would break, described, or None."""
        stoq, size = self.stoq, child.results.size
        if size > stoq.max_payload_size:
            return f"max_payload_size ({stoq.max_payload_size} bytes)"
        if len(self.request.payloads) >= stoq.max_payloads:
            return f"max_payloads ({stoq.max_payloads})"
        return None

    def _drop(self, limit: str, parent: Payload, worker: str) -> None:
        # One Error per limit, its count kept current, so a bomb of a million members does
        # not bury the response under a million identical errors.
        if self.dropped is None:
            self.dropped = {}
        error, count = self.dropped.get(limit, (None, 0))
        if error is None:
            error = Error("", worker, parent.results.payload_id)
            self.request.errors.append(error)
        self.dropped[limit] = (error, count + 1)
        error.error = f"{limit} exceeded: {count + 1} extracted payload(s) dropped"


class _Waiting:
    """A plugin call run up to a wait: the coroutine, what it waits on, when it began, and the
    context it runs in."""

    __slots__ = ("began", "call", "context", "waiting_on")

    def __init__(
        self,
        call: Coroutine[Any, Any, Any],
        waiting_on: Any,
        began: float,
        context: contextvars.Context,
    ) -> None:
        self.call = call
        self.waiting_on = waiting_on
        self.began = began
        self.context = context


@types.coroutine
def _carry_on(started: _Waiting) -> Generator[Any, Any, Any]:
    """Await the call ``_start`` left waiting, each of its steps run in its own context.

    What the call waits on goes to the awaiting task as if the call had yielded it there; what
    the task sends or throws in (a cancellation) goes on to the call.
    """
    call, waiting_on, run = started.call, started.waiting_on, started.context.run
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            run(call.close)
            raise
        except BaseException as exc:  # thrown in by the task: a cancellation, usually
            try:
                waiting_on = run(call.throw, exc)
            except StopIteration as finished:
                return finished.value
            continue
        try:
            waiting_on = run(call.send, sent)
        except StopIteration as finished:
            return finished.value


async def _gather(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` without its task overhead when there is nothing to overlap."""
    items = list(awaitables)
    if len(items) == 1:
        return [await items[0]]
    if not items:
        return []
    return list(await asyncio.gather(*items))


def _errors(
    errors: Iterable[Any], plugin_name: str, about: Optional[PayloadResults]
) -> list[Error]:
    # v3's own docs return bare strings as errors; keep them, attributed to the plugin.
    return [e if isinstance(e, Error) else Error(e, plugin_name, _id(about)) for e in errors]


def _id(about: Optional[PayloadResults]) -> Optional[str]:
    return None if about is None else about.payload_id


def _fresh(request_meta: Optional[RequestMeta]) -> RequestMeta:
    """A copy per request, so one scan's plugins cannot change the next one's metadata."""
    if request_meta is None:
        return RequestMeta()
    return attrs.evolve(request_meta, extra_data=dict(request_meta.extra_data))


def _read_config(path: str) -> StoqConfigParser:
    """stoq.cfg, read as v3 read it (``%%`` is ``%``), if it exists."""
    config = StoqConfigParser()
    for section, values in read_stoq_cfg(path).items():
        config.set_options(section, values)
    return config
