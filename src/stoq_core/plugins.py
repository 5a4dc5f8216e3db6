"""Base classes for class-style plugins, as stoQ v3 wrote them.

Subclassing is optional: an entry point may name any class whose methods carry ``@hookimpl``. A
subclass of these bases needs no marker: each method named like a hook (``scan``,
``get_dispatches``, ...) is its implementation, so v3 plugins register unchanged. Several bases
may be combined (v3's multiclass plugins).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Optional

from stoq_core.config import StoqConfigParser
from stoq_core.data_classes import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    WorkerResponse,
)
from stoq_core.hookspecs import HOOK_NAMES
from stoq_core.options import Option

__all__ = [
    "HOOK_ROLES",
    "PLUGIN_LIST_HOOKS",
    "ROLES",
    "ROLE_HOOKS",
    "ArchiverPlugin",
    "BasePlugin",
    "ConnectorPlugin",
    "DecoratorPlugin",
    "DispatcherPlugin",
    "ProviderPlugin",
    "Role",
    "WorkerPlugin",
    "role_hooks",
]


class Role(NamedTuple):
    """One part a plugin plays in a scan, and the hook the engine calls it through."""

    hook: str  #: the hook the engine calls
    kind: str  #: what a plugin implementing it is called: ``worker``, ``archiver``...
    name: str  #: this use of the kind, as the docs say it: ``source archiver``...
    #: The ``Stoq`` argument and stoq.cfg ``[core]`` option that name such plugins.
    plugin_list: str
    #: The response class the hook returns, whose results and errors a scan files (None:
    #: the hook returns no response).
    response: Optional[type[Any]] = None


#: Every role, in the order a scan meets them (``hookspecs.HOOK_NAMES``): the one table the
#: engine, the plugin bases, ``stoq list`` and ``stoq plugin new`` read roles and hooks from.
ROLES: tuple[Role, ...] = (
    Role("ingest", "provider", "provider", "providers"),
    Role("get", "archiver", "source archiver", "source_archivers"),
    Role("get_dispatches", "dispatcher", "dispatcher", "dispatchers", DispatcherResponse),
    Role("scan", "worker", "worker", "always_dispatch", WorkerResponse),
    Role("archive", "archiver", "destination archiver", "dest_archivers", ArchiverResponse),
    Role("decorate", "decorator", "decorator", "decorators", DecoratorResponse),
    Role("save", "connector", "connector", "connectors"),
)

#: Each hook's role, by hook name.
HOOK_ROLES: dict[str, Role] = {role.hook: role for role in ROLES}

#: The hook a plugin must implement to be named in each plugin list (``connectors``: ``save``).
PLUGIN_LIST_HOOKS: dict[str, str] = {role.plugin_list: role.hook for role in ROLES}


class BasePlugin:
    """Gives a plugin ``config``, ``plugin_name``, ``log`` and its documentation fields."""

    #: The options the plugin takes, checked when it loads (``stoq_core.options``); ``None``:
    #: not declared, so whatever it is given is passed on unchecked, as v3 did.
    options: ClassVar[Optional[Sequence[Option]]] = None

    #: ``False``: the result cache never reuses this worker's results (``docs/cache.md``).
    #: Set it on a worker whose results depend on more than the payload's bytes and its
    #: options: a live reputation lookup, the time, the payload's metadata. Any plugin class
    #: or module may set it; the bases only document it.
    cacheable: ClassVar[bool] = True

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        self.config = config
        self.plugin_name: str = config.get("Core", "Name", fallback=type(self).__name__)
        self.__author__ = config.get("Documentation", "Author", fallback="")
        self.__version__ = config.get("Documentation", "Version", fallback="")
        self.__website__ = config.get("Documentation", "Website", fallback="")
        self.__description__ = config.get("Documentation", "Description", fallback="")
        self.log = logging.getLogger(f"stoq.{self.plugin_name}")


class WorkerPlugin(BasePlugin):
    """A worker: implement ``async def scan(self, payload, request)``.

    ``required_workers`` (option ``required_workers``, comma separated) names workers whose
    results this one reads; they run first.
    """

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        self.required_workers: set[str] = config.getset(
            "options", "required_workers", fallback=set()
        )


class DispatcherPlugin(BasePlugin):
    """A dispatcher: implement ``async def get_dispatches(self, payload, request)``."""


class ArchiverPlugin(BasePlugin):
    """An archiver: implement ``async def archive(self, payload, request)`` and/or ``async def get(self, task)``."""


class ConnectorPlugin(BasePlugin):
    """A connector: implement ``async def save(self, response)``."""


class DecoratorPlugin(BasePlugin):
    """A decorator: implement ``async def decorate(self, response)``."""


class ProviderPlugin(BasePlugin):
    """A provider: implement ``async def ingest(self, queue)``."""


#: The hooks each v3 role supplies. A subclass's method named like a hook is taken as that hook
#: only if one of its roles supplies it: a worker's helper ``def get(self, url)`` is not ``get``.
ROLE_HOOKS: dict[type[BasePlugin], tuple[str, ...]] = {
    base: tuple(role.hook for role in ROLES if role.kind == kind)
    for base, kind in (
        (WorkerPlugin, "worker"),
        (DispatcherPlugin, "dispatcher"),
        (ArchiverPlugin, "archiver"),
        (ConnectorPlugin, "connector"),
        (DecoratorPlugin, "decorator"),
        (ProviderPlugin, "provider"),
    )
}


def role_hooks(cls: type) -> frozenset[str]:
    """The hook names a class-style plugin's roles supply; every hook for a bare BasePlugin."""
    hooks = {hook for base, names in ROLE_HOOKS.items() if issubclass(cls, base) for hook in names}
    return frozenset(hooks or HOOK_NAMES)
