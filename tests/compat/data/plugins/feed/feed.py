"""A v3 provider: queues each file of ``source_dir``, and a vault task per ``vault_paths`` entry."""

import os
from asyncio import Queue

from stoq import Payload, PayloadMeta
from stoq.helpers import StoqConfigParser
from stoq.plugins import ProviderPlugin


class FeedProvider(ProviderPlugin):
    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        self.source_dir = config.get("options", "source_dir", fallback="")
        self.vault_paths = config.getlist("options", "vault_paths", fallback=[])

    async def ingest(self, queue: Queue) -> None:
        if self.source_dir:
            for name in sorted(os.listdir(self.source_dir)):
                with open(os.path.join(self.source_dir, name), "rb") as infile:
                    meta = PayloadMeta(extra_data={"filename": name})
                    await queue.put(Payload(infile.read(), meta))
        for path in self.vault_paths:
            await queue.put({"vault": {"path": path}})
