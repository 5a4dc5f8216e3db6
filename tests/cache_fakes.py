"""Workers for the result cache's tests, published as entry points (``install_plugins``).

Each counts its calls in ``CALLS`` (by plugin name, across every ``Stoq`` of the process), so a
test can tell a result that was reused from one that was made again.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, ClassVar

from stoq_core import Error, ExtractedPayload, Payload, PayloadMeta, Request, WorkerResponse
from stoq_core.plugins import WorkerPlugin

#: Calls of ``scan`` by plugin name.
CALLS: Counter[str] = Counter()


class Counting(WorkerPlugin):
    """Returns ``{"label": <option label>, "size": <payload size>}``.

    Options: ``label``; ``extract`` (JSON list of child contents, extracted from a payload
    whose content is ``parent``; ``{"big": N}`` extracts N bytes); ``error`` (an error it
    reports with its results); ``raise_on`` (content that makes it raise); ``dispatch_to``.
    """

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        self.label = config.get("options", "label", fallback="one")
        self.extract = json.loads(config.get("options", "extract", fallback="[]"))
        self.error = config.get("options", "error", fallback=None)
        self.raise_on = config.get("options", "raise_on", fallback=None)
        self.dispatch_to = config.getlist("options", "dispatch_to", fallback=[])

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        CALLS[self.plugin_name] += 1
        content = bytes(payload.content)
        if self.raise_on is not None and content == self.raise_on.encode():
            raise ValueError(f"cannot stand {content!r}")
        extracted = []
        if content == b"parent":
            for child in self.extract:
                if isinstance(child, dict):
                    extracted.append(ExtractedPayload(b"x" * child["big"]))
                else:
                    meta = PayloadMeta(extra_data={"filename": f"{child}.txt"})
                    extracted.append(ExtractedPayload(child.encode(), meta))
        errors: list[Any] = []
        if self.error:
            errors = [Error(self.error, self.plugin_name, payload.results.payload_id), "bare"]
        return WorkerResponse(
            {"label": self.label, "size": len(content)},
            extracted=extracted,
            errors=errors,
            dispatch_to=self.dispatch_to if content == b"parent" else None,
        )


class LiveLookup(Counting):
    """A reputation lookup: its answer may change from one minute to the next."""

    cacheable: ClassVar[bool] = False


def scan_each(home: str, contents: list[str]) -> None:
    """Scan each of ``contents`` with ``counting``, the local cache on (a process's target)."""
    import asyncio

    from stoq_core import Stoq

    stoq = Stoq(base_dir=home, log_dir=None, plugin_dir_list=[], cache="local")
    for content in contents:
        asyncio.run(stoq.scan(content.encode(), add_start_dispatch=["counting"]))
