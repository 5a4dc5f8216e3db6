"""Workers that make OpenTelemetry spans of their own, for ``test_observe`` (published as entry
points by the test, as any plugin is)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace

from stoq_core import Payload, Request, StoqConfigParser, hookimpl

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
