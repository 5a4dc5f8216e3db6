"""Plugins for the tests, published as entry points by conftest's ``plugin_site``."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import redis

from stoq_core import ArchiverResponse, Payload, Request, StoqResponse, WorkerResponse
from stoq_core.plugins import ArchiverPlugin, ConnectorPlugin, WorkerPlugin


class SleepyWorker(WorkerPlugin):
    """Reports the payload's size and sha256 after ``delay`` seconds (option, default 0)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        self.delay = config.getfloat("options", "delay", fallback=0.0)

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        content = bytes(payload.content)
        return WorkerResponse({"size": len(content), "sha256": hashlib.sha256(content).hexdigest()})


class CrashWorker(WorkerPlugin):
    """Kills its own process when the payload is ``b"crash"``, as a segfaulting library would."""

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        if bytes(payload.content) == b"crash":
            os._exit(3)
        return WorkerResponse({"ok": True})


class RaisingWorker(WorkerPlugin):
    """Raises on every payload, as a worker with a bug would."""

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        raise RuntimeError("the raiser raised")


class PendingProbe(WorkerPlugin):
    """Reports how many messages of the group are unacknowledged while it scans.

    Options: ``port`` of the Redis, ``stream`` and ``group``.
    """

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        self.client = redis.Redis(port=config.getint("options", "port"))
        self.stream = config.get("options", "stream", fallback="stoq:tasks")
        self.group = config.get("options", "group", fallback="stoq")

    def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        # A plain def: the core runs it in a thread, so the blocking client is fine here.
        pending = self.client.xpending(self.stream, self.group)["pending"]
        return WorkerResponse({"pending": pending})


class FlakyConnector(ConnectorPlugin):
    """Raises on its first ``fail_first`` saves; then records each saved task id in ``record``."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        self.fail_first = config.getint("options", "fail_first", fallback=0)
        self.record = config.get("options", "record")
        self.calls = 0

    async def save(self, response: StoqResponse) -> None:
        self.calls += 1
        await asyncio.sleep(0)  # fail after a switch, as a connector doing I/O would
        if self.calls <= self.fail_first:
            raise RuntimeError(f"flaky connector failing on purpose (call {self.calls})")
        with open(self.record, "a", encoding="utf-8") as handle:
            handle.write(f"{response.request_meta.extra_data['task_id']}\n")


class TextArchiver(ArchiverPlugin):
    """A source archiver whose task carries the payload itself: ``{"text": ...}``."""

    async def get(self, task: ArchiverResponse) -> Payload:
        return Payload(task.results["text"].encode())
