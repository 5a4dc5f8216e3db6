"""A v3 worker with ``required_workers = carve`` in its .stoq file: it reads carve's results."""

from typing import Optional

from stoq import Payload, Request, WorkerResponse
from stoq.plugins import WorkerPlugin


class ReportWorker(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        carved = payload.results.workers["carve"]
        results = {"carved_parts": carved["parts"], "required": sorted(self.required_workers)}
        return WorkerResponse(results)
