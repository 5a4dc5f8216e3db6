"""A v3 decorator: sums up the whole response."""

from typing import Optional

from stoq.data_classes import DecoratorResponse, StoqResponse
from stoq.helpers import StoqConfigParser
from stoq.plugins import DecoratorPlugin


class StampDecorator(DecoratorPlugin):
    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        self.label = config.get("options", "label", fallback="unlabelled")

    async def decorate(self, response: StoqResponse) -> Optional[DecoratorResponse]:
        workers = sorted({w for r in response.results for w in r.plugins_run["workers"]})
        results = {"label": self.label, "payloads": len(response.results), "workers": workers}
        return DecoratorResponse(results)
