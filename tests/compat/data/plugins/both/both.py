"""A v3 multiclass plugin: a dispatcher and a worker in one class."""

from typing import Optional

from stoq import DispatcherResponse, Payload, Request, WorkerResponse
from stoq.plugins import DispatcherPlugin, WorkerPlugin


class MagicPlugin(WorkerPlugin, DispatcherPlugin):
    async def get_dispatches(
        self, payload: Payload, request: Request
    ) -> Optional[DispatcherResponse]:
        if payload.content.startswith(b"MZ"):
            return DispatcherResponse(plugin_names=[self.plugin_name], meta={"magic": "MZ"})
        return None

    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        # Bytes in results are written as text in the JSON.
        return WorkerResponse({"magic": payload.content[:2]})
