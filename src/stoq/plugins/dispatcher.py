"""v3's ``stoq.plugins.dispatcher``: ``DispatcherPlugin``."""

from stoq_core.plugins import DispatcherPlugin

__all__ = ["DispatcherPlugin"]
