"""A worker named echo in the second plugin directory."""

from typing import Optional

from stoq import Payload, Request, WorkerResponse
from stoq.plugins import WorkerPlugin


class EchoWorker(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        return WorkerResponse({"from": "second"})
