"""Helpers the tests share: running a worker to its end and reading what Redis holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from stoq_core import Stoq


def run(stoq: Stoq, timeout: float = 60) -> None:
    """``stoq.run()`` to its end, failing the test if it takes longer than ``timeout``."""
    asyncio.run(asyncio.wait_for(stoq.run(), timeout))


def results_by_task(
    db: redis.Redis, stream: str = "stoq:results"
) -> dict[str, list[dict[str, Any]]]:
    """Every response in the results stream, grouped by task id (a list, to see duplicates)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for _, fields in db.xrange(stream):
        grouped.setdefault(fields[b"task_id"].decode(), []).append(json.loads(fields[b"result"]))
    return grouped


def result_markers(db: redis.Redis, prefix: str = "stoq") -> set[str]:
    """The task ids with a result marker (``<prefix>:result:<task id>``)."""
    marker = f"{prefix}:result:"
    return {key.decode()[len(marker) :] for key in db.scan_iter(f"{marker}*", count=1000)}


def pending_on(db: redis.Redis, consumer: str) -> int:
    """How many task messages ``consumer`` has read and not yet acknowledged."""
    try:
        consumers = db.xpending("stoq:tasks", "stoq")["consumers"]
    except redis.exceptions.ResponseError:  # no group yet: no worker has started
        return 0
    for entry in consumers:
        if entry["name"].decode() == consumer:
            return int(entry["pending"])
    return 0


def dead_letters(db: redis.Redis, stream: str = "stoq:tasks:dead") -> list[dict[str, str]]:
    """The dead-letter stream's entries, their text fields decoded."""
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        for _, fields in db.xrange(stream)
    ]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
