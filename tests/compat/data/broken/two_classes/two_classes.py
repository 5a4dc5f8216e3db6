"""A module with two plugin classes: stoQ cannot tell which one is the plugin."""

from typing import Optional

from stoq import Payload, Request, WorkerResponse
from stoq.plugins import WorkerPlugin


class FirstWorker(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        return WorkerResponse({"which": "first"})


class SecondWorker(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        return WorkerResponse({"which": "second"})
