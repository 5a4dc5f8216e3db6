from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Payload, PayloadMeta, PayloadResults, Request, RequestMeta, Stoq, StoqResponse

FAKES = {
    "worker": "fakes:Worker",
    "worker2": "fakes:Worker",
    "worker3": "fakes:Worker",
    "extractor": "fakes:Worker",
    "dispatcher": "fakes:Dispatcher",
    "dispatcher2": "fakes:Dispatcher",
    "archiver": "fakes:Archiver",
    "archiver2": "fakes:Archiver",
    "connector": "fakes:Connector",
    "connector2": "fakes:Connector",
    "decorator": "fakes:Decorator",
    "decorator2": "fakes:Decorator",
    "provider": "fakes:Provider",
    "provider2": "fakes:Provider",
    "multi": "fakes:Multi",
    "sync": "fakes:SyncWorker",
    "wrong_return": "fakes:WrongReturn",
    "module_plugin": "fake_module_plugin",
    "reports_config": "fakes:ReportsConfig",
}


@pytest.fixture
def make_stoq(install_plugins: Callable[..., Path], tmp_path: Path) -> Callable[..., Stoq]:
    """A ``Stoq`` whose fake plugins come from a real (test) distribution's entry points."""
    install_plugins(FAKES, dist="stoq-test-fakes")

    def make(**kwargs: Any) -> Stoq:
        kwargs.setdefault("base_dir", str(tmp_path))
        kwargs.setdefault("log_dir", None)
        return Stoq(**kwargs)

    return make


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
