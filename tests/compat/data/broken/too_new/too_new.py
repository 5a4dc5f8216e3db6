"""A working worker whose .stoq file asks for a newer stoQ than this one."""

from typing import Optional

from stoq import Payload, Request, WorkerResponse
from stoq.plugins import WorkerPlugin


class TooNewWorker(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        return WorkerResponse({"loaded": True})
