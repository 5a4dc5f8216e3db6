"""A v3 worker whose scan always raises: the scan must go on without it."""

from typing import Optional

from stoq import Payload, Request, WorkerResponse
from stoq.plugins import WorkerPlugin


class BoomWorker(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        raise ValueError("boom went the worker")
