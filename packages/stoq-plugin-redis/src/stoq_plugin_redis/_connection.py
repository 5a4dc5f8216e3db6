"""Connecting to Redis: the URL, a password from the environment, and retrying with backoff.

Two layers of retry keep a worker alive across a Redis restart: redis-py's own ``Retry`` repeats
a command a few times within seconds, and ``retrying`` (used by every long-lived loop here) keeps
trying with a growing pause for as long as its caller allows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
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
_DB_PATH = re.compile(r"/?([0-9]+)?")  # the path of a redis:// url: /N, / or nothing
_DB = re.compile(r"[0-9]+")


def _url_password(url: str) -> Optional[str]:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return parts.password
    return urllib.parse.parse_qs(parts.query).get("password", [None])[0]


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs.

    A url that does not parse has everything between ``//`` and its last ``@`` hidden instead:
    where a malformed url's password ends cannot be known.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        readable = url.count("@") == parts.netloc.count("@")
    except ValueError:
        readable = False
    if not readable:
        url = re.sub(r"//.*@", "//***@", url, count=1, flags=re.DOTALL)
    elif parts.password:
        netloc = f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[1]}"
        url = url.replace(f"//{parts.netloc}", f"//{netloc}", 1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def check_url(url: str) -> str:
    """``url`` if Redis can be reached at it as written.

    Checked here, before any connection, because redis-py reads some mistakes as something
    else: a database that is not a number (``redis://h/notadb``) as database 0.

    :raises StoqException: the url is not a ``redis://``, ``rediss://`` or ``unix://`` url, or
        its port, database or query parameters are not ones Redis and redis-py accept; the
        message shows the url without its password.
    """
    shown = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        # Not the exception's text: it may quote the part of the url that holds the password.
        raise StoqException(
            f"Redis url {shown!r} cannot be read: its host and port must be host, host:port "
            "or [ipv6]:port with a port from 1 to 65535"
        ) from None
    if parts.scheme not in _SCHEMES or not url.lower().startswith(f"{parts.scheme}://"):
        raise StoqException(f"Redis url {shown!r} must start with redis://, rediss:// or unix://")
    if port == 0:
        raise StoqException(f"Redis url {shown!r}: the port must be from 1 to 65535")
    query = urllib.parse.parse_qs(parts.query)
    if parts.scheme == "unix":
        if not parts.path:
            raise StoqException(
                f"Redis url {shown!r} names no socket: write unix:///path/to/redis.sock"
            )
    elif not _DB_PATH.fullmatch(parts.path):
        raise StoqException(
            f"Redis url {shown!r}: the path must be a database number, as in "
            "redis://host:6379/0, or nothing"
        )
    if any(not _DB.fullmatch(db) for db in query.get("db", [])):
        raise StoqException(f"Redis url {shown!r}: db= must be a database number")
    try:
        # What redis-py itself refuses: a query parameter it does not know, or a bad value.
        pool: Any = redis.asyncio.ConnectionPool.from_url(url)
        pool.make_connection()
    except (TypeError, ValueError) as exc:
        raise StoqException(f"Redis url {shown!r} is not one redis-py accepts: {exc}") from None
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
