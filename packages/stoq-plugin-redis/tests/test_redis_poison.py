"""Queue poison (issue 12): a malformed message costs nothing but itself.

Anything can be written to the task stream. Each message that is not a task message must be
moved to the dead-letter stream at once (delivered once, never retried), with the reason and
its fields byte for byte, while the worker goes on with the messages behind it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import RedisServer
from redis_helpers import results_by_task
from stoq_plugin_redis import submit, wait
from stoq_plugin_redis._messages import MAX_COPY_BYTES, MAX_COPY_FIELDS, encode_task

from stoq_core import PayloadMeta, RunStats, Stoq

SHA256 = "a" * 64
LIMIT = 4096  # the workers' max_payload_size in these tests

Fields = dict[bytes, bytes]

# Each garble makes any message it is applied to malformed, whatever else it holds.
NAMED: dict[str, Callable[[Fields], None]] = {
    "task_id not UTF-8": lambda m: m.update({b"task_id": b"\xff\xfe"}),
    "field name not UTF-8": lambda m: m.update({b"\xc3\x28": b"x"}),
    "archiver name not UTF-8": lambda m: [
        m.pop(b"payload"),
        m.update({b"archiver": b"\xe2\x82", b"task": b"{}"}),
    ],
    "no task_id": lambda m: m.pop(b"task_id"),
    "empty task_id": lambda m: m.update({b"task_id": b""}),
    "task_id with a newline": lambda m: m.update({b"task_id": b"one\ntwo"}),
    "task_id too long": lambda m: m.update({b"task_id": b"t" * 300}),
    "neither payload nor archiver": lambda m: [m.pop(k, None) for k in (b"payload", b"archiver")],
    "payload and archiver": lambda m: m.update({b"payload": b"x", b"archiver": b"redis"}),
    "archiver without task": lambda m: [
        m.pop(b"payload", None),
        m.pop(b"task", None),
        m.update({b"archiver": b"redis"}),
    ],
    "extra field": lambda m: m.update({b"priority": b"high"}),
    "a field named error": lambda m: m.update({b"error": b"mine"}),
    "oversized payload": lambda m: [m.pop(b"archiver", None), m.update({b"payload": b"P" * 5000})],
    "payload_meta not JSON": lambda m: m.update({b"payload_meta": b"{not json"}),
    "payload_meta not UTF-8": lambda m: m.update({b"payload_meta": b'{"extra_data": "\xff"}'}),
    "payload_meta UTF-16": lambda m: m.update({b"payload_meta": "{}".encode("utf-16")}),
    "payload_meta a list": lambda m: m.update({b"payload_meta": b"[]"}),
    "payload_meta null": lambda m: m.update({b"payload_meta": b"null"}),
    "should_scan a string": lambda m: m.update({b"payload_meta": b'{"should_scan": "no"}'}),
    "extra_data a list": lambda m: m.update({b"payload_meta": b'{"extra_data": [1]}'}),
    "dispatch_to a string": lambda m: m.update({b"payload_meta": b'{"dispatch_to": "hash"}'}),
    "dispatch_to numbers": lambda m: m.update({b"payload_meta": b'{"dispatch_to": [1, 2]}'}),
    "unknown payload_meta key": lambda m: m.update({b"payload_meta": b'{"colour": "red"}'}),
    "NaN in extra_data": lambda m: m.update({b"payload_meta": b'{"extra_data": {"x": NaN}}'}),
    "lone surrogate": lambda m: m.update({b"request_meta": b'{"source": "\\ud800"}'}),
    "JSON nested too deep to parse": lambda m: m.update({b"request_meta": b"[" * 100_000}),
    "JSON nested too deep to carry": lambda m: m.update(
        {b"request_meta": b'{"extra_data": ' + b'{"a": ' * 100 + b"1" + b"}" * 101}
    ),
    "source a number": lambda m: m.update({b"request_meta": b'{"source": 5}'}),
    "archive_payloads a number": lambda m: m.update({b"request_meta": b'{"archive_payloads": 1}'}),
    "task a list": lambda m: [
        m.pop(b"payload", None),
        m.update({b"archiver": b"redis", b"task": b"[]"}),
    ],
    "task with a bad sha256": lambda m: [
        m.pop(b"payload", None),
        m.update({b"archiver": b"redis", b"task": b'{"sha256": "nope"}'}),
    ],
    "task with a numeric sha256": lambda m: [
        m.pop(b"payload", None),
        m.update({b"archiver": b"redis", b"task": b'{"sha256": 5}'}),
    ],
    "task for another archiver, with a payload": lambda m: m.update(
        {b"payload": b"x", b"task": b"{}"}
    ),
}

#: Part of the reason each named garble must give.
REASONS = {
    "task_id not UTF-8": "its task_id field is not UTF-8: b'\\xff\\xfe'",
    "field name not UTF-8": "a field name is not UTF-8: b'\\xc3('",
    "archiver name not UTF-8": "its archiver field is not UTF-8",
    "no task_id": "it has no task_id field",
    "empty task_id": "its task_id field is empty",
    "task_id with a newline": "its task_id field holds control characters",
    "task_id too long": "its task_id field is longer than 256 characters",
    "neither payload nor archiver": "it has neither a payload field nor an archiver field",
    "payload and archiver": "it has both a payload field and an archiver field",
    "archiver without task": "it names an archiver but has no task field",
    "extra field": "it has a field no task message has: 'priority'",
    "a field named error": "it has a field no task message has: 'error'",
    "oversized payload": "its payload field holds 5000 bytes, more than max_payload_size (4096",
    "payload_meta not JSON": "its payload_meta field is not JSON",
    "payload_meta not UTF-8": "its payload_meta field is not UTF-8",
    "payload_meta UTF-16": "its payload_meta field is not UTF-8",
    "payload_meta a list": "its payload_meta field is not a JSON object but an array",
    "payload_meta null": "its payload_meta field is not a JSON object but null",
    "should_scan a string": "its payload_meta's should_scan is a string, not a boolean",
    "extra_data a list": "its payload_meta's extra_data is an array, not an object or null",
    "dispatch_to a string": "its payload_meta's dispatch_to is a string, not an array or null",
    "dispatch_to numbers": "dispatch_to holds something other than strings",
    "unknown payload_meta key": "its payload_meta has unknown keys: 'colour'",
    "NaN in extra_data": "NaN is not a JSON value",
    "lone surrogate": "its request_meta field holds a lone surrogate",
    "JSON nested too deep to parse": "its request_meta field is not JSON: nested too deeply",
    "JSON nested too deep to carry": "its request_meta field is nested more than 64 levels deep",
    "source a number": "its request_meta's source is a number, not a string or null",
    "archive_payloads a number": "its request_meta's archive_payloads is a number, not a boolean",
    "task a list": "its task field is not a JSON object but an array",
    "task with a bad sha256": "'nope' is not a sha256",
    "task with a numeric sha256": "5 is not a sha256",
    "task for another archiver, with a payload": "it has a task field but no archiver field",
}


def good_message(number: int) -> Fields:
    """A task message; its payload is random bytes, which any payload may be."""
    fields = encode_task(
        f"good-{number}",
        PayloadMeta(extra_data={"filename": f"f{number}.txt"}),
        content=random.Random(number).randbytes(64),
    )
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def base_message(rng: random.Random, number: int) -> Fields:
    """A valid message of either kind, inline or for an archiver, to be garbled."""
    if rng.random() < 0.5:
        return good_message(number)
    return {
        b"task_id": f"base-{number}".encode(),
        b"archiver": b"other",
        b"task": b'{"key": "x"}',
        b"request_meta": b'{"source": "fuzz"}',
    }


def not_utf8(rng: random.Random, most: int = 40) -> bytes:
    """Random bytes that are never UTF-8 (a 0xff byte somewhere in them)."""
    data = bytearray(rng.randbytes(rng.randint(0, most)))
    data.insert(rng.randint(0, len(data)), 0xFF)
    return bytes(data)


def random_garbles(rng: random.Random) -> Iterator[Callable[[Fields], None]]:
    """Garbles drawn at random: random bytes in any field, missing and extra fields."""

    def bytes_in(field: bytes) -> Callable[[Fields], None]:
        return lambda m: m.update({field: not_utf8(rng)})

    def extra(m: Fields) -> None:
        for _ in range(rng.randint(1, 4)):
            name = b"x-" + rng.randbytes(rng.randint(0, 12))
            m[name] = rng.randbytes(rng.randint(0, 30))

    def missing(m: Fields) -> None:
        m.pop(b"task_id", None)
        if rng.random() < 0.5:
            m.pop(b"payload", None)
            m.pop(b"archiver", None)

    def json_junk(m: Fields) -> None:
        field = rng.choice([b"payload_meta", b"request_meta"])
        m[field] = rng.choice([b"1", b'"s"', b"true", b"[{}]", b"{", b"{}}", b"{'a': 1}", b""])

    choices: list[Callable[[Fields], None]] = [
        bytes_in(b"task_id"),
        bytes_in(b"payload_meta"),
        bytes_in(b"request_meta"),
        lambda m: [m.pop(b"payload", None), m.update({b"archiver": not_utf8(rng), b"task": b"{}"})],
        lambda m: [
            m.pop(b"payload", None),
            m.update({b"archiver": b"other", b"task": not_utf8(rng)}),
        ],
        lambda m: m.update({not_utf8(rng, 10): rng.randbytes(5)}),
        extra,
        missing,
        json_junk,
    ]
    for _ in range(rng.randint(1, 3)):
        yield rng.choice(choices)


def run_worker(stoq: Stoq, timeout: float = 120) -> RunStats:
    return asyncio.run(asyncio.wait_for(stoq.run(), timeout))


def raw_entries(server: RedisServer, stream: str) -> dict[str, list[bytes]]:
    """Each entry's fields as Redis holds them: a flat list, in order, repeated names kept."""
    client = server.client()
    client.response_callbacks.pop("XRANGE", None)
    entries = client.execute_command("XRANGE", stream, "-", "+")
    client.close()
    return {entry_id.decode(): list(fields) for entry_id, fields in entries}


def dead_letters_by_message(server: RedisServer) -> dict[str, dict[str, Any]]:
    """The dead-letter entries by the id of the message each holds, with its raw fields."""
    letters = {}
    for fields in raw_entries(server, "stoq:tasks:dead").values():
        pairs = list(zip(fields[::2], fields[1::2]))
        named = dict(pairs)  # the entry's own fields come last, so they win here
        letters[named[b"message_id"].decode()] = {"pairs": pairs, "named": named}
    return letters


def test_every_malformed_message_is_dead_lettered_at_once_and_the_good_ones_are_scanned(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    rng = random.Random(12)
    bad: dict[str, tuple[str, Fields]] = {}  # message id -> (what was done, its fields)
    good: list[str] = []
    cases: list[tuple[str, list[Callable[[Fields], None]]]] = [
        (name, [garble]) for name, garble in NAMED.items()
    ]
    cases += [(f"random {n}", list(random_garbles(rng))) for n in range(150)]
    pipe = db.pipeline(transaction=False)
    for number, (name, garbles) in enumerate(cases):
        # A good message before each bad one, and one after the last: all must be scanned.
        pipe.xadd("stoq:tasks", good_message(number))  # type: ignore[arg-type]
        good.append(f"good-{number}")
        # The named garbles start from an inline message; the random ones from either kind.
        message = base_message(rng, number) if name.startswith("random") else good_message(-1)
        for garble in garbles:
            garble(message)
        pipe.xadd("stoq:tasks", message)  # type: ignore[arg-type]
    pipe.xadd("stoq:tasks", good_message(len(cases)))  # type: ignore[arg-type]
    good.append(f"good-{len(cases)}")
    replies = pipe.execute()
    sent = raw_entries(server, "stoq:tasks")
    for index, (name, _) in enumerate(cases):
        message_id = replies[2 * index + 1].decode()
        bad[message_id] = (name, sent[message_id])

    stats = run_worker(make_stoq({"max_payload_size": LIMIT}))

    assert stats.failed == 0  # neither the provider nor a queued item failed
    saved = results_by_task(db)
    assert sorted(saved) == sorted(good)
    assert all(len(responses) == 1 for responses in saved.values())
    letters = dead_letters_by_message(server)
    assert sorted(letters) == sorted(bad)
    for message_id, (name, original) in bad.items():
        letter = letters[message_id]
        error = letter["named"][b"error"].decode()
        assert error.startswith("malformed task message: "), (name, error)
        assert name not in REASONS or REASONS[name] in error, (name, error)
        assert letter["named"][b"deliveries"] == b"1", name  # at once: never delivered again
        # The message's own fields, byte for byte and in order, then the entry's own.
        assert [v for pair in letter["pairs"][: len(original) // 2] for v in pair] == original
        assert len(error) <= 4000
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert db.hlen("stoq:tasks:errors") == 0
    assert db.xlen("stoq:tasks") == 0  # every message acknowledged and deleted


def test_a_malformed_message_too_large_to_copy_stays_in_the_stream_its_dead_letter_says_where(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    many = {b"task_id": b"many", b"payload": b"x"}
    many.update({f"f{n}".encode(): b"v" for n in range(MAX_COPY_FIELDS)})
    huge = {b"task_id": b"huge", b"payload": b"H" * (MAX_COPY_BYTES + 1)}
    ids = [db.xadd("stoq:tasks", m).decode() for m in (many, huge)]  # type: ignore[arg-type]
    [good] = asyncio.run(submit([b"fine"], url=server.url))

    stats = run_worker(make_stoq({"max_payload_size": LIMIT}))

    assert stats.failed == 0
    assert list(results_by_task(db)) == [good]
    letters = dead_letters_by_message(server)
    assert sorted(letters) == sorted(ids)
    for message_id, task_id, reason in [
        (ids[0], b"many", "it has 1000 fields no task message has"),
        (ids[1], b"huge", f"holds {MAX_COPY_BYTES + 1} bytes, more than max_payload_size"),
    ]:
        named = letters[message_id]["named"]
        assert reason in named[b"error"].decode()
        assert named[b"task_id"] == task_id  # so that wait() can report it
        assert "it stays in stoq:tasks under its message_id" in named[b"kept"].decode()
        assert len(letters[message_id]["pairs"]) < 20
    # Nothing is lost: both stay in the task stream, whole, acknowledged.
    kept = raw_entries(server, "stoq:tasks")
    assert sorted(kept) == sorted(ids)
    assert len(kept[ids[0]]) == 2 * len(many) and kept[ids[1]][3] == huge[b"payload"]
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0

    async def outcome() -> list[Any]:
        return [o async for o in wait(["huge"], url=server.url, timeout=10)]

    [ended] = asyncio.run(outcome())
    assert ended.response is None and "max_payload_size" in ended.error


def test_a_stored_payload_over_max_payload_size_is_dead_lettered_at_once(
    server: RedisServer, db: redis.Redis, make_stoq: Callable[..., Stoq]
) -> None:
    [large] = asyncio.run(submit([b"L" * (LIMIT + 1)], url=server.url, inline_limit=100))
    [fits] = asyncio.run(submit([b"F" * LIMIT], url=server.url, inline_limit=100))

    stats = run_worker(make_stoq({"max_payload_size": LIMIT}))

    assert stats.failed == 0
    [[response]] = results_by_task(db).values()
    assert response["request_meta"]["extra_data"]["task_id"] == fits
    [letter] = dead_letters_by_message(server).values()
    assert letter["named"][b"task_id"] == large.encode()
    assert letter["named"][b"deliveries"] == b"1"
    assert b"is larger than max_payload_size (4096 bytes)" in letter["named"][b"error"]


def test_a_message_the_decoder_fails_on_is_dead_lettered_and_the_worker_goes_on(
    server: RedisServer,
    db: redis.Redis,
    make_stoq: Callable[..., Stoq],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bug the fuzzing did not find: decoding raises something other than MalformedTask.
    import stoq_plugin_redis.plugin

    real = stoq_plugin_redis.plugin.decode_task

    def buggy(fields: Any, *args: Any) -> Any:
        if fields.get(b"task_id") == b"trigger":
            raise IndexError("a bug")
        return real(fields, *args)

    monkeypatch.setattr(stoq_plugin_redis.plugin, "decode_task", buggy)
    db.xadd("stoq:tasks", {"task_id": "trigger", "payload": "x"})
    [good] = asyncio.run(submit([b"fine"], url=server.url))

    stats = run_worker(make_stoq())

    assert stats.failed == 0
    assert list(results_by_task(db)) == [good]
    [letter] = dead_letters_by_message(server).values()
    assert letter["named"][b"error"] == (
        b"malformed task message: decoding it failed: IndexError: a bug"
    )


def test_wait_reads_past_a_dead_letter_whose_fields_are_not_text(
    server: RedisServer, db: redis.Redis
) -> None:
    db.xadd("stoq:tasks:dead", {b"task_id": b"\xff\xfe", b"error": b"\xc3("})
    db.xadd("stoq:tasks:dead", {b"task_id": b"t-2", b"error": b"gone \xff"})

    async def outcomes() -> list[Any]:
        return [o async for o in wait(["t-2"], url=server.url, timeout=30)]

    [ended] = asyncio.run(outcomes())
    assert (ended.task_id, ended.response, ended.error) == ("t-2", None, "gone \ufffd")


def test_wait_reports_a_result_it_cannot_read_as_that_tasks_error(
    server: RedisServer, db: redis.Redis
) -> None:
    entry_id = db.xadd("stoq:results", {"task_id": "t-1", "result": "{not json"}).decode()
    db.set("stoq:result:t-1", entry_id)

    async def outcomes() -> list[Any]:
        return [o async for o in wait(["t-1"], url=server.url, timeout=10)]

    [ended] = asyncio.run(outcomes())
    assert ended.response is None
    assert ended.error.startswith(f"results-stream entry {entry_id} cannot be read: its result")


def test_results_skips_and_reports_each_entry_it_cannot_read(
    server: RedisServer, db: redis.Redis
) -> None:
    from stoq_plugin_redis import results

    written = [
        {"task_id": "1", "result": json.dumps({"n": 1})},
        {"task_id": "2"},
        {"task_id": "3", "result": "{not json"},
        {"task_id": b"\xff", "result": b"\xff\xfe"},
        {"task_id": "5", "result": "[1, 2]"},
        {"task_id": "6", "result": "[" * 100_000},
        {"task_id": "7", "result": json.dumps({"n": 7})},
    ]
    ids = [db.xadd("stoq:results", fields).decode() for fields in written]  # type: ignore[arg-type]
    skipped: list[tuple[str, str]] = []

    async def read() -> list[dict[str, Any]]:
        reading = results(url=server.url, on_unreadable=lambda i, why: skipped.append((i, why)))
        return [response async for response in reading]

    assert asyncio.run(read()) == [{"n": 1}, {"n": 7}]
    assert [entry_id for entry_id, _ in skipped] == ids[1:6]
    assert [why for _, why in skipped] == [
        "it has no result field (task '2')",
        "its result is not JSON (task '3'): Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1): b'{not json'",
        "its result is not UTF-8 (task '\ufffd'): b'\\xff\\xfe'",
        "its result is not a JSON object (task '5'): b'[1, 2]'",
        "its result is nested too deeply to read (task '6')",
    ]
