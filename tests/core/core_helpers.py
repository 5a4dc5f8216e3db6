"""Helpers for the core's tests (a module of its own: ``conftest`` is a name every folder uses)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def stoq_maker(tmp_path: Path) -> Iterator[Callable[..., Stoq]]:
    """``make(plugin_opts, **stoq_kwargs)``: a ``Stoq`` in ``tmp_path`` with no log file and no
    plugin directories; the processes of its isolated plugins are ended on leaving."""
    from stoq_core._isolation import IsolatedPlugin

    made: list[Stoq] = []

    def build(plugin_opts: dict[str, dict[str, Any]], **kwargs: Any) -> Stoq:
        kwargs.setdefault("base_dir", str(tmp_path))
        kwargs.setdefault("log_dir", None)
        kwargs.setdefault("plugin_dir_list", [])
        stoq = Stoq(plugin_opts=plugin_opts, **kwargs)
        made.append(stoq)
        return stoq

    try:
        yield build
    finally:
        for stoq in made:
            for loaded in stoq.plugins.loaded.values():
                if isinstance(loaded.obj, IsolatedPlugin):
                    loaded.obj.close()
