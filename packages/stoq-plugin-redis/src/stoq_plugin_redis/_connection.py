"""Connecting to Redis: the URL, a password from the environment, and retrying with backoff.

Two layers of retry keep a worker alive across a Redis restart: redis-py's own ``Retry`` repeats
a command a few times within seconds, and ``retrying`` (used by every long-lived loop here) keeps
trying with a growing pause for as long as its caller allows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Optional, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from stoq_core import StoqException

__all__ = [
    "PASSWORD_VARIABLES",
    "RETRYABLE",
    "check_url",
    "close",
    "connect",
    "describe",
    "is_outage",
    "redact",
    "retrying",
]

T = TypeVar("T")

#: Environment variables read for the password, first found wins, when neither the options
#: nor the URL give one (so it need not appear on a command line or in ``ps``).
PASSWORD_VARIABLES = ("STOQ_REDIS_PASSWORD", "REDIS_PASSWORD")

#: What a Redis outage looks like to redis-py: worth waiting out, not worth failing for
#: (except a refused password, which redis-py files under ConnectionError too: see ``is_outage``).
RETRYABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` means Redis is (for now) unreachable, so trying again may succeed."""
    return isinstance(exc, RETRYABLE) and not isinstance(exc, redis.exceptions.AuthenticationError)


_SCHEMES = ("redis", "rediss", "unix")


def _url_password(url: str) -> Optional[str]:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return parts.password
    return urllib.parse.parse_qs(parts.query).get("password", [None])[0]


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc.rsplit('@', 1)[1]}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        query = [(k, "***" if k == "password" else v) for k, v in query]
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), parts.fragment)
    )


def check_url(url: str) -> str:
    """``url`` if it is one Redis can be reached at.

    :raises StoqException: the scheme is not ``redis://``, ``rediss://`` or ``unix://``.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise StoqException(
            f"Redis url {redact(url)!r} must start with redis://, rediss:// or unix://"
        )
    return url


def connect(url: str, password: Optional[str] = None) -> redis.asyncio.Redis:
    """A client for ``url``, created without connecting (the first command connects).

    The password is, first found: ``password``, the one in the URL, ``$STOQ_REDIS_PASSWORD``,
    ``$REDIS_PASSWORD``. Replies are bytes (``decode_responses`` off) because payloads are.

    :raises StoqException: the URL's scheme is not one Redis speaks.
    """
    check_url(url)
    if password is None and _url_password(url) is None:
        password = next(
            (os.environ[name] for name in PASSWORD_VARIABLES if os.environ.get(name)), None
        )
    extra: dict[str, Any] = {} if password is None else {"password": password}
    if not url.startswith("unix:"):
        extra["socket_keepalive"] = True  # a TCP option; unix sockets refuse it
    return redis.asyncio.Redis.from_url(
        url,
        # A few quick retries inside redis-py cover a blip; the callers' loops cover a restart.
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        socket_connect_timeout=5,
        health_check_interval=30,
        **extra,
    )


async def close(client: redis.asyncio.Redis) -> None:
    """Close ``client``'s connections (``aclose`` appeared in redis-py 5.0.1)."""
    closer = getattr(client, "aclose", None) or client.close
    await closer()


def describe(exc: BaseException, url: str) -> str:
    """One line saying what went wrong talking to Redis at ``url``."""
    if isinstance(exc, redis.exceptions.AuthenticationError) or "NOAUTH" in str(exc):
        return (
            f"Redis at {redact(url)} refused the password (or needs one): set "
            f"{PASSWORD_VARIABLES[0]} or put it in the url"
        )
    if isinstance(exc, RETRYABLE):
        return f"cannot reach Redis at {redact(url)}: {exc}"
    return f"Redis at {redact(url)}: {type(exc).__name__}: {exc}"


async def retrying(
    operation: Callable[[], Awaitable[T]],
    what: str,
    log: logging.Logger,
    patience: Optional[float] = None,
) -> T:
    """``await operation()``, again and again with a growing pause while Redis is unreachable.

    :param what: what the operation does, for the log.
    :param patience: seconds to keep trying; ``None`` tries until it succeeds or is cancelled.
    :raises: the last connection error once ``patience`` is spent; any other error at once.
    """
    pause, started = 0.1, time.monotonic()
    while True:
        try:
            return await operation()
        except RETRYABLE as exc:
            if not is_outage(exc):
                raise
            if patience is not None and time.monotonic() - started + pause > patience:
                raise
            log.warning("%s: Redis unreachable (%s); retrying in %.1f s", what, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
