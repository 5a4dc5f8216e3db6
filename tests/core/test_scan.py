"""scan_request's rounds: dispatch, workers, required workers, extraction (v3-behaviour.md)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from core_helpers import errors_of, scan
from fakes import MARK, ContextMarker, TaskRecorder, Waiting

from stoq_core import PayloadMeta, Stoq


def opts(**plugins: dict[str, object]) -> dict[str, dict[str, object]]:
    """plugin_opts; ``None`` is written as JSON ``null`` (the core writes lists as ``a, b``)."""
    return {
        name: {k: "null" if v is None else v for k, v in options.items()}
        for name, options in plugins.items()
    }


def test_start_dispatch_runs_on_the_root_only(make_stoq):
    stoq = make_stoq(plugin_opts=opts(extractor={"extract": {"root": ["child"]}}))
    _, results = scan(stoq, start=["extractor", "worker"])
    assert results[b"root"].plugins_run["workers"] == ["extractor", "worker"]
    assert results[b"child"].plugins_run["workers"] == []


def test_always_dispatch_runs_on_extracted_payloads_too(make_stoq):
    stoq = make_stoq(
        always_dispatch=["worker"], plugin_opts=opts(extractor={"extract": {"root": ["child"]}})
    )
    _, results = scan(stoq, start=["extractor"])
    assert results[b"root"].plugins_run["workers"] == ["extractor", "worker"]
    assert results[b"child"].plugins_run["workers"] == ["worker"]


def test_root_with_should_scan_false_gets_no_workers(make_stoq):
    stoq = make_stoq(always_dispatch=["worker"], dispatchers=["dispatcher"])
    response, results = scan(stoq, start=["worker2"], payload_meta=PayloadMeta(should_scan=False))
    assert results[b"root"].plugins_run["workers"] == []
    assert stoq.load_plugin("dispatcher").calls == []
    assert response.results[0].workers == {}


def test_dispatchers_see_every_scannable_payload_every_round(make_stoq):
    stoq = make_stoq(
        dispatchers=["dispatcher"],
        plugin_opts=opts(
            dispatcher={"route": {"root": ["extractor"]}},
            extractor={"extract": {"root": ["child"]}},
        ),
    )
    scan(stoq)
    calls = stoq.load_plugin("dispatcher").calls
    # Round 1 sees the root alone; round 2 sees the root and its child, in a request of two.
    assert calls[0] == (b"root", 1)
    assert (b"root", 2) in calls and (b"child", 2) in calls


def test_dispatcher_can_route_on_earlier_results(make_stoq):
    """A dispatcher picks a worker in round 2 because of what round 1 produced."""
    stoq = make_stoq(
        dispatchers=["dispatcher"],
        plugin_opts=opts(
            dispatcher={"route": {"child": ["worker2"]}},
            extractor={"extract": {"root": ["child"]}},
        ),
    )
    _, results = scan(stoq, start=["extractor"])
    assert results[b"child"].plugins_run["workers"] == ["worker2"]


def test_dispatch_meta_is_kept_per_payload_but_not_in_the_json(make_stoq):
    stoq = make_stoq(
        dispatchers=["dispatcher"],
        plugin_opts=opts(dispatcher={"meta": {"rule": "exe_file"}, "route": {"*": ["worker"]}}),
    )
    from stoq_core import Payload, Request

    request = Request([Payload(b"root")])
    response = asyncio.run(stoq.scan_request(request))
    assert request.payloads[0].dispatch_meta == {"dispatcher": {"rule": "exe_file"}}
    assert "exe_file" not in str(response)
    assert response.results[0].workers == {"worker": {"worker": "worker"}}


def test_a_raising_dispatcher_adds_an_error_and_the_scan_goes_on(make_stoq):
    stoq = make_stoq(
        always_dispatch=["worker"],
        dispatchers=["dispatcher"],
        plugin_opts=opts(dispatcher={"raise_on": "root"}),
    )
    response, results = scan(stoq)
    assert results[b"root"].workers == {"worker": {"worker": "worker"}}
    [error] = errors_of(response, "dispatcher")
    assert "RuntimeError: dispatcher exploded" in error
    assert response.errors[0].payload_id == results[b"root"].payload_id


def test_errors_a_dispatcher_returns_are_kept(make_stoq):
    """v3 bug: DispatcherResponse.errors were dropped."""
    stoq = make_stoq(
        dispatchers=["dispatcher"], plugin_opts=opts(dispatcher={"errors": ["rule set stale"]})
    )
    response, _ = scan(stoq)
    assert [e.error for e in response.errors] == ["rule set stale"]


def test_each_worker_runs_at_most_once_per_payload(make_stoq):
    """Named by start, always, two dispatchers and dispatch_to: it still runs once."""
    stoq = make_stoq(
        always_dispatch=["worker"],
        dispatchers=["dispatcher", "dispatcher2"],
        plugin_opts=opts(
            dispatcher={"route": {"*": ["worker"]}},
            dispatcher2={"route": {"*": ["worker", "worker2"]}},
            worker2={"dispatch_to": ["worker"]},
        ),
    )
    _, results = scan(stoq, start=["worker"])
    assert results[b"root"].plugins_run["workers"] == ["worker", "worker2"]
    assert len(stoq.load_plugin("worker").calls) == 1


def test_dispatch_to_from_a_worker_runs_more_workers_next_round(make_stoq):
    stoq = make_stoq(plugin_opts=opts(worker={"dispatch_to": ["worker2"]}))
    _, results = scan(stoq, start=["worker"])
    assert results[b"root"].plugins_run["workers"] == ["worker", "worker2"]
    # worker2 ran after worker: it saw worker's results.
    assert stoq.load_plugin("worker2").calls == [(b"root", ["worker"])]


def test_dispatch_to_on_an_extracted_payload_schedules_its_workers(make_stoq):
    stoq = make_stoq(
        plugin_opts=opts(
            extractor={"extract": {"root": [{"content": "child", "dispatch_to": ["worker"]}]}}
        )
    )
    _, results = scan(stoq, start=["extractor"])
    assert results[b"child"].plugins_run["workers"] == ["worker"]
    assert results[b"child"].payload_meta.dispatch_to == ["worker"]


def test_extracted_payload_with_should_scan_false_stays_unscanned(make_stoq):
    stoq = make_stoq(
        always_dispatch=["worker"],
        plugin_opts=opts(
            extractor={
                "extract": {
                    "root": [{"content": "child", "should_scan": False, "dispatch_to": ["worker2"]}]
                }
            }
        ),
    )
    _, results = scan(stoq, start=["extractor"])
    assert results[b"child"].plugins_run["workers"] == []


def test_required_workers_run_first_and_their_dependant_next_round(make_stoq):
    stoq = make_stoq(plugin_opts=opts(worker={"required_workers": "worker2, worker3"}))
    _, results = scan(stoq, start=["worker"])
    assert results[b"root"].plugins_run["workers"] == ["worker2", "worker3", "worker"]
    # The dependant saw both results when it ran.
    [(_, seen)] = stoq.load_plugin("worker").calls
    assert sorted(seen) == ["worker2", "worker3"]


def test_required_workers_resolve_recursively(make_stoq):
    stoq = make_stoq(
        plugin_opts=opts(
            worker={"required_workers": "worker2"}, worker2={"required_workers": "worker3"}
        )
    )
    _, results = scan(stoq, start=["worker"])
    assert results[b"root"].plugins_run["workers"] == ["worker3", "worker2", "worker"]


def test_circular_required_workers_add_an_error(make_stoq):
    stoq = make_stoq(
        always_dispatch=["worker3"],
        plugin_opts=opts(
            worker={"required_workers": "worker2"}, worker2={"required_workers": "worker"}
        ),
    )
    response, results = scan(stoq, start=["worker"])
    [error] = errors_of(response, "worker")
    assert "Circular" in error
    assert results[b"root"].plugins_run["workers"] == ["worker3"]


def test_required_worker_chain_deeper_than_the_limit_adds_an_error(make_stoq):
    stoq = make_stoq(
        max_required_worker_depth=1,
        plugin_opts=opts(
            worker={"required_workers": "worker2"}, worker2={"required_workers": "worker3"}
        ),
    )
    response, results = scan(stoq, start=["worker"])
    [error] = errors_of(response, "worker")
    assert "Max required plugin depth" in error
    assert results[b"root"].plugins_run["workers"] == []


def test_a_failed_required_worker_still_counts_as_run(make_stoq):
    stoq = make_stoq(
        plugin_opts=opts(worker={"required_workers": "worker2"}, worker2={"raise_on": "root"})
    )
    response, results = scan(stoq, start=["worker"])
    assert results[b"root"].plugins_run["workers"] == ["worker2", "worker"]
    assert "worker" in results[b"root"].workers
    assert len(errors_of(response, "worker2")) == 1


def test_a_worker_that_is_not_installed_adds_one_error_and_the_scan_goes_on(make_stoq):
    stoq = make_stoq(
        dispatchers=["dispatcher"],
        always_dispatch=["worker"],
        plugin_opts=opts(
            dispatcher={"route": {"*": ["no_such_worker"]}}, worker={"extract": {"root": ["child"]}}
        ),
    )
    response, results = scan(stoq)
    [error] = errors_of(response, "no_such_worker")
    assert "not installed" in error
    assert results[b"child"].plugins_run["workers"] == ["worker"]


def test_a_plugin_named_as_worker_without_scan_adds_an_error(make_stoq):
    stoq = make_stoq()
    response, _ = scan(stoq, start=["decorator"])
    [error] = errors_of(response, "decorator")
    assert "not a worker" in error


def test_the_workers_of_a_round_run_concurrently(make_stoq):
    """Each worker waits for the other to start: run one after the other, they would time out."""
    stoq = make_stoq(
        plugin_opts=opts(worker={"wait_for": "worker2"}, worker2={"wait_for": "worker"})
    )
    response, results = scan(stoq, start=["worker", "worker2"])
    assert response.errors == []
    assert set(results[b"root"].workers) == {"worker", "worker2"}


def test_calls_that_never_wait_run_in_the_scans_own_task(make_stoq, install_plugins):
    # A task per call would cost more than most calls: only calls that wait get one.
    install_plugins({"recorder": "fakes:TaskRecorder"})
    stoq = make_stoq(
        always_dispatch=["recorder", "extractor"],
        plugin_opts={"extractor": {"extract": {"root": ["a", "b", "c"]}}},
    )
    TaskRecorder.tasks.clear()

    async def main():
        response = await stoq.scan(b"root")
        return response, asyncio.current_task()

    response, scan_task = asyncio.run(main())
    assert len(response.results) == 4
    assert TaskRecorder.tasks == [scan_task] * 4


def test_a_raising_worker_is_recorded_as_run_with_an_error(make_stoq):
    stoq = make_stoq(plugin_opts=opts(worker={"raise_on": "root"}))
    response, results = scan(stoq, start=["worker", "worker2"])
    assert results[b"root"].plugins_run["workers"] == ["worker", "worker2"]
    assert "worker" not in results[b"root"].workers
    [error] = response.errors
    assert error.plugin_name == "worker"
    assert error.payload_id == results[b"root"].payload_id
    assert "ValueError" in error.error


def test_a_worker_returning_no_results_is_run_but_not_in_workers(make_stoq):
    stoq = make_stoq(plugin_opts=opts(worker={"results": None}))
    _, results = scan(stoq, start=["worker"])
    assert results[b"root"].plugins_run["workers"] == ["worker"]
    assert results[b"root"].workers == {}


def test_errors_a_worker_returns_are_added(make_stoq):
    stoq = make_stoq(plugin_opts=opts(worker={"errors": "partial parse, bad header"}))
    response, results = scan(stoq, start=["worker"])
    assert [(e.error, e.plugin_name) for e in response.errors] == [
        ("partial parse", "worker"),
        ("bad header", "worker"),
    ]
    assert results[b"root"].workers["worker"] == {"worker": "worker"}


def test_a_worker_returning_the_wrong_type_adds_an_error(make_stoq):
    stoq = make_stoq()
    response, results = scan(stoq, start=["wrong_return", "worker"])
    [error] = errors_of(response, "wrong_return")
    assert "expected WorkerResponse" in error
    assert "worker" in results[b"root"].workers


def test_extracted_payloads_record_their_worker_and_parent(make_stoq):
    stoq = make_stoq(
        always_dispatch=["extractor"],
        plugin_opts=opts(extractor={"extract": {"root": ["a"], "a": ["b"]}}),
    )
    _, results = scan(stoq)
    assert results[b"a"].extracted_by == ["extractor"]
    assert results[b"a"].extracted_from == [results[b"root"].payload_id]
    assert results[b"b"].extracted_from == [results[b"a"].payload_id]
    assert results[b"root"].extracted_from == []


def test_duplicate_extracted_payloads_are_merged_by_sha256(make_stoq):
    stoq = make_stoq(
        always_dispatch=["extractor", "worker"],
        plugin_opts=opts(
            extractor={"extract": {"root": ["twin", "a"], "a": ["twin", "root"]}},
            worker={"extract": {"root": ["twin"]}},
        ),
    )
    response, results = scan(stoq)
    assert len(response.results) == 3  # root, twin, a
    twin = results[b"twin"]
    assert twin.extracted_by == ["extractor", "worker", "extractor"]
    a_id, root_id = results[b"a"].payload_id, results[b"root"].payload_id
    assert twin.extracted_from == [root_id, root_id, a_id]
    # Extracting the root's own bytes again merges into the root.
    assert results[b"root"].extracted_from == [a_id]


def test_max_recursion_stops_extraction_with_an_error(make_stoq):
    stoq = make_stoq(
        max_recursion=2,
        always_dispatch=["extractor"],
        plugin_opts=opts(extractor={"extract": {"root": ["a"], "a": ["b"], "b": ["c"]}}),
    )
    response, results = scan(stoq)
    assert set(results) == {b"root", b"a", b"b"}
    assert results[b"b"].plugins_run["workers"] == []
    [error] = response.errors
    assert "Final worker round (2)" in error.error
    assert error.payload_id == results[b"b"].payload_id


def test_max_recursion_zero_given_as_argument_beats_the_config_file(make_stoq, tmp_path):
    """v3 bug: ``max_recursion or config`` let the file override an explicit 0."""
    (tmp_path / "stoq.cfg").write_text("[core]\nmax_recursion = 5\n")
    stoq = make_stoq(max_recursion=0, always_dispatch=["worker"])
    assert stoq.max_recursion == 0
    _, results = scan(stoq)
    assert results[b"root"].plugins_run["workers"] == []


def test_a_str_payload_has_its_byte_length_as_size(make_stoq):
    stoq = make_stoq()
    response = asyncio.run(stoq.scan("héllo"))
    assert response.results[0].size == 6


def test_plain_def_hooks_run_in_a_worker_thread(make_stoq):
    stoq = make_stoq()
    _, results = scan(stoq, start=["sync"])
    assert results[b"root"].workers["sync"]["thread"] != threading.get_ident()


def test_a_module_with_hookimpls_is_a_plugin(make_stoq):
    stoq = make_stoq()
    _, results = scan(stoq, content=b"12345", start=["module_plugin"])
    assert results[b"12345"].workers["module_plugin"] == {"module": True, "size": 5}


def test_one_plugin_plays_each_role_it_is_named_for(make_stoq):
    stoq = make_stoq(dispatchers=["multi"], connectors=["multi"])
    from fakes import SAVED

    from stoq_core import Payload, Request

    request = Request([Payload(b"root")])
    response = asyncio.run(stoq.scan_request(request, ["multi"]))
    assert response.results[0].workers == {"multi": {"role": "worker"}}
    assert request.payloads[0].dispatch_meta == {"multi": {"role": "dispatcher"}}
    assert SAVED["multi"] == [response]


def test_ratelimit_spaces_scans_without_blocking_the_event_loop(make_stoq):
    stoq: Stoq = make_stoq()

    async def main() -> tuple[float, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        began = loop.time()
        for _ in range(3):
            await stoq.scan(b"x", ratelimit="10/1")
        elapsed = loop.time() - began
        task.cancel()
        return elapsed, ticks

    elapsed, ticks = asyncio.run(main())
    assert elapsed >= 0.19  # three calls at most ten a second: two gaps of 0.1 s
    assert ticks >= 10  # the loop kept running other tasks while waiting


def test_a_plugin_past_its_timeout_is_abandoned_with_an_error(make_stoq, install_plugins):
    install_plugins({"sleepy": "fakes:Sleepy", "sleepy_sync": "fakes:SleepySync"})
    stoq = make_stoq(timeout=0.2, plugin_opts={"sleepy_sync": {"timeout": "0.3"}})
    response, results = scan(stoq, start=["sleepy", "sleepy_sync", "worker"])
    assert errors_of(response, "sleepy") == ["scan timed out after 0.2 s"]
    # The plugin's own timeout option overrides the core's.
    assert errors_of(response, "sleepy_sync") == ["scan timed out after 0.3 s"]
    assert results[b"root"].workers == {"worker": {"worker": "worker"}}
    assert results[b"root"].plugins_run["workers"] == ["sleepy", "sleepy_sync", "worker"]


def test_a_plugin_that_waits_is_carried_through_its_waits(make_stoq, install_plugins):
    install_plugins({"waiting": "fakes:Waiting", "failing": "fakes:Waiting"})
    stoq = make_stoq(plugin_opts={"failing": {"fail": "true"}}, timeout=5)
    response, results = scan(stoq, start=["waiting", "failing"])
    assert results[b"root"].workers == {"waiting": {"waited": 3}}
    assert errors_of(response, "failing") == ["scan failed: ValueError: failed after waiting"]


def test_a_time_limit_counts_from_the_call_not_from_its_first_wait(make_stoq, install_plugins):
    # One second of blocking work, then a wait: a 1.5 s limit ends the call 0.5 s into the wait.
    install_plugins({"slow_start": "fakes:Waiting"})
    stoq = make_stoq(plugin_opts={"slow_start": {"blocking_start": "1.0", "sleep": "60"}})
    stoq.timeout = 1.5
    Waiting.waited.clear()
    response, _ = scan(stoq, start=["slow_start"])
    assert errors_of(response, "slow_start") == ["scan timed out after 1.5 s"]
    [waited] = Waiting.waited
    assert waited < 1.0  # counted from the wait, the limit would end it 1.5 s into the wait


def test_cancelling_a_scan_reaches_a_waiting_plugin_and_the_caller(make_stoq, install_plugins):
    install_plugins({"waiting": "fakes:Waiting"})
    stoq = make_stoq(plugin_opts={"waiting": {"sleep": "60"}})
    Waiting.finished.clear()

    async def main():
        task = asyncio.ensure_future(stoq.scan(b"x", add_start_dispatch=["waiting"]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert Waiting.finished == ["cancelled"]


def test_each_plugin_call_has_its_own_copy_of_the_callers_context(make_stoq, install_plugins):
    # As under asyncio.gather, where each call was a task: a ContextVar a plugin sets is its
    # own (it lasts across its waits), it never reaches the next plugin or the caller, and
    # every call starts from the caller's value, a plain def in its thread included.
    install_plugins({
        "first": "fakes:ContextMarker", "second": "fakes:ContextMarker",
        "waiter": "fakes:ContextMarker", "blocking": "fakes:BlockingContextMarker",
    })  # fmt: skip
    stoq = make_stoq(plugin_opts={"waiter": {"waits": "3"}})
    ContextMarker.seen.clear()

    async def main() -> str:
        MARK.set("caller")
        await stoq.scan(b"one", add_start_dispatch=["first"])
        await stoq.scan(b"two", add_start_dispatch=["waiter", "blocking", "second"])
        return MARK.get()

    assert asyncio.run(main()) == "caller"
    assert sorted(ContextMarker.seen) == [
        ("blocking", "before: caller"),
        ("first", "after: first"),
        ("first", "before: caller"),
        ("second", "after: second"),
        ("second", "before: caller"),
        ("waiter", "after: waiter"),
        ("waiter", "before: caller"),
    ]


def test_the_request_deadline_returns_what_was_done(make_stoq, install_plugins):
    install_plugins({"sleepy": "fakes:Sleepy"})
    stoq = make_stoq(
        deadline=0.3,
        always_dispatch=["extractor"],
        plugin_opts={"extractor": {"extract": {"root": ["child"]}}, "sleepy": {"timeout": "0"}},
    )
    response, results = scan(stoq, start=["sleepy"])
    assert errors_of(response, "sleepy") == ["scan stopped at the request deadline (0.3 s)"]
    assert results[b"root"].workers["extractor"] == {"worker": "extractor"}
    assert b"child" in results


def test_extraction_limits_drop_payloads_with_one_error_per_limit(make_stoq):
    many = [f"member-{i}" for i in range(30)]
    stoq = make_stoq(
        always_dispatch=["extractor"],
        max_payloads=11,
        plugin_opts={"extractor": {"extract": {"root": many}}},
    )
    response, _results = scan(stoq)
    assert len(response.results) == 11
    [error] = response.errors
    assert error.error == "max_payloads (11) exceeded: 20 extracted payload(s) dropped"
    assert error.plugin_name == "extractor"


def test_max_payload_size_and_max_extracted_bytes_are_enforced(make_stoq):
    stoq = make_stoq(
        always_dispatch=["extractor"],
        max_payload_size=6,
        max_extracted_bytes=12,
        plugin_opts={"extractor": {"extract": {"root": ["toolarge", "aaaaa", "bbbbb", "ccccc"]}}},
    )
    response, results = scan(stoq)
    assert set(results) == {b"root", b"aaaaa", b"bbbbb"}
    assert sorted(e.error for e in response.errors) == [
        "max_extracted_bytes (12 bytes) exceeded: 1 extracted payload(s) dropped",
        "max_payload_size (6 bytes) exceeded: 1 extracted payload(s) dropped",
    ]


def test_results_that_cannot_be_written_as_json_are_dropped_with_an_error(make_stoq):
    stoq = make_stoq(plugin_opts={"worker": {"results": {"ok": True}}})
    worker = stoq.load_plugin("worker")
    cycle: list[object] = []
    cycle.append(cycle)
    for bad, expected in (
        ({"handle": object()}, "results['handle'] is a object, which cannot be written as JSON"),
        ({"deep": cycle}, "nests deeper than 64 levels"),
        ({("a", "b"): 1}, "has a key of type tuple"),
    ):
        worker.results = bad
        response, results = scan(stoq, start=["worker", "worker2"])
        [error] = errors_of(response, "worker")
        assert expected in error and error.endswith("results dropped")
        assert "worker" not in results[b"root"].workers
        assert "worker2" in results[b"root"].workers
        response.to_dict()  # and the response itself still serialises


def test_deep_results_without_a_cycle_are_kept(make_stoq):
    stoq = make_stoq()
    worker = stoq.load_plugin("worker")
    deep: dict[str, object] = {"leaf": b"bytes", "when": {1, 2}}
    for _ in range(200):
        deep = {"down": [deep]}
    worker.results = deep
    response, results = scan(stoq, start=["worker"])
    assert response.errors == []
    assert results[b"root"].workers["worker"] is deep


def test_huge_results_are_dropped_with_an_error(make_stoq):
    stoq = make_stoq(max_result_size=1000)
    worker = stoq.load_plugin("worker")
    for huge in ({"text": "x" * 2000}, {"nested": [{"blob": b"y" * 2000}]}):
        worker.results = huge
        response, results = scan(stoq, start=["worker"])
        [error] = errors_of(response, "worker")
        assert "too large" in error
        assert results[b"root"].workers == {}


def test_bytes_sets_and_datetimes_are_acceptable_results(make_stoq):
    import datetime

    stoq = make_stoq()
    worker = stoq.load_plugin("worker")
    worker.results = {
        "raw": b"\x00MZ",
        "tags": {"a"},
        "when": datetime.date(2026, 1, 1),
        "n": [1, (2, 3)],
    }
    response, results = scan(stoq, start=["worker"])
    assert response.errors == []
    assert results[b"root"].workers["worker"]["raw"] == b"\x00MZ"


def test_scan_goes_through_scan_request_so_a_subclass_sees_every_scan(tmp_path):
    class Counting(Stoq):
        requests = 0

        async def scan_request(self, request, add_start_dispatch=None):
            Counting.requests += 1
            return await super().scan_request(request, add_start_dispatch)

    stoq = Counting(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])
    asyncio.run(stoq.scan(b"one"))
    assert Counting.requests == 1
