"""v3's ``stoq.plugins.archiver``: ``ArchiverPlugin``."""

from stoq_core.plugins import ArchiverPlugin

__all__ = ["ArchiverPlugin"]
