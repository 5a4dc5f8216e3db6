"""Workers for ``test_observe`` (published as entry points by the test, as any plugin is): ones
that make OpenTelemetry spans of their own, and one that extracts without end."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

from opentelemetry import trace

from stoq_core import (
    ExtractedPayload,
    Payload,
    PayloadMeta,
    Request,
    StoqConfigParser,
    WorkerResponse,
    hookimpl,
)

tracer = trace.get_tracer("observe_fakes")


class Traced:
    """An ``async def`` worker whose scan makes a ``lookup`` span."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        with tracer.start_as_current_span("lookup"):
            await asyncio.sleep(0)


class TracedBlocking:
    """A plain ``def`` worker (run in a thread) whose scan makes a ``blocking lookup`` span."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    def scan(self, payload: Payload, request: Request) -> None:
        with tracer.start_as_current_span("blocking lookup"):
            pass


class Flood:
    """A worker whose ``extracted`` is a generator of distinct payloads that never ends (not to
    be scanned themselves)."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        def members() -> Iterator[ExtractedPayload]:
            for number in itertools.count():
                yield ExtractedPayload(f"member {number}".encode(), PayloadMeta(should_scan=False))

        return WorkerResponse(extracted=members())
