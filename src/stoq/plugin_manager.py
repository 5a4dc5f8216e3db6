"""v3's ``stoq.plugin_manager``: ``StoqPluginManager``, finding and loading plugins without a ``Stoq``.

Scripts use it to list what a plugin directory holds or to build one plugin and call it
directly. It is backed by the core's plugin manager, so it loads a plugin exactly as a scan
would: plugin directories first, then installed distributions (``stoq.plugins`` entry points).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from stoq_core._manager import PluginInfo, PluginManager
from stoq_core.config import StoqConfigParser
from stoq_core.plugins import HOOK_ROLES

__all__ = ["StoqPluginManager"]

# v3's list_plugins() named each plugin's roles by its base classes, without "Plugin".
_ROLE_OF_HOOK = {hook: role.kind.capitalize() for hook, role in HOOK_ROLES.items()}


class StoqPluginManager:
    """Finds the plugins of ``plugin_dir_list`` and of installed distributions; loads them by name.

    :param plugin_dir_list: v3 plugin directories (``*.stoq`` files, at any depth); when two
        hold the same name, the later one wins. A directory that does not exist is skipped.
    :param plugin_opts: ``{plugin_name: {option: value}}``, beating ``stoq_config``.
    :param stoq_config: a parsed ``stoq.cfg``; its ``[plugin_name]`` sections configure plugins.
    """

    def __init__(
        self,
        plugin_dir_list: Iterable[str],
        plugin_opts: Optional[Mapping[str, Mapping[str, Any]]] = None,
        stoq_config: Optional[StoqConfigParser] = None,
    ) -> None:
        self.log = logging.getLogger("stoq")
        self.plugins = PluginManager(
            [directory.strip() for directory in plugin_dir_list], stoq_config, plugin_opts
        )

    def load_plugin(self, plugin_name: str) -> Any:
        """The plugin object named ``plugin_name``, built on first use and the same one after.

        :raises StoqPluginNotFound: no plugin has that name.
        :raises StoqPluginException: it exists but cannot be imported or started (its module
            holds no plugin class, or several); a ``StoqException`` as in v3.
        """
        return self.plugins.load(plugin_name.strip()).obj

    def list_plugins(self) -> dict[str, dict[str, Any]]:
        """Every plugin that can be named, as v3 listed them: ``{name: {"classes": [...],
        "version": ..., "description": ...}}``, ``classes`` being its roles (``"Worker"``,
        ``"Dispatcher"``, ...). A ``.stoq`` file that cannot be read is left out, as in v3."""
        broken = self.plugins.broken_legacy
        return {
            name: _v3_listing(info)
            for name, info in self.plugins.info().items()
            if name not in broken
        }

    @property
    def _loaded_plugins(self) -> dict[str, Any]:
        # v3's own tests and some scripts read this private table of loaded plugins.
        return {name: loaded.obj for name, loaded in self.plugins.loaded.items()}


def _v3_listing(info: PluginInfo) -> dict[str, Any]:
    roles = dict.fromkeys(_ROLE_OF_HOOK[hook] for hook in info.hooks if hook in _ROLE_OF_HOOK)
    return {"classes": list(roles), "version": info.version, "description": info.description}
