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
import itertools
import logging
import math
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

from stoq_core import _budget, _logging
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
    "max_errors": 1000,
    "max_error_length": 4096,
}

_LOG_SYNTAXES = ("text", "json")

# How long a call may go on after a cancellation (a timeout, Ctrl-C) was thrown into it without
# raising: room for an ``except CancelledError`` that tidies up, not for one that carries on.
_CANCEL_GRACE = 1.0

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
        An extracted payload's ``extra_data`` is held to the same limit.
    :param max_errors: errors one response may hold (default 1000); past it, one ``Error``
        says how many more were dropped.
    :param max_error_length: characters of one error message kept in the response and the log
        (default 4096); the rest is cut, and the cut said.

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
        max_errors: Optional[int] = None,
        max_error_length: Optional[int] = None,
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

        def number(arg: Any, key: str, kind: type, least: int = 0) -> Any:
            """A [core] number, refused unless it is finite and at least ``least``."""
            value = core(arg, key, kind.__name__)
            return _checked_number(key, value, kind, least, arg is None and config_file)

        if log_dir is _UNSET:
            log_dir = self._config.get(
                "core", "log_dir", fallback=os.path.join(self.base_dir, "logs")
            )
        # Every setting is checked before anything starts: a negative max_recursion once
        # scanned nothing and exited 0, and ``timeout = nan`` switched the limit off.
        self.max_queue: int = number(max_queue, "max_queue", int)
        self.provider_consumers: int = number(provider_consumers, "provider_consumers", int, 1)
        self.max_recursion: int = number(max_recursion, "max_recursion", int)
        self.max_required_worker_depth: int = number(
            max_required_worker_depth, "max_required_worker_depth", int
        )
        self.timeout: float = number(timeout, "timeout", float)
        self.deadline: float = number(deadline, "deadline", float)
        self.max_payloads: int = number(max_payloads, "max_payloads", int, 1)
        self.max_extracted_bytes: int = number(max_extracted_bytes, "max_extracted_bytes", int)
        self.max_payload_size: int = number(max_payload_size, "max_payload_size", int)
        self.max_result_size: int = number(max_result_size, "max_result_size", int)
        self.max_errors: int = number(max_errors, "max_errors", int, 1)
        self.max_error_length: int = number(max_error_length, "max_error_length", int, 80)
        level = core(log_level, "log_level")
        syntax = core(None, "log_syntax")
        _check_log_settings(level, syntax, config_file)
        self.log = _logging.configure(
            level,
            log_dir or None,
            number(None, "log_maxbytes", int),
            number(None, "log_backup_count", int),
            syntax.lower(),
        )
        if plugin_dir_list is None:
            plugin_dir_list = self._config.getlist(
                "core", "plugin_dir_list", fallback=[os.path.join(self.base_dir, "plugins")]
            )
        self.plugin_dir_list = list(plugin_dir_list)
        self.plugins = PluginManager(
            self.plugin_dir_list,
            self._config,
            plugin_opts,
            load_timeout=self.timeout,
            max_error_length=self.max_error_length,
        )

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
        if len(request.errors) > self.max_errors:
            _cap_errors(request.errors, self.max_errors)
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
            errors.extend(self._errors(outcome.errors, plugin.name, about))
        return outcome

    def _errors(
        self, errors: Iterable[Any], plugin_name: str, about: Optional[PayloadResults]
    ) -> list[Error]:
        """The errors a plugin returned, as ``Error``s: at most ``max_errors`` of them (then one
        saying how many more there were), each message cut to ``max_error_length``.

        v3's own docs return bare strings as errors; they are kept, attributed to the plugin.
        """
        lazy = type(errors) is not list
        # A generator may never end: take one past the limit, to know it was passed.
        given = list(itertools.islice(errors, self.max_errors + 1)) if lazy else errors
        assert isinstance(given, list)
        kept = []
        # One place is kept for the Error saying how many were dropped.
        room = self.max_errors if len(given) <= self.max_errors else self.max_errors - 1
        for error in given[:room]:
            if type(error) is not Error:
                if isinstance(error, Error):  # a subclass: keep its fields, not its type
                    error = Error(error.error, error.plugin_name, error.payload_id)
                else:
                    error = Error(_text(error), plugin_name, _id(about))
            if len(error.error) > self.max_error_length:
                error.error = _cut(error.error, self.max_error_length)
            kept.append(error)
        if len(given) > self.max_errors:
            more = "more" if lazy else str(len(given) - room)
            kept.append(
                Error(
                    f"returned {more} errors past max_errors ({self.max_errors}); dropped",
                    plugin_name,
                    _id(about),
                )
            )
        return kept

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
    ) -> list[Any]:
        """``_call`` for each ``(plugin, hook, args, errors, about)``: started one after another,
        the calls that wait then wait concurrently.

        What ``asyncio.gather`` over the ``_call``s would do, except that a call finishing
        without waiting (most do) costs no task: a round of 1,000 payloads would cost 1,000.
        """
        outcomes: list[Any] = []
        waiting: list[tuple[int, _Waiting]] = []
        try:
            for plugin, hook, args, errors, about in calls:
                outcome = self._start(plugin, hook, args, errors, about)
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
        try:
            call = plugin.callers[hook](*args)
            waiting_on = context.run(call.send, None)
        except StopIteration as finished:
            return finished.value
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, CancelledError: before its first wait nothing but
            # the plugin itself can have raised it, so it is the plugin's failure, not the
            # program's (a plugin's sys.exit once ended ``stoq scan`` with no output).
            if isinstance(exc, KeyboardInterrupt) and _interrupting(exc):
                raise  # Ctrl-C pressed again while the task is already being cancelled
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
            except BaseException as exc:
                if _interrupting(exc):
                    raise
                return self._failed(plugin, hook, exc, errors, about)
        watchdog = self._watchdog
        elapsed = time.monotonic() - started.began
        token, deadline = watchdog.enter(limit, until, elapsed)
        try:
            return await _carry_on(started)
        except asyncio.CancelledError as exc:
            if not watchdog.expired(token):
                if _interrupting(exc):
                    raise
                return self._failed(plugin, hook, exc, errors, about)
            # The watchdog cancelled this task; take the cancellation back so the scan goes on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if deadline == until:
                message = f"{hook} stopped at the request deadline ({self.deadline:g} s)"
            else:
                message = f"{hook} timed out after {limit:g} s"
            errors.append(Error(message, plugin.name, _id(about)))
            self.log.warning("plugin %s: %s", plugin.name, message)
            return _FAILED
        except BaseException as exc:
            if _interrupting(exc):
                raise
            return self._failed(plugin, hook, exc, errors, about)
        finally:
            watchdog.leave(token)

    def _failed(
        self,
        plugin: LoadedPlugin,
        hook: str,
        exc: BaseException,
        errors: list[Error],
        about: Optional[PayloadResults],
    ) -> Any:
        # A 100 MB message was once copied whole into the response and into one log line.
        message = _cut(f"{hook} failed: {type(exc).__name__}: {_text(exc)}", self.max_error_length)
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
        try:
            await provider.call("ingest", queue)
        except BaseException as exc:  # a provider's own SystemExit or CancelledError too
            if _interrupting(exc) or isinstance(exc, GeneratorExit):
                raise
            if isinstance(exc, StoqException) and stats.ingested == 0:
                # Refused before anything was queued: its configuration is at fault (filedir
                # without source_dir), so ``run`` raises it, as for a plugin that cannot load.
                raise
            message = f"provider {provider.name} failed: {type(exc).__name__}: {_text(exc)}"
            self._run_failed(stats, _cut(message, self.max_error_length), exc)

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
            except BaseException as exc:
                if _interrupting(exc) or isinstance(exc, GeneratorExit):
                    queue.task_done()
                    raise
                message = _cut(
                    f"scan of a queued {type(item).__name__} failed: {type(exc).__name__}: "
                    f"{_text(exc)}",
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
                if _interrupting(exc) or isinstance(exc, GeneratorExit):
                    raise
                message = f"on_done of a queued item failed: {type(exc).__name__}: {_text(exc)}"
                self._run_failed(stats, _cut(message, self.max_error_length), exc)
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
        "dropped",
        "expirations",
        "extracted_bytes",
        "given_up",
        "in_flight",
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
        self.extracted_bytes = 0  # the payloads kept
        self.in_flight = 0  # what this round's workers charged while producing it
        self.expirations = 0  # the watchdog's count when the round began
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
        # Found there by charge_extracted_bytes; cleared after, or the request and this scan
        # would hold each other (and every payload) until the garbage collector ran.
        request._extraction = self
        try:
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
                    self.expirations = stoq._watchdog.expirations
                    outcome = stoq._start(
                        worker, "scan", (payload, request), request.errors, results
                    )
                    if type(outcome) is _Waiting:
                        outcome = await stoq._finish(
                            outcome, worker, "scan", request.errors, results, self.until
                        )
                    if self.in_flight:
                        self._settle()
                    self._take_worker(payload, worker, outcome, round_number)
                else:
                    pairs = list(work.items())
                    self.expirations = stoq._watchdog.expirations
                    outcomes = await stoq._call_each(
                        [
                            (worker, "scan", (payload, request), request.errors, payload.results)
                            for (payload, _), worker in pairs
                        ],
                        self.until,
                    )
                    if self.in_flight:
                        self._settle()
                    for ((payload, _), worker), outcome in zip(pairs, outcomes):
                        self._take_worker(payload, worker, outcome, round_number)
                if not (self.pending or stoq._dispatchers or len(payloads) > known):
                    # Every payload has had every always-dispatch worker and nothing new arrived:
                    # another round would find no work, so skip building it.
                    return
        finally:
            request._extraction = None

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
                picks[payload].extend(
                    _names(
                        response.plugin_names,
                        "plugin_names",
                        dispatcher.name,
                        payload.results,
                        errors[payload],
                    )
                )
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
        requires = worker.requirements() if worker.late else worker.required_workers
        if not requires:
            if not worker.late:  # a v3 plugin's required_workers may change: ask it each time
                stoq._simple_workers[name] = worker
            return [worker]
        ran = payload.results.plugins_run["workers"]
        missing = [r for r in sorted(requires) if r not in ran]
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
        errors = self.request.errors
        try:
            if response.dispatch_to:
                names = _names(response.dispatch_to, "dispatch_to", worker.name, results, errors)
                self.pending.setdefault(payload, []).extend(names)
            extracted = response.extracted
            if type(extracted) is not list:
                # An iterator may never end: read no more than a request may hold, plus one.
                limit = self.stoq.max_payloads
                extracted = list(itertools.islice(extracted, limit + 1))
                if len(extracted) > limit:
                    del extracted[limit:]
                    errors.append(
                        Error(
                            f"extracted more than max_payloads ({limit}) payloads; the rest "
                            "were not read",
                            worker.name,
                            results.payload_id,
                        )
                    )
            for child in extracted:
                self._add_extracted(payload, worker.name, child, round_number)
        except Exception as exc:
            # Whatever else a malformed response holds, it costs this worker's part, not the
            # request (a bad object once lost the whole response).
            errors.append(
                Error(
                    _cut(
                        f"returned a malformed WorkerResponse: {type(exc).__name__}: {_text(exc)}",
                        self.stoq.max_error_length,
                    ),
                    worker.name,
                    results.payload_id,
                )
            )

    def _add_extracted(
        self, parent: Payload, worker: str, extracted: Any, round_number: int
    ) -> None:
        request = self.request
        problem = _malformed(extracted)
        if problem is not None:
            request.errors.append(Error(problem, worker, parent.results.payload_id))
            return
        meta = extracted.payload_meta
        if meta.extra_data:
            # extra_data goes into the JSON as results do, so it is held to the same limit.
            too_big = check_results(meta.extra_data, self.stoq.max_result_size)
            if too_big is not None:
                meta.extra_data = {}
                request.errors.append(
                    Error(
                        f"an extracted payload's extra_data: {too_big}; extra_data dropped",
                        worker,
                        parent.results.payload_id,
                    )
                )
        child = Payload(extracted.content, meta, [worker], [parent.results.payload_id])
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
        with _budget.LOCK:  # an abandoned call's thread may be charging in flight meanwhile
            held = self.extracted_bytes + self.in_flight + child.results.size
            if held <= self.stoq.max_extracted_bytes:
                self.extracted_bytes += child.results.size
        if held > self.stoq.max_extracted_bytes:
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
        elif meta.should_scan and meta.dispatch_to:
            names = _names(meta.dispatch_to, "dispatch_to", worker, child.results, request.errors)
            meta.dispatch_to = names  # what the JSON shows, an iterator read once
            self.pending.setdefault(child, []).extend(names)

    def charge_in_flight(self, nbytes: int) -> None:
        """A worker is producing ``nbytes`` for this request (``charge_extracted_bytes``)."""
        limit = self.stoq.max_extracted_bytes
        with _budget.LOCK:
            held = self.extracted_bytes + self.in_flight
            if held + nbytes > limit:
                raise _budget.exceeded(limit, held, nbytes)
            self.in_flight += nbytes

    def budget_state(self) -> tuple[int, int]:
        """``max_extracted_bytes``, and what the request's extractions hold now."""
        return self.stoq.max_extracted_bytes, self.extracted_bytes + self.in_flight

    def _settle(self) -> None:
        """The round's calls have returned: give back what they charged while producing, as
        the payloads they extracted are charged when kept. Not if the watchdog abandoned a
        call meanwhile: its thread may still hold what it charged."""
        if self.stoq._watchdog.expirations == self.expirations:
            with _budget.LOCK:
                self.in_flight = 0

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

    A call that swallows a cancellation (``except CancelledError: pass``) once ignored every
    timeout, the deadline and Ctrl-C. It now has ``_CANCEL_GRACE`` seconds to finish tidying
    up; then, or at the next cancellation, it is closed and the cancellation goes on as if it
    had raised it. A result it returns after a cancellation comes too late and is dropped.
    """
    call, waiting_on, run = started.call, started.waiting_on, started.context.run
    refused: Optional[BaseException] = None  # the cancellation the call swallowed
    grace: Optional[asyncio.TimerHandle] = None
    graced = False  # the grace timer has cancelled the task: that cancel is ours to take back

    def end_grace(task: asyncio.Task[Any]) -> None:
        nonlocal graced
        graced = True
        task.cancel()

    try:
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                _close(run, call)
                raise
            except BaseException as exc:
                # Thrown in by the task: the error of a future the call awaited (which it may
                # handle), or a cancellation (which it must not swallow).
                cancelled = isinstance(exc, asyncio.CancelledError)
                if cancelled and refused is not None:  # grace over, or cancelled again: stop
                    task = asyncio.current_task()
                    if graced and task is not None:
                        task.uncancel()
                    _close(run, call)
                    raise refused from None
                try:
                    waiting_on = run(call.throw, exc)
                except StopIteration as finished:
                    if cancelled:
                        raise exc from None  # its result comes too late to be taken
                    return finished.value
                if cancelled:
                    refused = exc
                    task = asyncio.current_task()
                    if task is not None:
                        grace = asyncio.get_running_loop().call_later(
                            _CANCEL_GRACE, end_grace, task
                        )
                continue
            try:
                waiting_on = run(call.send, sent)
            except StopIteration as finished:
                if refused is not None:
                    raise refused from None
                return finished.value
    finally:
        if grace is not None:
            grace.cancel()


def _close(run: Callable[..., Any], call: Coroutine[Any, Any, Any]) -> None:
    """Close an abandoned call; one that ignores even that is left to the garbage collector."""
    try:
        run(call.close)
    except BaseException:  # RuntimeError: coroutine ignored GeneratorExit, or its own raise
        pass


async def _gather(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` without its task overhead when there is nothing to overlap."""
    items = list(awaitables)
    if len(items) == 1:
        return [await items[0]]
    if not items:
        return []
    return list(await asyncio.gather(*items))


_MAX_NAMES = 1000  # worker names one response may ask for


def _names(
    names: Any, field: str, plugin: str, about: PayloadResults, errors: list[Error]
) -> list[str]:
    """The plugin names in ``names`` (a response's ``dispatch_to`` or ``plugin_names``); anything
    that is not one is reported as ``plugin``'s error, not passed on to crash the request."""
    if type(names) is not list:
        names = list(itertools.islice(names, _MAX_NAMES + 1))
    good = [name for name in names[:_MAX_NAMES] if type(name) is str and name]
    if len(good) < len(names):
        bad = [name for name in names[:_MAX_NAMES] if type(name) is not str or not name]
        what = f"{len(bad)} item(s) that are not plugin names, e.g. {_text(bad[0])[:80]!r}"
        if len(names) > _MAX_NAMES:
            what = f"more than {_MAX_NAMES} names" if not bad else what
        errors.append(Error(f"{field} holds {what}; they were ignored", plugin, about.payload_id))
    return good


def _malformed(extracted: Any) -> Optional[str]:
    """What is wrong with an item of a worker's ``extracted``, or None if it can be scanned."""
    if type(extracted) is not ExtractedPayload and not isinstance(extracted, ExtractedPayload):
        return f"extracted a {type(extracted).__name__}, expected ExtractedPayload"
    content = extracted.content
    if type(content) is not bytes:
        try:
            memoryview(content)
        except TypeError:
            return (
                f"extracted a payload whose content is a {type(content).__name__}, expected bytes"
            )
    meta = extracted.payload_meta
    if type(meta) is not PayloadMeta and not isinstance(meta, PayloadMeta):
        return f"extracted a payload whose payload_meta is a {type(meta).__name__}, expected PayloadMeta"
    if not isinstance(meta.extra_data, dict):
        return (
            f"extracted a payload whose extra_data is a {type(meta.extra_data).__name__}, "
            "expected dict"
        )
    return None


def _interrupting(exc: BaseException) -> bool:
    """Whether ``exc``, raised out of a plugin's call after a wait, interrupts the program
    rather than the plugin: a cancellation someone asked of the task (Ctrl-C, ``stop``, an
    outer timeout), or Ctrl-C itself once it has cancelled the task.

    Anything else a plugin raises (``SystemExit``, its own ``CancelledError`` or
    ``KeyboardInterrupt``) is that plugin's failure.
    """
    if not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _cap_errors(errors: list[Error], limit: int) -> None:
    """Keep the first ``limit`` errors and one saying how many more there were.

    One request's plugins once filled a response with a million errors (192 MB of JSON).
    """
    dropped = len(errors) - limit
    del errors[limit:]
    errors.append(Error(f"{dropped} more error(s) dropped: max_errors ({limit}) reached"))


def _text(thing: Any) -> str:
    """``str(thing)``, or a description if its ``__str__`` fails (a hostile exception's may)."""
    try:
        return str(thing)
    except BaseException:
        return f"<{type(thing).__name__} whose str() failed>"


def _cut(text: str, length: int) -> str:
    """``text`` cut to about ``length`` characters, saying how much was cut."""
    if len(text) <= length:
        return text
    return f"{text[: length - 40]}... ({len(text) - length + 40} characters cut)"


def _id(about: Optional[PayloadResults]) -> Optional[str]:
    return None if about is None else about.payload_id


def _fresh(request_meta: Optional[RequestMeta]) -> RequestMeta:
    """A copy per request, so one scan's plugins cannot change the next one's metadata."""
    if request_meta is None:
        return RequestMeta()
    return attrs.evolve(request_meta, extra_data=dict(request_meta.extra_data))


def _checked_number(key: str, value: Any, kind: type, least: int, source: Any) -> Any:
    """``value`` as ``kind`` if it is a finite number >= ``least``; else a StoqException.

    :param source: the config file the value came from, or a false value for an argument.
    """
    where = f"{source}: [core] {key}" if source else key
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and number != float(value)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number) or number < least:
        what = "a whole number" if kind is int else "a number of seconds"
        raise StoqException(f"{where} must be {what} >= {least}, not {value!r}")
    return number


def _check_log_settings(level: Any, syntax: Any, config_file: str) -> None:
    if not isinstance(level, str) or not isinstance(logging.getLevelName(level.upper()), int):
        raise StoqException(
            f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {level!r} "
            f"(from the argument or {config_file})"
        )
    if str(syntax).lower() not in _LOG_SYNTAXES:
        raise StoqException(
            f"log_syntax must be {' or '.join(_LOG_SYNTAXES)}, not {syntax!r} (from {config_file})"
        )


def _read_config(path: str) -> StoqConfigParser:
    """stoq.cfg, read as v3 read it (``%%`` is ``%``), if it exists."""
    config = StoqConfigParser()
    for section, values in read_stoq_cfg(path).items():
        config.set_options(section, values)
    return config
