import io
import tarfile

import peek_format

from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class TarPeek(WorkerPlugin):
    async def scan(self, payload, request):
        with tarfile.open(fileobj=io.BytesIO(payload.content)) as archive:
            names = archive.getnames()
        return WorkerResponse(
            {
                "members": peek_format.joined(names),
                "tarfile": tarfile.__file__,
                "shadowed": hasattr(tarfile, "FROM_THE_PLUGIN_FOLDER"),
            }
        )
