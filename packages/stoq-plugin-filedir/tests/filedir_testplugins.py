"""A worker for the filedir tests, published by conftest's ``echo_worker``."""

from __future__ import annotations

from typing import Any

from stoq_core import Payload, Request, WorkerResponse, hookimpl


class EchoWorker:
    """Returns the payload's bytes, so a result shows what the provider read."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"content": bytes(payload.content)})
