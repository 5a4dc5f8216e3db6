"""A v3 connector: writes each response to ``<results_dir>/<scan_id>.json``."""

import os

from stoq import StoqResponse
from stoq.exceptions import StoqPluginException
from stoq.helpers import StoqConfigParser
from stoq.plugins import ConnectorPlugin


class JsonFileConnector(ConnectorPlugin):
    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        self.results_dir = config.get("options", "results_dir", fallback="")
        if not self.results_dir:
            raise StoqPluginException("jsonfile needs the results_dir option")

    async def save(self, response: StoqResponse) -> None:
        os.makedirs(self.results_dir, exist_ok=True)
        path = os.path.join(self.results_dir, f"{response.scan_id}.json")
        with open(path, "w") as result:
            result.write(str(response))
