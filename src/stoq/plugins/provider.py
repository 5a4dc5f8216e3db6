"""v3's ``stoq.plugins.provider``: ``ProviderPlugin``."""

from stoq_core.plugins import ProviderPlugin

__all__ = ["ProviderPlugin"]
