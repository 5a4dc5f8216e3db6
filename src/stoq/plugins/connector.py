"""v3's ``stoq.plugins.connector``: ``ConnectorPlugin``."""

from stoq_core.plugins import ConnectorPlugin

__all__ = ["ConnectorPlugin"]
