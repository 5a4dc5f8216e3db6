"""A v3 worker that extracts: each ``separator``-delimited part becomes a payload of its own."""

from typing import Optional

from stoq.data_classes import ExtractedPayload, Payload, PayloadMeta, Request, WorkerResponse
from stoq.helpers import StoqConfigParser, get_sha256
from stoq.plugins import WorkerPlugin


class CarveWorker(WorkerPlugin):
    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        self.separator = config.get("options", "separator", fallback="|").encode()

    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        parts = payload.content.split(self.separator)
        extracted = []
        if len(parts) > 1:
            offset = 0
            for part in parts:
                meta = PayloadMeta(extra_data={"offset": offset})
                extracted.append(ExtractedPayload(part, meta))
                offset += len(part) + len(self.separator)
        results = {"parts": len(parts), "sha256": get_sha256(payload.content)}
        return WorkerResponse(results, extracted=extracted)
