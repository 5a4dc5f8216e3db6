"""Hostile Redis: keys deleted under a worker, and garbage where the plugin keeps its own data.

Whatever can write to the task stream can write to the keys beside it. Each test writes there
what the plugin never would, and checks that the worker (or the client) goes on: what cannot be
used costs only the task it belongs to.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from conftest import RedisServer
from redis_helpers import dead_letters, results_by_task
from stoq_plugin_redis import submit, wait
from stoq_plugin_redis._consumer import StreamConsumer
from stoq_plugin_redis._messages import MAX_JSON_VALUES, text

from stoq_core import RunStats, Stoq


def run_worker(stoq: Stoq, timeout: float = 60) -> RunStats:
    return asyncio.run(asyncio.wait_for(stoq.run(), timeout))


def readers_waiting(db: redis.Redis) -> int:
    """How many clients wait in a blocking XREADGROUP."""
    return sum(
        1 for c in db.client_list() if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
    )


def test_deleting_the_task_stream_under_a_waiting_worker_does_not_stop_it(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    # Redis 7 ends an XREADGROUP waiting on a stream that is deleted with an UNBLOCKED error,
    # which stopped the provider ("provider redis failed") and with it the worker.
    stoq = make_stoq({"stop_when_idle": 3})
    problems: list[str] = []

    def delete_then_submit() -> None:
        for _ in range(3):  # more than once, so that a deletion surely lands during a wait
            deadline = time.monotonic() + 10
            while not readers_waiting(db):
                if time.monotonic() > deadline:
                    problems.append("the worker stopped waiting for messages")
                    return
                time.sleep(0.005)
            db.delete("stoq:tasks")
        db.xadd("stoq:tasks", {"task_id": "after", "payload": "x"})

    deleter = threading.Thread(target=delete_then_submit)
    deleter.start()
    try:
        stats = run_worker(stoq)
    finally:
        deleter.join()

    assert problems == []
    assert stats.failed == 0
    assert list(results_by_task(db)) == ["after"]
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0


def test_a_group_destroyed_just_before_the_idle_check_does_not_stop_the_worker(
    server: RedisServer,
    db: redis.Redis,
    make_stoq: Callable[..., Stoq],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The idle check (XPENDING) met NOGROUP, which only the read loop handled: the provider died.
    real = StreamConsumer._drained
    destroyed: list[bool] = []

    async def destroyed_first(self: StreamConsumer) -> bool:
        if not destroyed:
            destroyed.append(await self.client.xgroup_destroy(self.stream, self.group))
        return await real(self)

    monkeypatch.setattr(StreamConsumer, "_drained", destroyed_first)
    [task_id] = asyncio.run(submit([b"before"], url=server.url))

    stats = run_worker(make_stoq())

    assert destroyed == [True]
    assert stats.failed == 0
    assert list(results_by_task(db)) == [task_id]
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0  # the group was made again


def test_a_recorded_error_that_is_not_utf8_is_dead_lettered_with_the_message(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    # A worker that died left the message pending; someone wrote its error hash entry.
    db.xgroup_create("stoq:tasks", "stoq", id="0", mkstream=True)
    message_id = text(db.xadd("stoq:tasks", {"task_id": "orphan", "payload": "x"}))
    db.xreadgroup("stoq", "died", {"stoq:tasks": ">"})
    db.hset("stoq:tasks:errors", message_id, b"\xff\xfe boom")
    [good] = asyncio.run(submit([b"fine"], url=server.url))

    stats = run_worker(make_stoq({"max_deliveries": 1}))

    assert stats.failed == 0
    assert list(results_by_task(db)) == [good]
    [letter] = dead_letters(db)
    assert (letter["task_id"], letter["message_id"]) == ("orphan", message_id)
    assert letter["error"] == "\ufffd\ufffd boom"
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0


def test_metadata_of_too_many_json_values_is_dead_lettered_at_once(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    # Each value costs tens of bytes once parsed: 16 MiB of "{}," held 800 MB per message.
    many = json.dumps({"extra_data": {"ids": [{}] * MAX_JSON_VALUES}})
    fewer = json.dumps({"extra_data": {"ids": [0] * (MAX_JSON_VALUES // 2)}})
    bad = db.xadd("stoq:tasks", {"task_id": "many", "payload": "x", "request_meta": many})
    db.xadd("stoq:tasks", {"task_id": "fewer", "payload": "x", "payload_meta": fewer})

    stats = run_worker(make_stoq())

    assert stats.failed == 0
    assert list(results_by_task(db)) == ["fewer"]
    [letter] = dead_letters(db)
    assert (letter["message_id"], letter["deliveries"]) == (text(bad), "1")
    assert letter["error"] == (
        f"malformed task message: its request_meta field holds more than {MAX_JSON_VALUES} values"
    )


def test_wait_reports_a_garbage_result_marker_as_that_tasks_error(
    server: RedisServer, db: redis.Redis
) -> None:
    entry_id = text(db.xadd("stoq:results", {"task_id": "t-good", "result": '{"n": 1}'}))
    db.set("stoq:result:t-good", entry_id)
    db.set("stoq:result:t-binary", b"\xff\xfe")
    db.set("stoq:result:t-huge", b"99999999999999999999-0")  # an id's form, numbers too large

    async def outcomes() -> dict[str, Any]:
        ended = wait(["t-binary", "t-huge", "t-good"], url=server.url, timeout=10)
        return {o.task_id: o async for o in ended}

    ended = asyncio.run(outcomes())

    assert ended["t-good"].response == {"n": 1}
    assert ended["t-binary"].response is None
    assert ended["t-binary"].error == (
        "its result marker stoq:result:t-binary holds b'\\xff\\xfe', not a results-stream entry id"
    )
    assert ended["t-huge"].response is None
    assert ended["t-huge"].error.startswith(
        "its result marker holds '99999999999999999999-0', which Redis refuses: "
    )
