"""The whole loop in one process: submit, ``Stoq.run`` with redis as provider and connector."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import redis
from conftest import RedisServer
from redis_helpers import dead_letters, pending_on, result_markers, results_by_task, run
from stoq_plugin_redis import submit

from stoq_core import RequestMeta, Stoq


def test_each_submission_gets_exactly_one_result_with_the_workers_results(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    contents = [f"payload {n}".encode() for n in range(20)]
    task_ids = asyncio.run(submit(contents, url=server.url))

    run(make_stoq(always_dispatch=["sleepy"]))

    saved = results_by_task(db)
    assert sorted(saved) == sorted(task_ids)
    assert all(len(responses) == 1 for responses in saved.values())
    by_task = dict(zip(task_ids, contents))
    for task_id, [response] in saved.items():
        assert response["results"][0]["workers"]["sleepy"]["size"] == len(by_task[task_id])


def test_a_large_payload_is_scanned_from_the_archiver_intact(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    large = bytes(range(256)) * 100
    [task_id] = asyncio.run(submit([large], url=server.url, inline_limit=1000))

    run(make_stoq(always_dispatch=["sleepy"]))

    [response] = results_by_task(db)[task_id]
    assert response["results"][0]["workers"]["sleepy"] == {
        "size": len(large),
        "sha256": hashlib.sha256(large).hexdigest(),
    }


def test_the_submitters_metadata_and_the_task_id_reach_the_response(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    request_meta = RequestMeta(source="mailgw", extra_data={"ticket": "T-1"})
    [task_id] = asyncio.run(submit([b"x"], url=server.url, request_meta=request_meta))

    run(make_stoq())

    [response] = results_by_task(db)[task_id]
    assert response["request_meta"]["source"] == "mailgw"
    extra_data = response["request_meta"]["extra_data"]
    assert (extra_data["ticket"], extra_data["task_id"]) == ("T-1", task_id)


def test_an_acknowledged_message_leaves_nothing_pending_or_behind(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    asyncio.run(submit([b"a", b"b", b"c"], url=server.url))

    run(make_stoq())

    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert db.xlen("stoq:tasks") == 0  # delete_acked
    assert len(result_markers(db)) == 3


def test_with_delete_acked_off_acknowledged_messages_stay_in_the_stream(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    asyncio.run(submit([b"a", b"b"], url=server.url))

    run(make_stoq({"delete_acked": False}))

    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert db.xlen("stoq:tasks") == 2


def test_an_empty_stream_ends_the_run_after_stop_when_idle_with_its_group_made(
    db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    run(make_stoq({"stream": "lab:tasks", "group": "lab"}), timeout=10)

    assert [g["name"] for g in db.xinfo_groups("lab:tasks")] == [b"lab"]


def test_no_more_than_max_inflight_messages_are_unacknowledged_at_once(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    asyncio.run(submit([f"{n}".encode() for n in range(40)], url=server.url))

    run(
        make_stoq(
            {"max_inflight": 3},
            always_dispatch=["pending_probe"],
            plugin_opts={"pending_probe": {"port": server.port}},
            provider_consumers=4,
        )
    )

    saved = results_by_task(db)
    seen = [r[0]["results"][0]["workers"]["pending_probe"]["pending"] for r in saved.values()]
    assert len(seen) == 40
    assert max(seen) <= 3


def test_a_malformed_message_goes_to_the_dead_letter_stream_at_once(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    db.xadd("stoq:tasks", {"task_id": "broken", "payload_meta": "{not json"})
    [good] = asyncio.run(submit([b"fine"], url=server.url))

    run(make_stoq())

    [letter] = dead_letters(db)
    assert letter["task_id"] == "broken"
    assert letter["deliveries"] == "1"
    assert letter["error"].startswith("malformed task message: its payload_meta field is not JSON")
    assert list(results_by_task(db)) == [good]
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0


def test_a_scan_slower_than_claim_idle_keeps_its_message(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    # With max_deliveries 1, a second consumer taking the message over would dead-letter it.
    [task_id] = asyncio.run(submit([b"slow"], url=server.url))
    options = {"claim_idle": 0.3, "max_deliveries": 1, "stop_when_idle": 1}
    slow = make_stoq(
        {**options, "consumer": "slow"},
        always_dispatch=["sleepy"],
        plugin_opts={"sleepy": {"delay": 1.5}},
    )
    idle = make_stoq({**options, "consumer": "idle"})

    async def both() -> None:
        slow_run = asyncio.ensure_future(slow.run())
        async with asyncio.timeout(30):  # until the slow consumer has read the message
            while not await asyncio.to_thread(pending_on, db, "slow"):
                await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(slow_run, idle.run()), 30)

    asyncio.run(both())

    assert dead_letters(db) == []
    [[response]] = results_by_task(db).values()
    assert response["request_meta"]["extra_data"]["task_id"] == task_id
    assert "sleepy" in response["results"][0]["workers"]  # scanned by the slow consumer


def test_a_task_for_another_archiver_is_loaded_by_it_and_keeps_its_task_id(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    db.xadd("stoq:tasks", {"task_id": "t-1", "archiver": "text", "task": '{"text": "hello"}'})

    run(make_stoq(source_archivers=["text"], always_dispatch=["sleepy"]))

    [response] = results_by_task(db)["t-1"]
    assert response["results"][0]["workers"]["sleepy"]["size"] == 5
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
