"""v3's ``stoq.exceptions``."""

from stoq_core.exceptions import StoqException, StoqPluginException, StoqPluginNotFound

__all__ = ["StoqException", "StoqPluginException", "StoqPluginNotFound"]
