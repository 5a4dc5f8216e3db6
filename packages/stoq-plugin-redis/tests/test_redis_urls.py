"""Redis urls: a bad one is refused before anything connects, in one line, without its password."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from stoq_plugin_redis import results, submit
from stoq_plugin_redis._connection import check_url, redact

from stoq_core import Stoq, StoqException

BAD = [
    ("redis://:s3cret@h:notaport/0", "cannot be read: its host and port"),
    ("redis://:s3cret@[::1/0", "cannot be read: its host and port"),
    ("redis://:s3cret@h:70000/0", "cannot be read: its host and port"),
    ("redis://:s3cret@h:0/0", "the port must be from 1 to 65535"),
    ("redis://:s3cret@h/notadb", "the path must be a database number"),
    ("redis://h/1/2", "the path must be a database number"),
    ("redis://h/-1", "the path must be a database number"),
    ("redis://h/%31", "the path must be a database number"),
    ("redis://h/0?db=x", "db= must be a database number"),
    ("unix:///tmp/redis.sock?db=one", "db= must be a database number"),
    ("unix://", "names no socket"),
    ("redis://h/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ("redis://h/0?colour=red", "unexpected keyword argument 'colour'"),
    ("http://h/0", "must start with redis://, rediss:// or unix://"),
    ("redis:h", "must start with redis://, rediss:// or unix://"),
    ("redis://:s3/cr@t@h/0", "cannot be read"),  # an unencoded / in the password
]

GOOD = [
    "redis://127.0.0.1:6379/0",
    "redis://h",
    "redis://h/",
    "redis://h:6380/15",
    "redis://user:s3cret@h:6379/2",
    "rediss://:s3cret@h:6380/0?ssl_cert_reqs=none",
    "redis://[::1]:6379/0",
    "unix:///run/redis.sock?db=3",
]


@pytest.mark.parametrize(("url", "message"), BAD)
def test_a_bad_url_is_refused_in_one_line_without_its_password(url: str, message: str) -> None:
    with pytest.raises(StoqException) as raised:
        check_url(url)

    text = str(raised.value)
    assert message in text
    assert "s3" not in text and "cr@t" not in text
    assert "\n" not in text


@pytest.mark.parametrize("url", GOOD)
def test_a_good_url_is_accepted_as_written(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://:s3cret@h/0", "redis://:***@h/0"),
        ("redis://:p@ss@h/0", "redis://:***@h/0"),
        ("unix:///run/redis.sock?password=s3cret&db=1", "unix:///run/redis.sock?password=***&db=1"),
        ("redis://:s3/cr@t@h/0", "redis://***@h/0"),
        ("redis://:s3cret@[::1/0", "redis://***@[::1/0"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_redact_hides_the_password_of_any_url(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_url_that_names_no_database_number_is_not_read_as_database_0(tmp_path: Path) -> None:
    # redis-py reads redis://h/notadb as database 0: a worker would take another queue's work.
    with pytest.raises(StoqException, match=r"plugin 'redis': Redis url .* must be a database"):
        Stoq(
            base_dir=str(tmp_path),
            log_dir=None,
            plugin_dir_list=[],
            providers=["redis"],
            plugin_opts={"redis": {"url": "redis://127.0.0.1/notadb"}},
        )

    async def read() -> None:
        async for _ in results(url="redis://127.0.0.1/notadb"):
            pass

    with pytest.raises(StoqException, match="must be a database number"):
        asyncio.run(read())
    with pytest.raises(StoqException, match="must be a database number"):
        asyncio.run(submit([b"x"], url="redis://127.0.0.1/notadb"))
