"""When a message is acknowledged: once the core says every connector has its result.

The provider queues each message as a ``QueueItem`` whose ``on_done`` acknowledges it when
nothing failed, and otherwise records the error and leaves it pending, whichever connectors the
run has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import redis
from conftest import RedisServer
from redis_helpers import dead_letters, results_by_task, run
from stoq_plugin_redis import submit

from stoq_core import Stoq


def test_messages_are_acknowledged_when_another_connector_saved_them(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    task_ids = asyncio.run(submit([f"payload {n}".encode() for n in range(10)], url=server.url))
    record = tmp_path / "flaky.txt"

    run(make_stoq(connectors=["flaky"], plugin_opts={"flaky": {"record": str(record)}}))

    assert sorted(record.read_text().split()) == sorted(task_ids)
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert db.xlen("stoq:tasks") == 0
    assert not db.exists("stoq:results")  # the redis connector was not named


def test_a_worker_that_raises_still_gets_its_message_a_result_and_an_acknowledgement(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    [task_id] = asyncio.run(submit([b"x"], url=server.url))

    run(make_stoq(always_dispatch=["raiser"]))

    [response] = results_by_task(db)[task_id]
    assert "the raiser raised" in response["errors"][0]["error"]
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert dead_letters(db) == []


def test_a_task_for_an_archiver_the_worker_lacks_is_retried_then_dead_lettered(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    db.xadd("stoq:tasks", {"task_id": "t-1", "archiver": "text", "task": '{"text": "hi"}'})

    run(make_stoq({"max_deliveries": 2}), timeout=60)  # no -S text

    [letter] = dead_letters(db)
    assert (letter["task_id"], letter["deliveries"]) == ("t-1", "3")
    assert "source archiver 'text' is not loaded" in letter["error"]
    assert results_by_task(db) == {}


def test_a_run_stopped_early_leaves_no_message_with_a_result_unacknowledged(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    asyncio.run(submit([f"payload {n}".encode() for n in range(300)], url=server.url))
    stoq = make_stoq(
        {"stop_when_idle": 0},
        always_dispatch=["sleepy"],
        plugin_opts={"sleepy": {"delay": 0.02}},
        provider_consumers=4,
    )

    async def stop_after_some_results() -> None:
        stop = asyncio.Event()
        running = asyncio.ensure_future(stoq.run(stop=stop))
        while db.xlen("stoq:results") < 20:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(running, 30)

    asyncio.run(stop_after_some_results())

    saved = results_by_task(db)
    assert 20 <= len(saved) < 300
    scanned = {r[0]["request_meta"]["extra_data"]["redis_message_id"] for r in saved.values()}
    pending = {
        entry["message_id"].decode()
        for entry in db.xpending_range("stoq:tasks", "stoq", min="-", max="+", count=1000)
    }
    # What was read but never scanned stays pending, to be delivered again; nothing else does.
    assert scanned & pending == set()
    assert db.xlen("stoq:tasks") == 300 - len(saved)
