"""Stoq.run: providers feed a bounded queue that consumers scan until it drains."""

from __future__ import annotations

import asyncio

import pytest
from fakes import SAVED

from stoq_core import RequestMeta, StoqException


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
    assert asyncio.run(stoq.run(add_start_dispatch=["worker2"])) is None
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
