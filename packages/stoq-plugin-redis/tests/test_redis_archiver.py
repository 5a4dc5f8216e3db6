"""The archiver: payload bytes kept in Redis under their sha256."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import redis
from conftest import RedisServer

from stoq_core import ArchiverResponse, Payload, Stoq
from stoq_core.testing import call_hook, make_payload


def test_archive_then_get_gives_back_the_same_bytes(
    stoq_with: Callable[..., Stoq], server: RedisServer
) -> None:
    stoq = stoq_with("redis", {"url": server.url})
    content = bytes(range(256)) * 10

    archived = call_hook(stoq, "redis", "archive", make_payload(content))
    loaded = call_hook(stoq, "redis", "get", archived.value)

    assert archived.errors == [] and loaded.errors == []
    assert archived.value.results == {"sha256": hashlib.sha256(content).hexdigest()}
    assert isinstance(loaded.value, Payload)
    assert loaded.value.content == content


def test_archive_keys_the_bytes_by_sha256_with_the_ttl(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    stoq = stoq_with("redis", {"url": server.url, "ttl": 100, "key_prefix": "lab"})

    call_hook(stoq, "redis", "archive", make_payload(b"kept for a while"))

    key = f"lab:payload:{hashlib.sha256(b'kept for a while').hexdigest()}"
    assert db.get(key) == b"kept for a while"
    assert 0 < db.ttl(key) <= 100


def test_archive_without_ttl_keeps_the_bytes_for_good(
    stoq_with: Callable[..., Stoq], server: RedisServer, db: redis.Redis
) -> None:
    stoq = stoq_with("redis", {"url": server.url})

    call_hook(stoq, "redis", "archive", make_payload(b"forever"))

    assert db.ttl(f"stoq:payload:{hashlib.sha256(b'forever').hexdigest()}") == -1


def test_get_of_a_payload_never_stored_is_an_error_naming_it(
    stoq_with: Callable[..., Stoq], server: RedisServer
) -> None:
    stoq = stoq_with("redis", {"url": server.url})
    missing = "0" * 64

    outcome = call_hook(stoq, "redis", "get", ArchiverResponse({"sha256": missing}))

    assert outcome.value is None
    assert len(outcome.errors) == 1
    assert f"no payload {missing} in Redis" in outcome.errors[0].error


def test_get_of_a_task_without_a_sha256_is_an_error(
    stoq_with: Callable[..., Stoq], server: RedisServer
) -> None:
    stoq = stoq_with("redis", {"url": server.url})

    outcome = call_hook(stoq, "redis", "get", ArchiverResponse({"path": "/etc/passwd"}))

    assert outcome.value is None
    assert "is not a sha256" in outcome.errors[0].error
