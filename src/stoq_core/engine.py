"""The engine: ``Stoq`` routes payloads through dispatchers, workers, archivers, decorators and connectors.

Where to look: ``Stoq`` here builds the engine from its ``[core]`` settings (``_settings``),
loads each role's plugins, and scans a request: its rounds (``_rounds.Rounds``), then the
archivers, decorators and connectors. Every plugin call goes through ``_calls.PluginCalls``,
which turns a raise into an ``Error`` naming the plugin and the payload, so one failing plugin
never stops a scan. ``run`` and its providers are in ``_providers``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from stoq_core import _cache, _logging
from stoq_core._calls import FAILED, PluginCalls
from stoq_core._manager import LoadedPlugin, PluginInfo, PluginManager
from stoq_core._providers import Providers, RunStats
from stoq_core._rounds import Rounds, cap_errors
from stoq_core._settings import (
    DEFAULTS,
    check_log_settings,
    checked_number,
    default_log_dir,
    read_config,
)
from stoq_core.data_classes import (
    ArchiverResponse,
    DecoratorResponse,
    Error,
    Payload,
    PayloadMeta,
    Request,
    RequestMeta,
    StoqResponse,
    subresponse_results,
)
from stoq_core.exceptions import StoqException, StoqPluginException
from stoq_core.plugins import HOOK_ROLES
from stoq_core.plugins import PLUGIN_LIST_HOOKS as ROLE_HOOKS

if TYPE_CHECKING:
    from stoq_core._observe import Observer, PluginTiming

__all__ = ["RunStats", "Stoq"]

_UNSET: Any = object()


class Stoq(Providers):
    """stoQ's engine. Arguments left ``None`` come from the ``[core]`` section of stoq.cfg.

    :param base_dir: defaults to the current directory.
    :param config_file: defaults to ``base_dir/stoq.cfg``, read only if it exists.
    :param log_dir: defaults to ``base_dir/logs`` when ``base_dir`` is given or holds a
        stoq.cfg, else no file log (v3 left a ``logs/`` wherever a ``Stoq()`` was made);
        ``None`` or blank disables the file log.
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
    :param metrics_port: serve Prometheus metrics on this port from now on (default 0: no
        metrics); needs ``prometheus_client`` (the ``metrics`` extra).
    :param metrics_host: the address metrics are served on (default ``127.0.0.1``).
    :param tracing: make an OpenTelemetry span per request and per plugin call (default
        False); needs ``opentelemetry-api`` (the ``otel`` extra).
    :param timings: keep each plugin call's time for ``plugin_timings`` (default False).
    :param cache: the result cache (``docs/cache.md``): ``"off"`` (default), ``"local"``
        (sqlite in ``base_dir/cache``) or an installed backend's name (``"redis"``); ``True``:
        stoq.cfg's backend, or ``"local"`` if it names none; ``False``: off.
    :param cache_ttl: seconds a cached result is reused (default 604800, a week; 0: no limit).
    :param cache_plugins: the workers whose results are cached (default ``"all"``: every
        worker that does not declare ``cacheable = False``).
    :param cache_url: where the backend keeps results: a directory for ``local``, a URL for
        ``redis`` (default: the backend's own).
    :param cache_max_bytes: about how large the ``local`` cache's file may grow (default 1 GiB).

    Whatever a limit drops is reported as an ``Error`` naming the limit.
    """

    # Metrics, traces and timings (``_observe``); set on the instance only when one is on. A
    # 30th instance attribute takes CPython 3.11 off its shared-key dicts for a ``Stoq``, and
    # every attribute read of a scan pays: +900 instructions a scan (2%) measured (issue 16).
    _observer: Optional[Observer] = None

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
        cache: Union[str, bool, None] = None,
        cache_ttl: Optional[float] = None,
        cache_plugins: Union[str, Sequence[str], None] = None,
        cache_url: Optional[str] = None,
        cache_max_bytes: Optional[int] = None,
        metrics_port: Optional[int] = None,
        metrics_host: Optional[str] = None,
        tracing: Optional[bool] = None,
        timings: bool = False,
    ) -> None:
        self.base_dir = os.path.abspath(base_dir or os.getcwd())
        config_file = config_file or os.path.join(self.base_dir, "stoq.cfg")
        self._config = read_config(config_file)

        def core(arg: Any, key: str, kind: str = "str") -> Any:
            # An argument beats the file, even a falsy one (v3 used ``arg or config``).
            if arg is not None:
                return arg
            getters: dict[str, Callable[..., Any]] = {
                "int": self._config.getint,
                "float": self._config.getfloat,
                "list": self._config.getlist,
                "bool": self._config.getboolean,
            }
            getter = getters.get(kind, self._config.get)
            try:
                return getter(
                    "core", key, fallback=DEFAULTS.get(key, [] if kind == "list" else None)
                )
            except ValueError as exc:
                raise StoqException(f"{config_file}: [core] {key}: {exc}") from None

        def number(arg: Any, key: str, kind: type, least: int = 0) -> Any:
            """A [core] number, refused unless it is finite and at least ``least``."""
            value = core(arg, key, kind.__name__)
            return checked_number(key, value, kind, least, arg is None and config_file)

        if log_dir is _UNSET:
            log_dir = self._config.get(
                "core", "log_dir", fallback=default_log_dir(base_dir, self.base_dir)
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
        check_log_settings(level, syntax, config_file)
        self.log = _logging.configure(
            level,
            log_dir or None,
            number(None, "log_maxbytes", int),
            number(None, "log_backup_count", int),
            syntax.lower(),
        )
        metrics_port = number(metrics_port, "metrics_port", int)
        if metrics_port > 65535:
            raise StoqException(f"metrics_port must be a port number (0-65535), not {metrics_port}")
        tracing = bool(core(tracing, "tracing", "bool"))
        if metrics_port or tracing or timings:
            from stoq_core import _observe

            self._observer = _observe.Observer(
                metrics_port, core(metrics_host, "metrics_host"), tracing, timings
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
            observe=None if self._observer is None else self._observer.wrap,
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
        # Off (the default), this is None, and a scan round tests only that.
        cache_in_use = _cache.open_cache(
            _cache.CacheSettings(
                backend=_cache.backend_name(cache, core(None, "cache")),
                ttl=number(cache_ttl, "cache_ttl", float),
                plugins=_cache.plugin_names(core(cache_plugins, "cache_plugins", "list")),
                url=core(cache_url, "cache_url") or "",
                max_bytes=number(cache_max_bytes, "cache_max_bytes", int, 1),
                home=self.base_dir,
            ),
            self.plugins,
        )
        self._calls = PluginCalls(self, self.log, cache_in_use)
        if self._observer is not None:
            self._calls.on_timeout = self._observer.timed_out
            self._calls.on_limit_hit = self._observer.limit_hit
            # An attribute over the method, rather than a check in it: off, a scan pays nothing.
            self._scan_and_save = functools.partial(  # type: ignore[method-assign]
                self._observer.scan, self._scan_and_save
            )
        self._simple_workers: dict[str, LoadedPlugin] = {}  # workers with no required_workers
        self._next_scan_at = 0.0
        self._ratelimit_lock: Optional[asyncio.Lock] = None

    # -- plugins ---------------------------------------------------------------------------

    def _load_role(self, role: str, names: Iterable[str]) -> dict[str, LoadedPlugin]:
        loaded = {}
        for name in names:
            plugin = self.plugins.load(name)
            hook = ROLE_HOOKS[role]
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

    async def call_plugin(self, plugin_name: str, hook: str, *args: Any) -> tuple[Any, list[Error]]:
        """Call one hook of one plugin as a scan calls it: within its time limit, whatever it
        raises becoming an ``Error`` that names it (what ``stoq_core.testing.call_hook`` uses).

        :returns: what the hook returned (None if it failed or timed out) and the errors a
            scan would record for the call: what it raised, then the errors its response
            carries (bare strings made ``Error``s naming the plugin and payload), or why the
            response was refused.
        :raises StoqException: the plugin cannot be loaded.
        """
        plugin = self.plugins.load(plugin_name)
        errors: list[Error] = []
        about = args[0].results if args and isinstance(args[0], Payload) else None
        value = await self._calls.call(plugin, hook, args, errors, about)
        if value is FAILED:
            return None, errors
        role = HOOK_ROLES.get(hook)
        if value is not None and role is not None and role.response is not None:
            self._calls.take(value, role.response, plugin, errors, about, {})
        return value, errors

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
        rounds = Rounds(
            self,
            self._calls,
            self._dispatchers,
            self._simple_workers,
            request,
            add_start_dispatch or (),
        )
        await rounds.run()
        if rounds.dropped is not None and self._observer is not None:
            self._observer.dropped(rounds.dropped)
        if self._dest_archivers and request.request_meta.archive_payloads:
            await self._archive(request)
        if len(request.errors) > self.max_errors:
            cap_errors(request.errors, self.max_errors)
            if self._observer is not None:
                self._observer.limit_hit("max_errors")
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
        outcomes = await self._calls.call_each(
            [
                (archiver, "archive", (payload, request), request.errors, payload.results)
                for payload, archiver in calls
            ]
        )
        for (payload, archiver), outcome in zip(calls, outcomes):
            payload.results.plugins_run["archivers"].append(archiver.name)
            self._calls.take(
                outcome,
                ArchiverResponse,
                archiver,
                request.errors,
                payload.results,
                payload.results.archivers,
            )

    async def _decorate(self, response: StoqResponse) -> None:
        decorators = list(self._decorators.values())
        # Decorators may change the response, but not into one that cannot be filed into,
        # saved or written: a decorator setting ``response.errors = None`` once ended the scan.
        kept = {
            "results": response.results,
            "errors": response.errors,
            "decorators": response.decorators,
        }
        errors: list[Error] = []
        outcomes = await self._calls.call_each(
            [(decorator, "decorate", (response,), errors, None) for decorator in decorators]
        )
        replaced = [
            field
            for field, value in kept.items()
            if type(getattr(response, field)) is not type(value)
        ]
        if replaced:
            for field in replaced:
                setattr(response, field, kept[field])
            errors.append(
                Error(
                    f"the response's {' and '.join(replaced)} were replaced with something "
                    "else; restored",
                    decorators[0].name if len(decorators) == 1 else None,
                )
            )
        response.errors.extend(errors)
        for decorator, outcome in zip(decorators, outcomes):
            self._calls.take(
                outcome, DecoratorResponse, decorator, response.errors, None, response.decorators
            )

    async def _save(self, response: StoqResponse) -> list[Error]:
        """Every connector's ``save``; returns the errors of those that failed."""
        failed: list[Error] = []
        await self._calls.call_each(
            [
                (connector, "save", (response,), failed, None)
                for connector in self._connectors.values()
            ]
        )
        response.errors.extend(failed)
        return failed

    def close(self) -> None:
        """Write out what this engine keeps between scans: the result cache's entries not yet
        stored (it writes them in batches) are written, and its backend is closed; with
        tracing, the spans the tracer provider still holds are exported.

        An interpreter's normal exit does this by itself; a process that ends without it
        (``os._exit``, as each ``--jobs`` worker does) calls it first, or its last results are
        not cached and its last spans never leave. Scanning after ``close`` works, the cache
        reconnecting on first use.
        """
        if self._calls.cache is not None:
            self._calls.cache.close()
        if self._observer is not None:
            self._observer.flush()

    # -- responses -------------------------------------------------------------------------

    def plugin_timings(self, response: StoqResponse) -> list[PluginTiming]:
        """How long each plugin call of ``response``'s scan took, in the order they ended.

        Kept only by a ``Stoq`` made with ``timings=True``, and only while ``response`` lives;
        the response's JSON is unchanged.

        :returns: one ``PluginTiming`` per call (``[]`` for a response this ``Stoq`` did not
            scan).
        :raises StoqException: this ``Stoq`` was not made with ``timings=True``.
        """
        if self._observer is None or not self._observer.timings:
            raise StoqException("plugin timings are off: make the Stoq with timings=True")
        return self._observer.timings_of(response)

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
