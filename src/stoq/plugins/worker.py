"""v3's ``stoq.plugins.worker``: ``WorkerPlugin``."""

from stoq_core.plugins import WorkerPlugin

__all__ = ["WorkerPlugin"]
