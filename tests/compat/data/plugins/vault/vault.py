"""A v3 archiver with both methods: ``archive`` saves the bytes, ``get`` loads them back."""

import os
from typing import Optional

from stoq.data_classes import ArchiverResponse, Payload, PayloadMeta, Request
from stoq.exceptions import StoqPluginException
from stoq.helpers import StoqConfigParser, get_sha1
from stoq.plugins import ArchiverPlugin


class VaultArchiver(ArchiverPlugin):
    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        self.vault_dir = config.get("options", "vault_dir", fallback="")
        if not self.vault_dir:
            raise StoqPluginException("vault needs the vault_dir option")

    async def archive(self, payload: Payload, request: Request) -> Optional[ArchiverResponse]:
        path = os.path.join(self.vault_dir, get_sha1(payload.content))
        with open(path, "wb") as out:
            out.write(payload.content)
        return ArchiverResponse({"path": path})

    async def get(self, task: ArchiverResponse) -> Optional[Payload]:
        path = task.results["path"]
        with open(path, "rb") as infile:
            return Payload(infile.read(), PayloadMeta(extra_data={"path": path}))
