"""The Redis result cache (``[core] cache = redis``) against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import RedisServer
from stoq_plugin_redis.cache import KEY_PREFIX

from stoq_core import Stoq, StoqException, StoqResponse


def _stoq(tmp_path: Path, url: str, **kwargs: Any) -> Stoq:
    return Stoq(
        base_dir=str(tmp_path),
        log_dir=None,
        plugin_dir_list=[],
        cache="redis",
        cache_url=url,
        **kwargs,
    )


def _scan(stoq: Stoq, content: bytes = b"same bytes") -> StoqResponse:
    # ``sleepy`` is this suite's own worker: the package's tests may run without stoq-plugin-hash.
    return asyncio.run(stoq.scan(content, add_start_dispatch=["sleepy"]))


@pytest.fixture(autouse=True)
def _test_plugins(plugin_site: Path) -> None:
    """The suite's test worker, published as an entry point."""


def test_a_second_worker_reuses_what_the_first_one_stored(
    tmp_path: Path, server: RedisServer, db: redis.Redis
) -> None:
    # Two Stoqs with homes of their own: only Redis is shared, as between two machines.
    first = _scan(_stoq(tmp_path / "one", server.url))
    second = _scan(_stoq(tmp_path / "two", server.url))

    assert first.results[0].cached is None
    assert list(second.results[0].cached or {}) == ["sleepy"]
    assert second.results[0].workers == first.results[0].workers
    [key] = db.keys(f"{KEY_PREFIX}*")
    assert key.decode().startswith(
        f"{KEY_PREFIX}{first.results[0].workers['sleepy']['sha256']}/sleepy/"
    )


def test_entries_expire_after_cache_ttl(
    tmp_path: Path, server: RedisServer, db: redis.Redis
) -> None:
    _scan(_stoq(tmp_path, server.url, cache_ttl=120))

    [key] = db.keys(f"{KEY_PREFIX}*")
    assert 110_000 < db.pttl(key) <= 120_000


def test_a_redis_that_is_down_is_a_miss_with_one_warning(
    tmp_path: Path, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    stoq = _stoq(tmp_path, server.url)
    _scan(stoq, b"stored while up")
    server.stop()
    caplog.set_level(logging.WARNING, "stoq")
    responses = [_scan(stoq, b"stored while up"), _scan(stoq, b"other bytes")]

    assert all(r.errors == [] and r.results[0].cached is None for r in responses)
    assert all(r.results[0].workers["sleepy"]["sha256"] for r in responses)
    warned = [r.getMessage() for r in caplog.records if "result cache" in r.getMessage()]
    assert len(warned) == 1
    assert "'redis': a lookup failed" in warned[0]


def test_a_url_redis_cannot_be_reached_at_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(StoqException, match="must start with redis://"):
        _stoq(tmp_path, "http://127.0.0.1:6379/0")
