"""A plugin that is a plain module: its hook functions register as they are, with no class."""

from __future__ import annotations

from stoq_core import Payload, Request, WorkerResponse, hookimpl


@hookimpl
async def scan(payload: Payload, request: Request) -> WorkerResponse:
    return WorkerResponse({"module": True, "size": payload.results.size})
