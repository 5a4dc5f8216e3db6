"""Stoq.run: providers feed a bounded queue that consumers scan until it drains."""

from __future__ import annotations

import asyncio

import pytest
from fakes import SAVED

from stoq_core import RequestMeta, RunStats, StoqException


def contents(response) -> list[int]:
    return [r.size for r in response.results]


def test_run_without_providers_is_an_error(make_stoq):
    with pytest.raises(StoqException, match="no provider"):
        asyncio.run(make_stoq().run())


def test_run_scans_every_queued_payload_and_saves_through_connectors(make_stoq):
    items = [f"payload-{i}" for i in range(25)]
    stoq = make_stoq(
        providers=["provider"],
        connectors=["connector"],
        always_dispatch=["worker"],
        max_queue=2,
        provider_consumers=3,
        plugin_opts={"provider": {"items": items}},
    )
    stats = asyncio.run(stoq.run(add_start_dispatch=["worker2"]))
    assert (stats.ingested, stats.scanned, stats.with_errors, stats.failed) == (25, 25, 0, 0)
    saved = SAVED["connector"]
    assert len(saved) == 25
    assert all(set(r.results[0].workers) == {"worker", "worker2"} for r in saved)


def test_run_applies_its_request_meta_to_payloads_and_keeps_a_requests_own(make_stoq):
    items = ["plain", {"request": "has-own", "source": "own"}, {"request": "default-meta"}]
    stoq = make_stoq(
        providers=["provider"], connectors=["connector"], plugin_opts={"provider": {"items": items}}
    )
    asyncio.run(stoq.run(request_meta=RequestMeta(source="run")))
    sources = sorted(r.request_meta.source for r in SAVED["connector"])
    assert sources == ["own", "run", "run"]
    # Each request got its own copy: a plugin changing one cannot touch another.
    metas = [r.request_meta for r in SAVED["connector"]]
    assert len({id(m) for m in metas}) == 3


def test_run_loads_archiver_tasks_through_the_source_archiver(make_stoq):
    stoq = make_stoq(
        providers=["provider"],
        source_archivers=["archiver"],
        connectors=["connector"],
        always_dispatch=["worker"],
        plugin_opts={"provider": {"items": [{"archiver": "archiver", "content": "from-archive"}]}},
    )
    asyncio.run(stoq.run())
    [response] = SAVED["connector"]
    assert response.results[0].size == len(b"from-archive")
    assert response.results[0].payload_meta.extra_data == {"from": "archive"}


def test_a_failing_provider_is_logged_and_the_others_go_on(make_stoq, caplog):
    stoq = make_stoq(
        providers=["provider", "provider2"],
        connectors=["connector"],
        plugin_opts={
            "provider": {"items": ["a"], "fail": True},
            "provider2": {"items": ["b", "c"]},
        },
    )
    asyncio.run(stoq.run())
    assert len(SAVED["connector"]) == 3
    assert "provider provider failed: RuntimeError: provider lost its source" in caplog.text


def test_run_queue_is_bounded_by_max_queue(make_stoq):
    """A provider can never get more than max_queue items ahead of the consumers."""
    stoq = make_stoq(
        providers=["provider"],
        always_dispatch=["worker"],
        max_queue=3,
        provider_consumers=1,
        plugin_opts={"provider": {"items": [str(i) for i in range(20)]}},
    )
    peak = 0
    original = asyncio.Queue.put

    async def watched_put(self, item):
        nonlocal peak
        await original(self, item)
        peak = max(peak, self.qsize())

    asyncio.Queue.put = watched_put
    try:
        asyncio.run(stoq.run())
    finally:
        asyncio.Queue.put = original
    assert 1 <= peak <= 3


def test_run_reports_each_saved_response_and_counts_failures(make_stoq):
    seen = []
    stoq = make_stoq(
        providers=["provider", "provider2"],
        connectors=["connector"],
        plugin_opts={
            "provider": {"items": ["a", {"archiver": "not_loaded", "content": "x"}], "fail": True},
            "provider2": {"items": ["b"]},
        },
    )
    stats = asyncio.run(stoq.run(on_response=lambda r: seen.append(len(SAVED["connector"]))))
    # Each response reached on_response after the connector had saved it.
    assert sorted(seen) == [1, 2]
    assert (stats.ingested, stats.scanned, stats.failed) == (3, 2, 2)


def test_setting_stop_ends_the_providers_and_drains_the_queue(make_stoq, install_plugins):
    install_plugins({"endless": "fakes:EndlessProvider"})
    stoq = make_stoq(providers=["endless"], connectors=["connector"], max_queue=5)

    async def main():
        stop = asyncio.Event()

        def on_response(response):
            if len(SAVED["connector"]) == 20:
                stop.set()

        stats = RunStats()
        await asyncio.wait_for(stoq.run(stop=stop, on_response=on_response, stats=stats), 10)
        return stats

    stats = asyncio.run(main())
    assert stats.scanned >= 20
    # Everything queued before the stop was scanned, nothing was left behind.
    assert stats.scanned == stats.ingested


def test_a_queue_item_learns_how_its_scan_ended(make_stoq, install_plugins):
    """QueueItem.on_done: after the connectors, with what failed (the hook a queue acks on)."""
    install_plugins({"tracked": "fakes:TrackedProvider"})
    stoq = make_stoq(
        providers=["tracked"],
        source_archivers=["archiver"],
        connectors=["connector", "connector2"],
        plugin_opts={"connector2": {"fail": True}},
    )
    from fakes import TrackedProvider

    asyncio.run(stoq.run(request_meta=RequestMeta(source="run")))
    outcomes = TrackedProvider.outcomes
    ok = outcomes["plain"]
    assert [r.request_meta.source for r in ok[0]] == ["item"]  # the item's own metadata won
    assert [e.plugin_name for e in ok[1]] == ["connector2"]  # the failed save is reported
    assert SAVED["connector"][0] is ok[0][0]  # ...and it came after the connectors ran
    missing = outcomes["missing"]
    assert missing[0] == []
    assert "cannot load" in missing[1][0].error
    assert missing[1][0].plugin_name == "archiver"


def test_provider_consumers_scan_queued_payloads_concurrently(make_stoq, install_plugins):
    install_plugins({"rendezvous": "fakes:Rendezvous"})
    stoq = make_stoq(
        providers=["provider"],
        connectors=["connector"],
        always_dispatch=["rendezvous"],
        provider_consumers=3,
        plugin_opts={"provider": {"items": ["a", "b", "c"]}, "rendezvous": {"parties": 3}},
    )
    asyncio.run(stoq.run())
    # Each scan waited for the other two: with fewer consumers than 3 they would time out.
    assert [r.errors for r in SAVED["connector"]] == [[], [], []]
