"""Fake plugins for the CLI's tests, published as entry points of a test distribution.

Each behaves through its options (``--plugin-opts`` or stoq.cfg), as a real plugin would, so the
tests drive them the way a user drives a plugin.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from stoq_core import (
    DecoratorResponse,
    DispatcherResponse,
    ExtractedPayload,
    Payload,
    PayloadMeta,
    Request,
    StoqConfigParser,
    StoqResponse,
    WorkerResponse,
    hookimpl,
)


class Echo:
    """A worker that reports what it saw: size, filename, its ``greeting`` option."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.greeting = config.get("options", "greeting", fallback="hello")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        extra = payload.results.payload_meta.extra_data
        return WorkerResponse(
            {
                "size": len(payload.content),
                "filename": extra.get("filename"),
                "greeting": self.greeting,
            }
        )


class Carver:
    """A worker that extracts the ``|``-separated parts of a payload, each named ``partN``."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        parts = bytes(payload.content).split(b"|")
        extracted = []
        if len(parts) > 1:
            extracted = [
                ExtractedPayload(part, PayloadMeta(extra_data={"filename": f"part{i}"}))
                for i, part in enumerate(parts)
            ]
        return WorkerResponse({"parts": len(parts)}, extracted=extracted)


class Failing:
    """A worker that raises on every payload."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        raise RuntimeError("the fake worker always fails")


class Slow:
    """A worker that takes ``seconds`` (option) per payload; it first creates ``marker``, if set."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.seconds = config.getfloat("options", "seconds", fallback=0.3)
        self.marker = config.get("options", "marker", fallback=None)

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        if self.marker:
            Path(self.marker).touch()
        await asyncio.sleep(self.seconds)
        return WorkerResponse({"slept": self.seconds})


class Dispatch:
    """A dispatcher that sends every payload to the workers named by its ``to`` option."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.to = config.getlist("options", "to", fallback=["cli_echo"])

    @hookimpl
    async def get_dispatches(self, payload: Payload, request: Request) -> DispatcherResponse:
        return DispatcherResponse(self.to)


class Sink:
    """A connector that writes each response to ``results_dir/<scan_id>.json``."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.results_dir = Path(config.get("options", "results_dir"))

    @hookimpl
    async def save(self, response: StoqResponse) -> None:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        (self.results_dir / f"{response.scan_id}.json").write_text(str(response))


class BrokenSink:
    """A connector that cannot save anything."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def save(self, response: StoqResponse) -> None:
        raise OSError("the fake disk is full")


class Tagger:
    """A decorator that counts the payloads of each response."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def decorate(self, response: StoqResponse) -> DecoratorResponse:
        return DecoratorResponse({"payloads": len(response.results)})


class Burst:
    """A provider that queues ``count`` payloads (``payload 0``, ``payload 1``...) and finishes."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.count = config.getint("options", "count", fallback=3)

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        for index in range(self.count):
            await queue.put(Payload(f"payload {index}".encode()))


class Endless:
    """A provider that queues ``count`` payloads, writes ``marker`` and then never finishes."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.count = config.getint("options", "count", fallback=3)
        self.marker = Path(config.get("options", "marker"))

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        for index in range(self.count):
            await queue.put(Payload(f"endless {index}".encode()))
        self.marker.write_text(json.dumps({"queued": self.count, "pid": os.getpid()}))
        await asyncio.Event().wait()


class FailingProvider:
    """A provider that queues one payload, then raises."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        await queue.put(Payload(b"before the failure"))
        raise ConnectionError("the fake source went away")


class WontStart:
    """A plugin whose constructor fails, as one missing its configuration would."""

    def __init__(self, config: StoqConfigParser) -> None:
        raise ValueError("option api_key is required")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        return None
