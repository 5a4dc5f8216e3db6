"""A result cache on Redis, so that every worker of a pool reuses what any of them scanned.

Named with ``[core] cache = redis`` (``cache_url`` is the server, by default
``redis://127.0.0.1:6379/0``); the core finds it through the ``stoq.cache`` entry point.
Each cached response is one string key, ``stoq:cache:`` and the core's key, expiring after
``cache_ttl`` seconds (Redis drops it itself; with ``maxmemory-policy allkeys-lru`` a full
Redis drops the least used).

The core calls a backend from its event loop once per scan round, so this uses redis-py's
synchronous client with short timeouts: a Redis that is slow or down costs a round at most
``TIMEOUT`` seconds, after which the core leaves the cache alone for a while (a miss, not an
error).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, cast

import redis

from stoq_core import CacheBackend, CacheSettings
from stoq_plugin_redis._connection import PASSWORD_VARIABLES, _url_password, check_url
from stoq_plugin_redis._messages import DEFAULT_URL

__all__ = ["KEY_PREFIX", "TIMEOUT", "RedisCache"]

#: What every cache key starts with, so the cache can share a database with the queues.
KEY_PREFIX = "stoq:cache:"
#: Seconds to connect, and to wait for one reply.
TIMEOUT = 1.0


class RedisCache(CacheBackend):
    """Cached worker responses in Redis at ``settings.url`` (no connection until first use).

    The password is, first found: the one in the URL, ``$STOQ_REDIS_PASSWORD``,
    ``$REDIS_PASSWORD``.

    :raises StoqException: the URL is not one Redis can be reached at.
    """

    def __init__(self, settings: CacheSettings) -> None:
        self.url = check_url(settings.url or DEFAULT_URL)
        extra: dict[str, Any] = {}
        if _url_password(self.url) is None:
            password = next(
                (os.environ[name] for name in PASSWORD_VARIABLES if os.environ.get(name)), None
            )
            if password is not None:
                extra["password"] = password
        self.client = redis.Redis.from_url(
            self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, **extra
        )

    def get_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        # Bytes, as the client does not decode replies (``decode_responses`` is off).
        return cast(list[Optional[bytes]], self.client.mget([KEY_PREFIX + key for key in keys]))

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        # One round trip for the lot; no MULTI: each key stands alone.
        pipeline = self.client.pipeline(transaction=False)
        expiry = max(1, round(ttl * 1000)) if ttl > 0 else None
        for key, value in items:
            pipeline.set(KEY_PREFIX + key, value, px=expiry)
        pipeline.execute()

    def close(self) -> None:
        self.client.close()
