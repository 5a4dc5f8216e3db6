"""Fake plugins for what a plugin knows of itself: its name inside ``__init__``, its own
description, and the errors it returns in its response (issue 15, items 9 and 12).

Published as entry points by the tests (``install_plugins``), so they take a real plugin's path.
"""

from __future__ import annotations

from typing import Any

from stoq_core import Error, Payload, Request, StoqConfigParser, WorkerResponse, hookimpl
from stoq_core.plugins import WorkerPlugin


class PlainNamed:
    """Reads ``self.plugin_name`` in ``__init__``, as the docs say it may."""

    description = "reports  the name\n it had in __init__"

    def __init__(self, config: StoqConfigParser) -> None:
        self.name_at_init = self.plugin_name

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"name_at_init": self.name_at_init})


class V3Named(WorkerPlugin):
    """A v3 plugin, with v3's constructor signature, reading its name after ``super().__init__``."""

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.name_at_init = self.plugin_name

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"name_at_init": self.name_at_init})


class V3NamedBeforeSuper(WorkerPlugin):
    """A v3 plugin reading its name before it calls ``super().__init__``."""

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        self.name_at_init = self.plugin_name
        super().__init__(config)

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"name_at_init": self.name_at_init})


class ReturnsErrors:
    """A worker whose response carries errors: a bare string (as v3's docs show) and an
    ``Error`` naming no plugin."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse(
            {"size": len(payload.content)},
            errors=["truncated header", Error("bad checksum", payload_id="elsewhere")],
        )


class ReturnsADict:
    """A worker that returns a dict where a ``WorkerResponse`` belongs."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Any:
        return {"size": len(payload.content)}
