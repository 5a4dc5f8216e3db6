"""Metrics, traces and per-plugin timings: what a ``Stoq`` tells of its requests and plugin calls.

All three are off by default, and off they cost a scan nothing: this module is imported only
when one of them is on; a plugin's hooks are wrapped only then, once, when the plugin is loaded
(the seam in ``LoadedPlugin`` that the debug log's call timings use); and ``prometheus_client``
and ``opentelemetry`` are imported only for the part that needs them (issue 16).

- Metrics: plain counts and histograms, made Prometheus families only when scraped, in a
  registry of the ``Stoq``'s own (two engines in one process never clash), served in
  Prometheus's text format on ``metrics_host:metrics_port``. A run adds what its queue and
  consumers are doing, read when scraped, not kept per item.
- Traces: a span per request, and a child span per plugin call with the plugin, the hook and
  the payload; the user's tracer provider (an SDK, ``opentelemetry-instrument``) exports them.
- Timings: each plugin call's time, kept per response for ``Stoq.plugin_timings``.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

import attrs

from stoq_core._calls import cut, text_of
from stoq_core.exceptions import StoqException

if TYPE_CHECKING:
    import asyncio

    from stoq_core._providers import RunStats
    from stoq_core.data_classes import Error, Request, StoqResponse

__all__ = ["Observer", "PluginTiming"]

Caller = Callable[..., Coroutine[Any, Any, Any]]

#: Whether a ``Stoq`` with metrics serves them. False in a ``stoq run --jobs`` worker process,
#: which counts its plugin calls and sends them to the parent, the one serving (``counts`` and
#: ``add``): N workers cannot share one port.
serve_metrics = True

# Plugin calls range from tens of microseconds (hashing a small payload) to minutes (a sandbox);
# prometheus_client's default buckets start at 5 ms and would put most calls in the first one.
_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

#: A call's timing as kept during the scan: plugin, hook, what its first argument is about
#: (a payload's results), seconds, outcome. ``PluginTiming``s are made only when asked for: one
#: per call, and a payload id read early (a uuid made), cost a small scan 30,000 instructions.
_Kept = tuple[str, str, Any, float, str]

#: The timings of the request being scanned (a list shared by its calls' copied contexts).
_TIMINGS: contextvars.ContextVar[Optional[list[_Kept]]] = contextvars.ContextVar(
    "stoq_timings", default=None
)


@attrs.frozen
class PluginTiming:
    """How long one plugin call took (``Stoq.plugin_timings``)."""

    plugin: str
    hook: str
    #: The payload the call was about; None for a hook about a whole response (``decorate``,
    #: ``save``).
    payload_id: Optional[str]
    seconds: float
    #: How the call ended: ``"ok"``, or what it raised (``"ValueError"``; ``"CancelledError"``
    #: for a call stopped by its timeout or the request's deadline).
    outcome: str = "ok"


def _failed(span: Any, exc: BaseException, status: Any, code: Any) -> None:
    """Mark ``span`` failed with ``exc``: an error status naming it, and an exception event."""
    # A plugin's exception may be hostile: a 100 MB message, a __str__ that raises.
    span.set_status(status(code.ERROR, cut(f"{type(exc).__name__}: {text_of(exc)}", 1024)))
    with contextlib.suppress(Exception):
        span.record_exception(exc)


def _payload_id(results: Any) -> Optional[str]:
    """The id of a payload, from its results; None for anything else."""
    payload_id = getattr(results, "payload_id", None)
    return payload_id if isinstance(payload_id, str) else None


class _Histogram:
    """Times observed, as counts per bucket (not cumulative; the last is past every bound)."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1

    def family_sample(self) -> tuple[list[tuple[str, float]], float, int]:
        """Prometheus's cumulative buckets, the sum and the count, read once."""
        counts, total = list(self.buckets), self.total
        cumulative, running = [], 0
        for bound, count in zip((*(str(b) for b in _BUCKETS), "+Inf"), counts):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative, total, running


class _Metrics:
    """What one ``Stoq`` counts, and the server that exposes it.

    Counted in plain numbers, turned into Prometheus's families only when scraped: a
    ``prometheus_client`` counter and histogram per plugin call (a lock each, a walk of the
    buckets) cost a call about 18,000 instructions, these a few hundred. Everything here is
    changed on the event loop's thread only; a scrape (the server's thread) reads copies.
    """

    def __init__(self, host: str, port: int) -> None:
        try:
            import prometheus_client
        except ImportError:
            raise StoqException(
                "metrics need prometheus_client: pip install 'stoq-core[metrics]' "
                "(or leave metrics_port at 0)"
            ) from None
        self.requests = 0
        self.requests_with_errors = 0
        self.payloads = 0
        self.request_seconds = _Histogram()
        self.calls: dict[tuple[str, str], _Histogram] = {}  #: (plugin, hook)
        self.errors: dict[str, int] = {}  #: by plugin
        self.timeouts: dict[tuple[str, str], int] = {}  #: (plugin, hook)
        self.limit_hits: dict[str, int] = {}  #: by limit
        self.runs: list[tuple[asyncio.Queue[Any], RunStats, int]] = []  #: the runs under way
        self.registry = prometheus_client.CollectorRegistry()
        self.registry.register(self)
        if not serve_metrics:
            return
        try:
            self.server, _ = prometheus_client.start_http_server(port, host, self.registry)
        except OSError as exc:
            raise StoqException(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(choose another metrics_port / --metrics-port)"
            ) from None

    def counts(self) -> dict[str, Any]:
        """What plugin calls have counted so far (as JSON): calls with their times, timeouts
        and limit hits, for a process that serves them (``add``)."""
        return {
            "calls": [
                [plugin, hook, list(histogram.buckets), histogram.total]
                for (plugin, hook), histogram in list(self.calls.items())
            ],
            "timeouts": [[plugin, hook, n] for (plugin, hook), n in list(self.timeouts.items())],
            "limit_hits": dict(self.limit_hits),
        }

    def add(self, counts: dict[str, Any], before: Optional[dict[str, Any]] = None) -> None:
        """Add ``counts`` (another process's ``counts()``), less ``before`` (what of that
        process's counts was added already)."""
        seen = before or {"calls": [], "timeouts": [], "limit_hits": {}}
        old_calls = {(plugin, hook): (b, t) for plugin, hook, b, t in seen["calls"]}
        for plugin, hook, buckets, total in counts["calls"]:
            old_buckets, old_total = old_calls.get((plugin, hook), ([0] * len(buckets), 0.0))
            histogram = self.calls.setdefault((plugin, hook), _Histogram())
            for at, (now, then) in enumerate(zip(buckets, old_buckets)):
                histogram.buckets[at] += now - then
            histogram.total += total - old_total
        old_timeouts = {(plugin, hook): n for plugin, hook, n in seen["timeouts"]}
        for plugin, hook, n in counts["timeouts"]:
            key = (plugin, hook)
            self.timeouts[key] = self.timeouts.get(key, 0) + n - old_timeouts.get(key, 0)
        old_hits = seen["limit_hits"]
        for limit, n in counts["limit_hits"].items():
            self.limit_hits[limit] = self.limit_hits.get(limit, 0) + n - old_hits.get(limit, 0)

    def describe(self) -> list[Any]:
        return []  # families appear as plugins are called and runs start; see collect

    def collect(self) -> Iterator[Any]:
        """The families, built from copies of the counts (the scan goes on meanwhile)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def counter(name: str, documentation: str, value: float) -> Any:
            return CounterMetricFamily(name, documentation, value=value)

        yield counter("stoq_requests", "Requests scanned (responses made).", self.requests)
        yield counter(
            "stoq_requests_with_errors",
            "Responses holding at least one error.",
            self.requests_with_errors,
        )
        yield counter("stoq_payloads", "Payloads scanned, extracted ones included.", self.payloads)
        requests = HistogramMetricFamily(
            "stoq_request_duration_seconds",
            "Time from a request's first round to its response saved by the connectors.",
        )
        buckets, total, _ = self.request_seconds.family_sample()
        requests.add_metric([], buckets, total)
        yield requests
        calls = CounterMetricFamily(
            "stoq_plugin_calls", "Plugin calls, by plugin and hook.", labels=["plugin", "hook"]
        )
        seconds = HistogramMetricFamily(
            "stoq_plugin_call_duration_seconds",
            "Time a plugin call took, by plugin and hook.",
            labels=["plugin", "hook"],
        )
        for (plugin, hook), histogram in list(self.calls.items()):
            buckets, total, count = histogram.family_sample()
            calls.add_metric([plugin, hook], count)
            seconds.add_metric([plugin, hook], buckets, total)
        yield calls
        yield seconds
        for name, documentation, labels, values in (
            (
                "stoq_plugin_errors",
                "Errors recorded against a plugin in responses: raised, timed out, returned "
                "or refused.",
                ["plugin"],
                {(plugin,): n for plugin, n in list(self.errors.items())},
            ),
            (
                "stoq_plugin_timeouts",
                "Plugin calls stopped by their timeout or the request's deadline.",
                ["plugin", "hook"],
                dict(list(self.timeouts.items())),
            ),
            (
                "stoq_extraction_limit_hits",
                "Work a request's limits cut, by limit: one per payload dropped "
                "(max_payloads, max_payload_size, max_extracted_bytes) or left unscanned "
                "(max_recursion); one per cut where the count is unknown (an extracted "
                "iterator cut at max_payloads, errors cut at max_errors).",
                ["limit"],
                {(limit,): n for limit, n in list(self.limit_hits.items())},
            ),
        ):
            family = CounterMetricFamily(name, documentation, labels=labels)
            for key, value in values.items():
                family.add_metric(list(key), value)
            yield family
        runs = list(self.runs)
        if not runs:
            return
        reads: Sequence[tuple[Any, str, str, Callable[[Any, RunStats, int], float]]] = (
            (GaugeMetricFamily, "stoq_run_queue_depth", "Items waiting in the run's queue.",
             lambda q, s, c: q.qsize()),
            (GaugeMetricFamily, "stoq_run_queue_capacity", "Size of the run's queue (max_queue; "
             "0: unbounded).", lambda q, s, c: q.maxsize),
            (GaugeMetricFamily, "stoq_run_consumers", "Consumers scanning the run's queue "
             "(provider_consumers).", lambda q, s, c: c),
            (GaugeMetricFamily, "stoq_run_in_flight", "Queued items being scanned now (busy "
             "consumers).", lambda q, s, c: s.in_flight),
            (CounterMetricFamily, "stoq_run_ingested", "Items the providers have queued.",
             lambda q, s, c: s.ingested),
            (CounterMetricFamily, "stoq_run_failures", "Providers that failed and queued items "
             "that could not be scanned.", lambda q, s, c: s.failed),
        )  # fmt: skip
        for family, name, documentation, read in reads:
            yield family(name, documentation, value=sum(read(*run) for run in runs))


class Observer:
    """What one ``Stoq`` observes; made only when metrics, traces or timings are on.

    :param metrics_port: serve metrics on this port (0: no metrics).
    :param metrics_host: the address to serve them on.
    :param tracing: make OpenTelemetry spans.
    :param timings: keep each response's plugin call times.
    :raises StoqException: a part that is on lacks its library, or the port cannot be bound.
    """

    def __init__(self, metrics_port: int, metrics_host: str, tracing: bool, timings: bool) -> None:
        self.tracer: Any = None
        if tracing:
            try:
                from opentelemetry import trace
            except ImportError:
                raise StoqException(
                    "tracing needs the OpenTelemetry API: pip install 'stoq-core[otel]' "
                    "(or turn tracing off)"
                ) from None
            from stoq_core import __version__

            self.tracer = trace.get_tracer("stoq", __version__)
        self.timings = timings
        #: Each response's timings, for as long as the response lives.
        self.timed: weakref.WeakKeyDictionary[StoqResponse, list[_Kept]] = (
            weakref.WeakKeyDictionary()
        )
        self.metrics = _Metrics(metrics_host, metrics_port) if metrics_port else None

    def flush(self) -> None:
        """Have the tracer provider export the spans it still holds (an SDK's batch processor
        keeps them up to seconds); a provider without ``force_flush`` holds none."""
        if self.tracer is None:
            return
        from opentelemetry import trace

        force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if force_flush is not None:
            with contextlib.suppress(Exception):  # an exporter's failure is not the scan's
                force_flush()

    # -- plugin calls ----------------------------------------------------------------------

    def wrap(self, plugin: str, hook: str, caller: Caller) -> Caller:
        """``caller``, observed: put on each hook of a plugin as it is loaded."""
        histogram = None
        if self.metrics is not None:  # found once, not per call
            histogram = self.metrics.calls.setdefault((plugin, hook), _Histogram())
        tracer = self.tracer
        if tracer is not None:
            from opentelemetry.trace import Status, StatusCode, use_span
        timings = self.timings
        name = f"{plugin} {hook}"

        async def call(*args: Any) -> Any:
            outcome = "ok"
            began = time.perf_counter()
            try:
                if tracer is None:
                    return await caller(*args)
                attributes = {"stoq.plugin": plugin, "stoq.hook": hook}
                payload_id = _payload_id(getattr(args[0], "results", None)) if args else None
                if payload_id is not None:
                    attributes["stoq.payload_id"] = payload_id
                span = tracer.start_span(name, attributes=attributes)
                try:
                    # Current while the plugin runs (in its thread too): its own spans nest here.
                    with use_span(span, record_exception=False, set_status_on_exception=False):
                        return await caller(*args)
                except BaseException as exc:
                    # A timeout arrives as a CancelledError, which OpenTelemetry leaves unmarked.
                    _failed(span, exc, Status, StatusCode)
                    raise
                finally:
                    span.end()
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                took = time.perf_counter() - began
                if histogram is not None:
                    histogram.observe(took)
                if timings:
                    kept = _TIMINGS.get()
                    if kept is not None:
                        about = getattr(args[0], "results", None) if args else None
                        kept.append((plugin, hook, about, took, outcome))

        return call

    def timings_of(self, response: StoqResponse) -> list[PluginTiming]:
        """The timings kept for ``response``, in the order its calls ended."""
        return [
            PluginTiming(plugin, hook, _payload_id(about), seconds, outcome)
            for plugin, hook, about, seconds, outcome in self.timed.get(response, ())
        ]

    def timed_out(self, plugin: str, hook: str) -> None:
        """A call of ``plugin``'s ``hook`` was stopped by its timeout or the deadline."""
        if self.metrics is not None:
            timeouts = self.metrics.timeouts
            timeouts[plugin, hook] = timeouts.get((plugin, hook), 0) + 1

    def dropped(self, drops: dict[str, tuple[Error, int]]) -> None:
        """Count the extracted payloads a request's limits dropped (``Rounds.dropped``: each
        limit, described from its name on, with the payloads it dropped)."""
        if self.metrics is not None:
            hits = self.metrics.limit_hits
            for limit, (_, count) in drops.items():
                name = limit.split(" ", 1)[0]
                hits[name] = hits.get(name, 0) + count

    def limit_hit(self, limit: str, count: int = 1) -> None:
        """A limit (``max_recursion``, ``max_payloads``, ``max_errors``) cut ``count`` units of
        a request's work: payloads, or cuts where the payloads or errors cut are unknown."""
        if self.metrics is not None:
            hits = self.metrics.limit_hits
            hits[limit] = hits.get(limit, 0) + count

    # -- requests and runs -----------------------------------------------------------------

    async def scan(
        self,
        scan_and_save: Callable[..., Coroutine[Any, Any, tuple[StoqResponse, list[Error]]]],
        request: Request,
        add_start_dispatch: Optional[Sequence[str]],
    ) -> tuple[StoqResponse, list[Error]]:
        """``scan_and_save(request, add_start_dispatch)``, observed: a span, timings, counts."""
        span = token = None
        if self.tracer is not None:
            from opentelemetry import context, trace

            span = self.tracer.start_span("stoq request")
            token = context.attach(trace.set_span_in_context(span))
        kept: Optional[list[_Kept]] = None
        reset = None
        if self.timings:
            kept = []
            reset = _TIMINGS.set(kept)
        began = time.perf_counter()
        try:
            response, unsaved = await scan_and_save(request, add_start_dispatch)
        except BaseException as exc:
            if span is not None:
                from opentelemetry.trace import Status, StatusCode

                _failed(span, exc, Status, StatusCode)
                span.end()
            raise
        finally:
            if reset is not None:
                _TIMINGS.reset(reset)
            if token is not None:
                context.detach(token)
        took = time.perf_counter() - began
        if kept is not None:
            self.timed[response] = kept
        if span is not None:
            span.set_attributes(
                {
                    "stoq.scan_id": response.scan_id,
                    "stoq.payloads": len(response.results),
                    "stoq.errors": len(response.errors),
                }
            )
            span.end()
        metrics = self.metrics
        if metrics is not None:
            metrics.requests += 1
            metrics.payloads += len(response.results)
            metrics.request_seconds.observe(took)
            if response.errors:
                metrics.requests_with_errors += 1
                errors = metrics.errors
                for error in response.errors:
                    if error.plugin_name:
                        errors[error.plugin_name] = errors.get(error.plugin_name, 0) + 1
        return response, unsaved

    def running(self, queue: asyncio.Queue[Any], stats: RunStats, consumers: int) -> _Running:
        """For ``run``: its queue and counts appear in the metrics while it lasts."""
        return _Running(self, queue, stats, consumers)


class _Running:
    """A run's entry in the metrics, from ``with`` to its end."""

    def __init__(
        self, observer: Observer, queue: asyncio.Queue[Any], stats: RunStats, consumers: int
    ) -> None:
        self.metrics = observer.metrics
        self.entry = (queue, stats, consumers)

    def __enter__(self) -> None:
        if self.metrics is not None:
            self.metrics.runs.append(self.entry)

    def __exit__(self, *exc_info: object) -> None:
        if self.metrics is not None:
            self.metrics.runs.remove(self.entry)
