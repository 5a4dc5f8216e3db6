"""Faults: killed workers, a restarted Redis, messages that always fail, failing connectors.

Every test ends by counting: each submission has exactly one result (or, for the one that can
never succeed, one dead-letter entry), and nothing is left pending.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from conftest import RedisServer, Workers
from redis_helpers import (
    dead_letters,
    pending_on,
    result_markers,
    results_by_task,
    run,
    wait_until,
)
from stoq_plugin_redis import submit, wait

from stoq_core import Stoq


def assert_one_result_each(db: redis.Redis, task_ids: list[str]) -> None:
    saved = results_by_task(db)
    duplicated = {task: len(r) for task, r in saved.items() if len(r) != 1}
    assert duplicated == {}
    assert set(saved) == set(task_ids), f"{len(set(task_ids) - set(saved))} lost"
    assert result_markers(db) == set(task_ids)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    server: RedisServer, db: redis.Redis, workers: Workers
) -> None:
    task_ids = asyncio.run(submit([f"payload {n}".encode() for n in range(1000)], url=server.url))
    worker = {"always_dispatch": ["sleepy"], "plugin_opts": {"sleepy": {"delay": 0.01}}}
    victim = workers.start(server.url, redis={"consumer": "victim"}, **worker)
    workers.start(server.url, redis={"consumer": "survivor"}, **worker)

    # Kill it while it holds messages it has not acknowledged, well before the end.
    wait_until(
        lambda: pending_on(db, "victim") > 0 and db.xlen("stoq:results") >= 100,
        30,
        "the victim to be busy",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert pending_on(db, "victim") > 0
    assert db.xlen("stoq:results") < 900
    workers.start(server.url, redis={"consumer": "restarted"}, **worker)

    assert workers.wait_all(90)[1:] == [0, 0], workers.logs()
    assert_one_result_each(db, task_ids)
    assert pending_on(db, "victim") == 0
    assert dead_letters(db) == []


def test_workers_ride_out_a_redis_restart(
    make_server: Callable[..., RedisServer], workers: Workers
) -> None:
    server = make_server(appendonly=True)
    db = server.client()
    task_ids = asyncio.run(submit([f"payload {n}".encode() for n in range(300)], url=server.url))
    worker = {"always_dispatch": ["sleepy"], "plugin_opts": {"sleepy": {"delay": 0.01}}}
    for _ in range(2):
        # An outage may make one consumer take over another's messages: allow for redelivery.
        workers.start(server.url, redis={"stop_when_idle": 3, "max_deliveries": 5}, **worker)

    wait_until(lambda: db.xlen("stoq:results") >= 50, 30, "the first results")
    server.stop()
    time.sleep(3)  # longer than redis-py's own retries: the workers' reconnect loops take over
    server.start()  # same port, same directory: the append-only file brings the data back
    db = server.client()
    assert db.xlen("stoq:results") < 300

    assert workers.wait_all(90) == [0, 0], workers.logs()
    assert "Redis unreachable" in workers.logs()
    assert_one_result_each(db, task_ids)
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert dead_letters(db) == []


def test_a_message_that_always_fails_ends_in_the_dead_letter_stream_with_its_error(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    good = asyncio.run(submit([f"small {n}".encode() for n in range(20)], url=server.url))
    [doomed] = asyncio.run(submit([b"D" * 200], url=server.url, inline_limit=100))
    db.delete(*db.keys("stoq:payload:*"))  # its bytes are gone: loading them fails every time

    run(make_stoq({"max_deliveries": 2}), timeout=60)

    [letter] = dead_letters(db)
    assert letter["task_id"] == doomed
    assert letter["deliveries"] == "3"
    assert letter["error"].startswith("loading the payload failed: no payload ")
    assert_one_result_each(db, good)
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert db.hlen("stoq:tasks:errors") == 0

    async def outcome() -> list[object]:
        return [o async for o in wait([doomed], url=server.url, timeout=5)]

    [ended] = asyncio.run(outcome())
    assert ended.response is None and "no payload" in ended.error


def test_a_message_that_crashes_its_worker_ends_in_the_dead_letter_stream(
    server: RedisServer, db: redis.Redis, workers: Workers
) -> None:
    good = asyncio.run(submit([f"small {n}".encode() for n in range(10)], url=server.url))
    [doomed] = asyncio.run(submit([b"crash"], url=server.url))
    worker = {"always_dispatch": ["crasher"], "redis": {"max_deliveries": 2, "max_inflight": 1}}

    # Each crash kills the worker; restart it as a supervisor would, until it finishes.
    for _ in range(5):
        process = workers.start(server.url, provider_consumers=1, **worker)
        if process.wait(timeout=60) == 0:
            break
    else:
        pytest.fail(f"the worker never finished: {workers.logs()}")

    [letter] = dead_letters(db)
    assert letter["task_id"] == doomed
    assert letter["deliveries"] == "3"
    assert "no error was recorded: the worker processing it probably crashed" in letter["error"]
    assert letter["payload"] == "crash"  # the message itself is kept, to be looked at or resent
    assert_one_result_each(db, good)


@pytest.mark.parametrize("connectors", [["redis", "flaky"], ["flaky", "redis"]])
def test_messages_whose_connector_failed_are_redelivered_until_saved_once(
    server: RedisServer,
    db: redis.Redis,
    make_stoq: Callable[..., Stoq],
    tmp_path: Path,
    connectors: list[str],
) -> None:
    task_ids = asyncio.run(submit([f"payload {n}".encode() for n in range(20)], url=server.url))
    record = tmp_path / "flaky.txt"

    run(
        make_stoq(
            connectors=connectors,
            plugin_opts={"flaky": {"fail_first": 5, "record": str(record)}},
        )
    )

    assert_one_result_each(db, task_ids)
    # The flaky connector saved every task once it stopped failing, each exactly once.
    saved_by_flaky = record.read_text().split()
    assert sorted(saved_by_flaky) == sorted(task_ids)
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert dead_letters(db) == []
