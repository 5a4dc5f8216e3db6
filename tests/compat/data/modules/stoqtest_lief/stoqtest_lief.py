import stoqtest_lief
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin
from stoqtest_lief import parse


class LiefLike(WorkerPlugin):
    async def scan(self, payload, request):
        # Both forms, as v3's lief (import lief) and symhash (from symhash import ...) use them.
        results = parse(payload.content)
        results["library"] = stoqtest_lief.FROM_THE_LIBRARY
        return WorkerResponse(results)
