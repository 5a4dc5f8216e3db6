"""A v3 dispatcher written like the v3 docs' example: its __init__ skips super().__init__."""

from typing import Optional

from stoq.data_classes import DispatcherResponse, Payload, Request
from stoq.helpers import StoqConfigParser
from stoq.plugins import DispatcherPlugin


class RouteDispatcher(DispatcherPlugin):
    def __init__(self, config: StoqConfigParser) -> None:
        self.keyword = config.get("options", "keyword", fallback="|")

    async def get_dispatches(
        self, payload: Payload, request: Request
    ) -> Optional[DispatcherResponse]:
        dr = DispatcherResponse()
        if self.keyword.encode() in payload.content:
            dr.plugin_names.append("carve")
            dr.meta["matched"] = self.keyword
            dr.meta["by"] = self.plugin_name
            self.log.debug("routing %s to carve", payload.results.payload_id)
        return dr
