"""v3's ``stoq.plugins``: the plugin base classes (the ``stoq_core.plugins`` classes themselves).

A v3 plugin subclasses one or several of them; each method named like a hook (``scan``,
``get_dispatches``, ``archive``, ``get``, ``save``, ``decorate``, ``ingest``) is registered as
that hook's implementation, with no marker needed.
"""

from stoq_core.plugins import (
    ArchiverPlugin,
    BasePlugin,
    ConnectorPlugin,
    DecoratorPlugin,
    DispatcherPlugin,
    ProviderPlugin,
    WorkerPlugin,
)

__all__ = [
    "ArchiverPlugin",
    "BasePlugin",
    "ConnectorPlugin",
    "DecoratorPlugin",
    "DispatcherPlugin",
    "ProviderPlugin",
    "WorkerPlugin",
]
