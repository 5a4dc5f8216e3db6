"""The client functions: ``submit`` queues tasks, ``results`` and ``wait`` read what came of them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import RedisServer, free_port
from redis_helpers import run
from stoq_plugin_redis import results, submit, wait

from stoq_core import PayloadMeta, RequestMeta, Stoq, StoqException


def entries(db: redis.Redis, stream: str = "stoq:tasks") -> list[dict[str, bytes]]:
    return [{k.decode(): v for k, v in fields.items()} for _, fields in db.xrange(stream)]


def read_all(**kwargs: Any) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [response async for response in results(**kwargs)]

    return asyncio.run(collect())


def test_a_small_payload_travels_in_its_message(server: RedisServer, db: redis.Redis) -> None:
    [task_id] = asyncio.run(submit([b"small"], url=server.url))

    [message] = entries(db)
    assert message["task_id"].decode() == task_id
    assert message["payload"] == b"small"
    assert "archiver" not in message


def test_a_payload_over_inline_limit_is_stored_by_sha256_and_its_message_names_it(
    server: RedisServer, db: redis.Redis
) -> None:
    content = b"L" * 101
    sha256 = hashlib.sha256(content).hexdigest()

    asyncio.run(submit([content], url=server.url, inline_limit=100, ttl=60))

    [message] = entries(db)
    assert "payload" not in message
    assert message["archiver"] == b"redis"
    assert json.loads(message["task"]) == {"sha256": sha256}
    assert db.get(f"stoq:payload:{sha256}") == content
    assert 0 < db.ttl(f"stoq:payload:{sha256}") <= 60


def test_a_directory_is_submitted_recursively_with_each_file_name(
    server: RedisServer, db: redis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "in" / "deeper").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "in" / "deeper" / "b.txt").write_bytes(b"bravo")

    task_ids = asyncio.run(submit([tmp_path / "in"], url=server.url))

    messages = entries(db)
    assert [m["task_id"].decode() for m in messages] == task_ids
    named = {
        json.loads(m["payload_meta"])["extra_data"]["filename"]: m["payload"] for m in messages
    }
    assert named == {"a.txt": b"alpha", "b.txt": b"bravo"}


def test_metadata_given_to_submit_reaches_the_message(server: RedisServer, db: redis.Redis) -> None:
    asyncio.run(
        submit(
            [b"x"],
            url=server.url,
            payload_meta=PayloadMeta(should_archive=False, extra_data={"case": 7}),
            request_meta=RequestMeta(source="mailgw", extra_data={"ticket": "T-1"}),
        )
    )

    [message] = entries(db)
    payload_meta = json.loads(message["payload_meta"])
    request_meta = json.loads(message["request_meta"])
    assert (payload_meta["should_archive"], payload_meta["extra_data"]) == (False, {"case": 7})
    assert (request_meta["source"], request_meta["extra_data"]) == ("mailgw", {"ticket": "T-1"})


def test_a_missing_path_is_a_one_line_error_and_nothing_is_sent(
    server: RedisServer, db: redis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "real.txt").write_bytes(b"real")

    with pytest.raises(StoqException, match=r"nope\.txt: no such file or directory$"):
        asyncio.run(submit([tmp_path / "real.txt", tmp_path / "nope.txt"], url=server.url))

    assert db.exists("stoq:tasks") == 0


def test_an_unreachable_redis_is_a_one_line_error(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    with pytest.raises(StoqException, match=r"cannot reach Redis at redis://127\.0\.0\.1:"):
        asyncio.run(submit([b"x"], url=url))


def test_results_from_an_unreachable_redis_fail_at_once() -> None:
    # A wrong url is not an outage to wait out: nothing has answered yet.
    url = f"redis://127.0.0.1:{free_port()}/0"
    began = time.monotonic()

    with pytest.raises(StoqException, match=r"cannot reach Redis at redis://127\.0\.0\.1:"):
        read_all(url=url, follow=True)

    assert time.monotonic() - began < 20  # the patience for a later outage is 30 s


def test_results_with_follow_ride_out_a_redis_restart(
    make_server: Callable[..., RedisServer],
) -> None:
    server = make_server(appendonly=True)
    db = server.client()
    db.xadd("stoq:results", {"result": json.dumps({"n": 1})})

    async def scenario() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async for response in results(url=server.url, follow=True, start="0-0"):
                seen.append(response)
                if len(seen) == 2:
                    return

        follower = asyncio.ensure_future(follow())
        while not seen:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1)
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(
            server.client().xadd, "stoq:results", {"result": json.dumps({"n": 2})}
        )
        await asyncio.wait_for(follower, 30)
        return seen

    assert asyncio.run(scenario()) == [{"n": 1}, {"n": 2}]


def test_results_reads_every_saved_response_from_the_start(
    server: RedisServer, make_stoq: Callable[..., Stoq]
) -> None:
    task_ids = asyncio.run(submit([b"one", b"two", b"three"], url=server.url))
    run(make_stoq())

    responses = read_all(url=server.url)

    assert sorted(r["request_meta"]["extra_data"]["task_id"] for r in responses) == sorted(task_ids)


def test_results_with_follow_yields_a_response_saved_later(
    server: RedisServer, make_stoq: Callable[..., Stoq]
) -> None:
    async def follow_one() -> dict[str, Any]:
        async for response in results(url=server.url, follow=True, start="$"):
            return response
        raise AssertionError("results() ended while following")

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        follower = asyncio.ensure_future(follow_one())
        await asyncio.sleep(0.2)
        task_ids = await submit([b"later"], url=server.url)
        await make_stoq().run()
        return task_ids, await asyncio.wait_for(follower, 10)

    task_ids, response = asyncio.run(scenario())

    assert response["request_meta"]["extra_data"]["task_id"] == task_ids[0]


def test_wait_gives_each_task_its_result(
    server: RedisServer, make_stoq: Callable[..., Stoq]
) -> None:
    task_ids = asyncio.run(submit([b"a", b"b"], url=server.url))
    run(make_stoq(always_dispatch=["sleepy"]))

    async def outcomes() -> list[Any]:
        return [o async for o in wait(task_ids, url=server.url, timeout=10)]

    done = asyncio.run(outcomes())

    assert sorted(o.task_id for o in done) == sorted(task_ids)
    assert all(o.error is None for o in done)
    assert sorted(o.response["results"][0]["workers"]["sleepy"]["size"] for o in done) == [1, 1]


def test_wait_gives_up_after_its_timeout_with_a_count(server: RedisServer) -> None:
    task_ids = asyncio.run(submit([b"never scanned"], url=server.url))

    async def outcomes() -> list[Any]:
        return [o async for o in wait(task_ids, url=server.url, timeout=0.3, poll=0.05)]

    with pytest.raises(StoqException, match=r"1 of 1 tasks still have no result after 0.3 s"):
        asyncio.run(outcomes())


def test_the_password_comes_from_the_environment(
    make_server: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    plugin_site: Path,
) -> None:
    server = make_server(password="s3cret")
    monkeypatch.setenv("STOQ_REDIS_PASSWORD", "s3cret")

    task_ids = asyncio.run(submit([b"guarded"], url=server.url))
    stoq = Stoq(
        base_dir=str(tmp_path),
        log_dir=None,
        plugin_dir_list=[],
        providers=["redis"],
        connectors=["redis"],
        plugin_opts={"redis": {"url": server.url, "stop_when_idle": 0.3}},
    )
    run(stoq)

    assert [r["request_meta"]["extra_data"]["task_id"] for r in read_all(url=server.url)] == (
        task_ids
    )


def test_the_redis_password_variable_is_read_too(
    make_server: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(password="s3cret")
    monkeypatch.delenv("STOQ_REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")

    assert len(asyncio.run(submit([b"guarded"], url=server.url))) == 1


def test_a_refused_password_is_a_one_line_error_naming_the_variable(
    make_server: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(password="s3cret")
    monkeypatch.setenv("STOQ_REDIS_PASSWORD", "wrong")

    with pytest.raises(StoqException, match=r"refused the password .*STOQ_REDIS_PASSWORD"):
        asyncio.run(submit([b"x"], url=server.url))


def test_a_unix_socket_url_reaches_redis(
    make_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    server = make_server(unixsocket=True)
    url = f"unix://{server.socket_path}?db=0"

    task_ids = asyncio.run(submit([b"by socket"], url=url))

    assert server.client().xlen("stoq:tasks") == len(task_ids) == 1
