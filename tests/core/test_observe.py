"""Metrics, traces and per-plugin timings (issue 16), and that off they cost nothing.

Traces are checked with the OpenTelemetry SDK's in-memory exporter, the metrics by scraping the
endpoint over loopback and parsing it with Prometheus's own text parser.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stoq_core import PayloadMeta, Stoq, StoqException

pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk")

from metrics_support import free_port, scrape
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

MakeStoq = Callable[..., Stoq]

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans of this test, from the process's one tracer provider (OpenTelemetry allows
    setting it once per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


# -- traces ------------------------------------------------------------------------------------


def test_each_request_is_a_span_with_a_child_span_per_plugin_call(
    make_stoq: MakeStoq, spans: InMemorySpanExporter
) -> None:
    stoq = make_stoq(
        always_dispatch=["worker", "extractor"],
        plugin_opts={"extractor": {"extract": json.dumps({"outer": ["inner"]})}},
        tracing=True,
    )

    response = asyncio.run(stoq.scan(b"outer"))

    found = by_name(spans)
    [request] = found["stoq request"]
    assert request.parent is None
    assert request.attributes is not None
    assert request.attributes["stoq.scan_id"] == response.scan_id
    assert request.attributes["stoq.payloads"] == 2
    calls = found["worker scan"] + found["extractor scan"]
    assert len(calls) == 4  # two workers, two payloads
    for span in calls:
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.context.trace_id == request.context.trace_id
    payload_ids = {result.payload_id for result in response.results}
    assert {span.attributes["stoq.payload_id"] for span in calls if span.attributes} == payload_ids
    assert {
        (s.attributes["stoq.plugin"], s.attributes["stoq.hook"]) for s in calls if s.attributes
    } == {
        ("worker", "scan"),
        ("extractor", "scan"),
    }


def test_a_plugin_call_that_raises_has_an_error_status(
    make_stoq: MakeStoq, spans: InMemorySpanExporter
) -> None:
    stoq = make_stoq(
        always_dispatch=["worker"], plugin_opts={"worker": {"raise_on": "bad"}}, tracing=True
    )

    response = asyncio.run(stoq.scan(b"bad"))

    assert response.errors
    [call] = by_name(spans)["worker scan"]
    assert call.status.status_code is StatusCode.ERROR
    assert "ValueError" in (call.status.description or "")
    assert [event.name for event in call.events] == ["exception"]


def test_a_plugin_call_stopped_by_its_timeout_has_an_error_status(
    make_stoq: MakeStoq, spans: InMemorySpanExporter
) -> None:
    stoq = make_stoq(
        always_dispatch=["worker"],
        plugin_opts={"worker": {"wait_for": "nobody, in the span test", "timeout": "0.1"}},
        tracing=True,
    )

    asyncio.run(stoq.scan(b"slow"))

    [call] = by_name(spans)["worker scan"]
    assert call.status.status_code is StatusCode.ERROR
    assert "CancelledError" in (call.status.description or "")


def test_a_plugins_own_spans_nest_under_its_call_in_its_thread_too(
    make_stoq: MakeStoq, install_plugins: Callable[..., Path], spans: InMemorySpanExporter
) -> None:
    install_plugins(
        {"traced": "observe_fakes:Traced", "traced_blocking": "observe_fakes:TracedBlocking"},
        dist="stoq-test-traced",
    )
    stoq = make_stoq(always_dispatch=["traced", "traced_blocking"], tracing=True)

    asyncio.run(stoq.scan(b"x"))

    found = by_name(spans)
    for call, own in (("traced scan", "lookup"), ("traced_blocking scan", "blocking lookup")):
        [outer] = found[call]
        [inner] = found[own]
        assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


# -- timings -----------------------------------------------------------------------------------


def test_plugin_timings_gives_each_call_of_a_scan_by_payload(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(
        always_dispatch=["worker", "extractor"],
        plugin_opts={"extractor": {"extract": json.dumps({"outer": ["inner"]})}},
        timings=True,
    )

    response = asyncio.run(stoq.scan(b"outer"))

    timings = stoq.plugin_timings(response)
    outer, inner = (result.payload_id for result in response.results)
    assert sorted((t.plugin, t.hook, t.payload_id) for t in timings) == sorted(
        [
            ("worker", "scan", outer),
            ("extractor", "scan", outer),
            ("worker", "scan", inner),
            ("extractor", "scan", inner),
        ]
    )
    assert all(t.seconds >= 0 and t.outcome == "ok" for t in timings)


def test_timings_name_what_a_failed_call_raised(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(
        always_dispatch=["worker"], plugin_opts={"worker": {"raise_on": "bad"}}, timings=True
    )

    response = asyncio.run(stoq.scan(b"bad"))

    [timing] = stoq.plugin_timings(response)
    assert timing.outcome == "ValueError"


def test_timings_cover_decorators_and_connectors_without_a_payload(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(
        always_dispatch=["worker"], decorators=["decorator"], connectors=["connector"], timings=True
    )

    response = asyncio.run(stoq.scan(b"x"))

    calls = {(t.plugin, t.hook, t.payload_id) for t in stoq.plugin_timings(response)}
    assert ("decorator", "decorate", None) in calls
    assert ("connector", "save", None) in calls


def test_timings_leave_the_responses_json_unchanged(make_stoq: MakeStoq) -> None:
    meta = PayloadMeta(extra_data={"filename": "x"})
    timed = make_stoq(always_dispatch=["worker"], timings=True)
    plain = make_stoq(always_dispatch=["worker"])

    with_timings = asyncio.run(timed.scan(b"x", meta)).to_dict()
    without = asyncio.run(plain.scan(b"x", meta)).to_dict()

    assert list(with_timings) == list(without)
    assert with_timings["request_meta"] == without["request_meta"]
    assert "timings" not in json.dumps(with_timings)


def test_plugin_timings_refuses_a_stoq_made_without_them(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(always_dispatch=["worker"])
    response = asyncio.run(stoq.scan(b"x"))

    with pytest.raises(StoqException, match="timings=True"):
        stoq.plugin_timings(response)


def test_the_timings_of_concurrent_requests_stay_apart(make_stoq: MakeStoq) -> None:
    stoq = make_stoq(always_dispatch=["worker"], timings=True)

    async def both() -> list[Any]:
        return list(await asyncio.gather(stoq.scan(b"one"), stoq.scan(b"two")))

    first, second = asyncio.run(both())

    assert [t.payload_id for t in stoq.plugin_timings(first)] == [first.results[0].payload_id]
    assert [t.payload_id for t in stoq.plugin_timings(second)] == [second.results[0].payload_id]


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_count_requests_payloads_calls_and_errors_by_plugin(make_stoq: MakeStoq) -> None:
    port = free_port()
    stoq = make_stoq(
        always_dispatch=["worker", "extractor"],
        plugin_opts={
            "extractor": {"extract": json.dumps({"outer": ["inner"]})},
            "worker": {"raise_on": "inner"},
        },
        metrics_port=port,
    )

    asyncio.run(stoq.scan(b"outer"))
    asyncio.run(stoq.scan(b"plain"))
    samples = scrape(port)

    assert samples[("stoq_requests_total", ())] == 2
    assert samples[("stoq_requests_with_errors_total", ())] == 1
    assert samples[("stoq_payloads_total", ())] == 3
    assert samples[("stoq_plugin_calls_total", (("hook", "scan"), ("plugin", "worker")))] == 3
    assert samples[("stoq_plugin_calls_total", (("hook", "scan"), ("plugin", "extractor")))] == 3
    assert samples[("stoq_plugin_errors_total", (("plugin", "worker"),))] == 1
    count = ("stoq_plugin_call_duration_seconds_count", (("hook", "scan"), ("plugin", "worker")))
    assert samples[count] == 3
    assert samples[("stoq_request_duration_seconds_count", ())] == 2


def test_metrics_count_timeouts_by_plugin_and_hook(make_stoq: MakeStoq) -> None:
    port = free_port()
    stoq = make_stoq(
        always_dispatch=["worker"],
        plugin_opts={"worker": {"wait_for": "nobody, in the metrics test", "timeout": "0.1"}},
        metrics_port=port,
    )

    asyncio.run(stoq.scan(b"slow"))

    samples = scrape(port)
    assert samples[("stoq_plugin_timeouts_total", (("hook", "scan"), ("plugin", "worker")))] == 1
    assert samples[("stoq_plugin_errors_total", (("plugin", "worker"),))] == 1


def test_metrics_count_the_payloads_an_extraction_limit_dropped(make_stoq: MakeStoq) -> None:
    port = free_port()
    stoq = make_stoq(
        always_dispatch=["extractor"],
        plugin_opts={"extractor": {"extract": json.dumps({"zip": ["a", "b", "c", "d"]})}},
        max_payloads=2,
        metrics_port=port,
    )

    asyncio.run(stoq.scan(b"zip"))

    samples = scrape(port)
    assert samples[("stoq_extraction_limit_hits_total", (("limit", "max_payloads"),))] == 3


def limit_hits(port: int) -> dict[str, float]:
    """``stoq_extraction_limit_hits_total`` by its ``limit`` label, as scraped."""
    return {
        dict(labels)["limit"]: value
        for (name, labels), value in scrape(port).items()
        if name == "stoq_extraction_limit_hits_total"
    }


def test_metrics_count_the_payloads_max_recursion_left_unscanned(make_stoq: MakeStoq) -> None:
    port = free_port()
    stoq = make_stoq(
        always_dispatch=["extractor"],
        plugin_opts={"extractor": {"extract": json.dumps({"root": ["a"], "a": ["b", "c"]})}},
        max_recursion=2,
        metrics_port=port,
    )

    response = asyncio.run(stoq.scan(b"root"))

    # b and c are extracted in the last round: in the response, never scanned.
    assert sum("Final worker round" in error.error for error in response.errors) == 2
    assert limit_hits(port) == {"max_recursion": 2}


def test_metrics_count_workers_still_owed_when_max_recursion_ran_out(
    make_stoq: MakeStoq,
) -> None:
    port = free_port()
    stoq = make_stoq(
        always_dispatch=["worker"],
        plugin_opts={"worker": {"dispatch_to": "worker2"}},
        max_recursion=1,
        metrics_port=port,
    )

    response = asyncio.run(stoq.scan(b"x"))

    # worker asked for worker2, which needed a second round: dropped as v3 drops it, silently.
    assert response.results[0].plugins_run["workers"] == ["worker"]
    assert not response.errors
    assert limit_hits(port) == {"max_recursion": 1}


def test_metrics_count_an_extracted_iterator_cut_at_max_payloads(
    make_stoq: MakeStoq, install_plugins: Callable[..., Path]
) -> None:
    install_plugins({"flood": "observe_fakes:Flood"}, dist="stoq-test-flood")
    port = free_port()
    stoq = make_stoq(always_dispatch=["flood"], max_payloads=3, metrics_port=port)

    response = asyncio.run(stoq.scan(b"x"))

    assert any("extracted more than max_payloads (3)" in e.error for e in response.errors)
    # One for the cut iterator (what it had left was never read), and one for the third
    # member read: the request already held the root and two members.
    assert len(response.results) == 3
    assert limit_hits(port) == {"max_payloads": 2}


def test_metrics_count_each_cut_max_errors_makes(make_stoq: MakeStoq) -> None:
    port = free_port()
    stoq = make_stoq(
        always_dispatch=["worker", "worker2"],
        plugin_opts={"worker": {"errors": "a, b, c"}, "worker2": {"errors": "d, e"}},
        max_errors=2,
        metrics_port=port,
    )

    response = asyncio.run(stoq.scan(b"x"))

    # worker's three errors are cut to two; with worker2's two the response holds four, which
    # are cut again (to two, and one saying so).
    assert response.errors[-1].error == "2 more error(s) dropped: max_errors (2) reached"
    assert limit_hits(port) == {"max_errors": 2}


def test_a_run_shows_its_queue_depth_and_the_consumers_busy(make_stoq: MakeStoq) -> None:
    port = free_port()
    items = [f"item {i}" for i in range(6)]
    stoq = make_stoq(
        providers=["provider"],
        always_dispatch=["worker"],
        plugin_opts={"provider": {"items": json.dumps(items)}, "worker": {"wait_for": "gate"}},
        provider_consumers=2,
        max_queue=10,
        metrics_port=port,
    )
    seen: dict[Any, float] = {}

    async def main() -> None:
        from fakes import Worker

        running = asyncio.ensure_future(stoq.run())
        gate = Worker.started.setdefault("gate", asyncio.Event())
        try:
            for _ in range(500):  # both consumers hold a payload, the rest wait in the queue
                samples = await asyncio.to_thread(scrape, port)
                if (
                    samples.get(("stoq_run_in_flight", ())) == 2
                    and samples.get(("stoq_run_queue_depth", ())) == 4
                ):
                    seen.update(samples)
                    break
                await asyncio.sleep(0.01)
        finally:
            gate.set()
        await running

    asyncio.run(main())

    assert seen[("stoq_run_consumers", ())] == 2
    assert seen[("stoq_run_queue_capacity", ())] == 10
    assert seen[("stoq_run_ingested_total", ())] == 6
    after = scrape(port)
    assert ("stoq_run_queue_depth", ()) not in after  # the run is over
    assert after[("stoq_requests_total", ())] == 6


def test_metrics_are_served_on_loopback_only_by_default(make_stoq: MakeStoq) -> None:
    port = free_port()
    stoq = make_stoq(metrics_port=port)

    assert stoq._observer is not None and stoq._observer.metrics is not None
    assert stoq._observer.metrics.server.server_address[0] == "127.0.0.1"


def test_a_metrics_port_in_use_is_one_clear_error(make_stoq: MakeStoq) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(StoqException, match=rf"cannot serve metrics on 127.0.0.1:{port}"):
            make_stoq(metrics_port=port)


# -- settings ----------------------------------------------------------------------------------


def test_the_core_section_turns_tracing_and_metrics_on(
    make_stoq: MakeStoq, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    port = free_port()
    config = tmp_path / "stoq.cfg"
    config.write_text(f"[core]\ntracing = true\nmetrics_port = {port}\nalways_dispatch = worker\n")
    stoq = make_stoq(config_file=str(config))

    asyncio.run(stoq.scan(b"x"))

    assert "stoq request" in by_name(spans)
    assert scrape(port)[("stoq_requests_total", ())] == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("tracing = maybe", r"\[core\] tracing"),
        ("metrics_port = 70000", "metrics_port must be a port number"),
        ("metrics_port = -1", "metrics_port must be a whole number >= 0"),
    ],
)
def test_a_bad_observability_setting_is_refused(
    make_stoq: MakeStoq, tmp_path: Path, line: str, message: str
) -> None:
    config = tmp_path / "stoq.cfg"
    config.write_text(f"[core]\n{line}\n")

    with pytest.raises(StoqException, match=message):
        make_stoq(config_file=str(config))


@pytest.mark.parametrize(
    ("module", "kwargs", "extra"),
    [
        ("prometheus_client", {"metrics_port": 1}, "stoq-core[metrics]"),
        ("opentelemetry", {"tracing": True}, "stoq-core[otel]"),
    ],
)
def test_a_missing_library_names_the_extra_that_installs_it(
    make_stoq: MakeStoq,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    kwargs: dict[str, Any],
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import then raises ImportError

    with pytest.raises(StoqException, match=re.escape(extra)):
        make_stoq(**kwargs)


# -- off ---------------------------------------------------------------------------------------


def test_off_nothing_is_imported_and_no_call_is_wrapped(
    install_plugins: Callable[..., Path], tmp_path: Path
) -> None:
    site = install_plugins({"worker": "fakes:Worker"}, dist="stoq-test-off")
    script = textwrap.dedent(
        """
        import asyncio, functools, json, sys
        from stoq_core import Stoq
        stoq = Stoq(log_dir=None, always_dispatch=["worker"])
        asyncio.run(stoq.scan(b"x"))
        caller = stoq.plugins.loaded["worker"].callers["scan"]
        print(json.dumps({
            "modules": sorted(m for m in sys.modules if m.split(".")[0] in (
                "opentelemetry", "prometheus_client") or m == "stoq_core._observe"),
            "raw": caller is stoq.plugins.loaded["worker"].hooks["scan"],
            "attribute": "_observer" in vars(stoq),
        }))
        """
    )
    tests = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**_environ(), "PYTHONPATH": f"{site}:{tests}"},
    )

    assert json.loads(done.stdout) == {"modules": [], "raw": True, "attribute": False}


def _environ() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_counts_sent_by_worker_processes_are_added_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # stoq run --jobs: each worker sends its cumulative counts now and then; the serving
    # process adds what is new since that worker's last counts.
    from stoq_core import _observe

    monkeypatch.setattr(_observe, "serve_metrics", False)
    served, worker = _observe._Metrics("127.0.0.1", 1), _observe._Metrics("127.0.0.1", 1)
    other = _observe._Metrics("127.0.0.1", 1)

    def call(metrics: Any, plugin: str, seconds: float) -> None:
        metrics.calls.setdefault((plugin, "scan"), _observe._Histogram()).observe(seconds)

    call(worker, "hash", 0.001)
    first = worker.counts()
    served.add(first)
    call(worker, "hash", 0.002)
    worker.timeouts["yara", "scan"] = 1
    worker.limit_hits["max_payloads"] = 2
    second = worker.counts()
    served.add(second, before=first)
    served.add(second, before=second)  # sent again unchanged: nothing new
    call(other, "hash", 0.5)
    served.add(other.counts())

    histogram = served.calls["hash", "scan"]
    assert sum(histogram.buckets) == 3
    assert histogram.total == pytest.approx(0.503)
    assert served.timeouts == {("yara", "scan"): 1}
    assert served.limit_hits == {"max_payloads": 2}
    assert json.loads(json.dumps(second)) == second  # what a worker sends is plain JSON


_FLUSHED = """
import asyncio, os, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from stoq_core import Stoq, hookimpl

class Noop:
    @hookimpl
    async def scan(self, payload, request):
        return None

out = open(sys.argv[1], "w")
provider = TracerProvider()
# A batch exported once a minute: what a process holds when it ends without exiting.
provider.add_span_processor(
    BatchSpanProcessor(ConsoleSpanExporter(out=out), schedule_delay_millis=60_000)
)
trace.set_tracer_provider(provider)
stoq = Stoq(log_dir=None, plugin_dir_list=[], tracing=True)
stoq.plugins.register("noop", Noop())
asyncio.run(stoq.scan(b"payload", add_start_dispatch=["noop"]))
if sys.argv[2] == "close":
    stoq.close()
out.flush()
os._exit(0)  # as a --jobs worker ends: no exit handlers, no provider shutdown
"""


@pytest.mark.parametrize("close", [True, False])
def test_close_exports_the_spans_a_batch_still_holds(tmp_path: Path, close: bool) -> None:
    exported = tmp_path / "spans.txt"
    done = subprocess.run(
        [sys.executable, "-c", _FLUSHED, str(exported), "close" if close else "no"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    text = exported.read_text()
    assert ('"name": "noop scan"' in text) is close
    assert ('"name": "stoq request"' in text) is close
