"""Helpers for the core's tests (a module of its own: ``conftest`` is a name every folder uses)."""

from __future__ import annotations

import asyncio

from stoq_core import Payload, PayloadMeta, PayloadResults, Request, RequestMeta, Stoq, StoqResponse


def scan(
    stoq: Stoq,
    content: bytes = b"root",
    start: list[str] | None = None,
    payload_meta: PayloadMeta | None = None,
    request_meta: RequestMeta | None = None,
) -> tuple[StoqResponse, dict[bytes, PayloadResults]]:
    """Scan one payload; returns the response and its results keyed by payload content."""
    request = Request([Payload(content, payload_meta)], request_meta)
    response = asyncio.run(stoq.scan_request(request, start))
    return response, {bytes(p.content): p.results for p in request.payloads}


def errors_of(response: StoqResponse, plugin_name: str) -> list[str]:
    return [e.error for e in response.errors if e.plugin_name == plugin_name]
