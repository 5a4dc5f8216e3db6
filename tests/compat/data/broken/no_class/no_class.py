"""A module with no plugin class: only the base class imported, a function and a plain class."""

from stoq.plugins import WorkerPlugin  # noqa: F401  (an imported base is not a plugin class)


def scan(payload: bytes) -> int:
    return len(payload)


class NotAPlugin:
    async def scan(self, payload: object, request: object) -> None:
        return None
