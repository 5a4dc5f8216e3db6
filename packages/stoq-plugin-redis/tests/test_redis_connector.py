"""The connector: one result per task id in the results stream, whatever is saved twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import redis
from conftest import RedisServer
from redis_helpers import results_by_task

from stoq_core import Payload, Request, RequestMeta, Stoq, StoqResponse
from stoq_core.testing import call_hook


def response_for(task_id: str | None, content: bytes = b"x") -> StoqResponse:
    extra_data = {} if task_id is None else {"task_id": task_id}
    return StoqResponse(Request([Payload(content)], RequestMeta(extra_data=extra_data)))


def test_save_writes_the_response_to_the_results_stream_under_its_task_id(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    stoq = stoq_with("redis", {"url": server.url})
    response = response_for("task-1")

    outcome = call_hook(stoq, "redis", "save", response)

    assert outcome.errors == []
    saved = results_by_task(db)
    assert list(saved) == ["task-1"]
    assert saved["task-1"] == [json.loads(json.dumps(response.to_dict(), default=str))]
    entry_id = db.xrange("stoq:results")[0][0]
    assert db.get("stoq:result:task-1") == entry_id


def test_saving_one_task_twice_leaves_one_result(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    stoq = stoq_with("redis", {"url": server.url})
    first, second = response_for("task-1", b"first"), response_for("task-1", b"second")

    call_hook(stoq, "redis", "save", first)
    call_hook(stoq, "redis", "save", second)

    saved = results_by_task(db)
    assert len(saved["task-1"]) == 1
    assert saved["task-1"][0]["scan_id"] == first.scan_id


def test_result_ttl_bounds_the_marker_of_a_saved_task(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    stoq = stoq_with("redis", {"url": server.url, "result_ttl": 50})

    call_hook(stoq, "redis", "save", response_for("task-1"))

    assert 0 < db.ttl("stoq:result:task-1") <= 50


def test_results_maxlen_trims_the_results_stream(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    plugin = stoq_with("redis", {"url": server.url, "results_maxlen": 10}).load_plugin("redis")

    async def save_many() -> None:
        for number in range(300):
            await plugin.save(response_for(f"task-{number}"))

    asyncio.run(save_many())

    # Approximate trimming (MAXLEN ~) keeps whole nodes of about 100 entries.
    assert db.xlen("stoq:results") < 300


def test_a_response_without_a_task_id_is_keyed_by_its_scan_id(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    stoq = stoq_with("redis", {"url": server.url, "results_stream": "lab:out"})
    response = response_for(None)

    call_hook(stoq, "redis", "save", response)

    assert list(results_by_task(db, "lab:out")) == [response.scan_id]
