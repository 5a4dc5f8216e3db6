"""Workers the yara dispatcher routes to in the tests, published by conftest's ``test_workers``."""

from __future__ import annotations

from typing import Any

from stoq_core import ExtractedPayload, Payload, Request, WorkerResponse, hookimpl


class ProbeWorker:
    """Reports what the yara dispatcher left in ``payload.dispatch_meta`` for it."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"dispatch_meta": payload.dispatch_meta.get("yara")})


class MarkerWorker:
    """Says that it ran."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"ran": True})


class CarverWorker:
    """Extracts one child payload, so that a scan has a second round."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse(extracted=[ExtractedPayload(b"a child without the marker")])
