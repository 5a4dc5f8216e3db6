"""v3's ``stoq.plugins.base``: ``BasePlugin``."""

from stoq_core.plugins import BasePlugin

__all__ = ["BasePlugin"]
