"""Exceptions a user or a plugin author can meet; the CLI turns each into one line."""

from __future__ import annotations

__all__ = ["StoqException", "StoqPluginException", "StoqPluginNotFound"]


class StoqException(Exception):
    """Something the caller asked for cannot be done (bad configuration, no providers, ...)."""


class StoqPluginNotFound(StoqException):
    """A plugin was named that is neither installed nor in a plugin directory."""


class StoqPluginException(StoqException):
    """A plugin exists but could not be loaded or does not fit the role it was given."""
