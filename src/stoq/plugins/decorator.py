"""v3's ``stoq.plugins.decorator``: ``DecoratorPlugin``."""

from stoq_core.plugins import DecoratorPlugin

__all__ = ["DecoratorPlugin"]
