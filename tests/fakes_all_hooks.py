"""A plugin implementing every hook, each recording that it was called."""

from __future__ import annotations

from typing import Any

from stoq_core import hookimpl


class AllHooks:
    def __init__(self, config: Any) -> None:
        self.called: list[str] = []

    @hookimpl
    async def scan(self, payload: Any, request: Any) -> None:
        self.called.append("scan")

    @hookimpl
    async def get_dispatches(self, payload: Any, request: Any) -> None:
        self.called.append("get_dispatches")

    @hookimpl
    async def archive(self, payload: Any, request: Any) -> None:
        self.called.append("archive")

    @hookimpl
    async def get(self, task: Any) -> None:
        self.called.append("get")

    @hookimpl
    async def decorate(self, response: Any) -> None:
        self.called.append("decorate")

    @hookimpl
    async def save(self, response: Any) -> None:
        self.called.append("save")

    @hookimpl
    async def ingest(self, queue: Any) -> None:
        self.called.append("ingest")
