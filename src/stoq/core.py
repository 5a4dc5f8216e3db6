"""v3's ``stoq.core``: the ``Stoq`` engine class."""

from __future__ import annotations

from typing import Any

from stoq_core._manager import LoadedPlugin
from stoq_core.engine import Stoq as _CoreStoq

__all__ = ["Stoq"]


class Stoq(_CoreStoq):
    """``stoq_core.Stoq``, with the tables of loaded plugins that v3's ``Stoq`` kept.

    Everything else is the core engine itself. v3 programs and v3's own tests read these
    private attributes (``s._loaded_plugins``, ``s._loaded_dispatcher_plugins``, ...); they
    are live views, by plugin name, of the plugin objects, and the core does not use them.
    """

    @property
    def _loaded_plugins(self) -> dict[str, Any]:
        return _objects(self.plugins.loaded)

    @property
    def _loaded_provider_plugins(self) -> dict[str, Any]:
        return _objects(self._providers)

    @property
    def _loaded_source_archiver_plugins(self) -> dict[str, Any]:
        return _objects(self._source_archivers)

    @property
    def _loaded_dest_archiver_plugins(self) -> dict[str, Any]:
        return _objects(self._dest_archivers)

    @property
    def _loaded_dispatcher_plugins(self) -> dict[str, Any]:
        return _objects(self._dispatchers)

    @property
    def _loaded_decorator_plugins(self) -> dict[str, Any]:
        return _objects(self._decorators)

    @property
    def _loaded_connector_plugins(self) -> list[Any]:
        # A list in v3, not a dict.
        return list(_objects(self._connectors).values())


def _objects(loaded: dict[str, LoadedPlugin]) -> dict[str, Any]:
    return {name: plugin.obj for name, plugin in loaded.items()}
