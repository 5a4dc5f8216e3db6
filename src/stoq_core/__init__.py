"""stoQ's core: the hookspecs, the data model, the plugin manager and the scan engine.

Plugin authors need ``hookimpl`` and the data classes; everything here is public API.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stoq_core._budget import ExtractionLimitExceeded, charge_extracted_bytes
    from stoq_core._cache import CACHE_ENTRY_POINT_GROUP, CacheBackend, CacheSettings
    from stoq_core._index import ENTRY_POINT_GROUP
    from stoq_core._index import refresh as refresh_entry_points
    from stoq_core._index import use_index_file as use_entry_point_index
    from stoq_core._manager import PluginInfo
    from stoq_core._observe import PluginTiming
    from stoq_core._threads import run_blocking
    from stoq_core.config import StoqConfigParser
    from stoq_core.data_classes import (
        ArchiverResponse,
        DecoratorResponse,
        DispatcherResponse,
        Error,
        ExtractedPayload,
        Payload,
        PayloadMeta,
        PayloadResults,
        QueueItem,
        Request,
        RequestMeta,
        StoqResponse,
        WorkerResponse,
    )
    from stoq_core.engine import RunStats, Stoq
    from stoq_core.exceptions import StoqException, StoqPluginException, StoqPluginNotFound
    from stoq_core.hookspecs import hookimpl
    from stoq_core.options import Option

__version__ = "4.0.0"

# Each public name and where it lives, imported on first use (as pluggy and attrs do): a
# program that needs one part (the ``stoq`` command's help, the entry-point index) does not pay
# for the engine, asyncio and pluggy.
_LAZY: dict[str, tuple[str, str]] = {
    "ArchiverResponse": ("stoq_core.data_classes", "ArchiverResponse"),
    "CACHE_ENTRY_POINT_GROUP": ("stoq_core._cache", "CACHE_ENTRY_POINT_GROUP"),
    "CacheBackend": ("stoq_core._cache", "CacheBackend"),
    "CacheSettings": ("stoq_core._cache", "CacheSettings"),
    "DecoratorResponse": ("stoq_core.data_classes", "DecoratorResponse"),
    "DispatcherResponse": ("stoq_core.data_classes", "DispatcherResponse"),
    "ENTRY_POINT_GROUP": ("stoq_core._index", "ENTRY_POINT_GROUP"),
    "Error": ("stoq_core.data_classes", "Error"),
    "ExtractedPayload": ("stoq_core.data_classes", "ExtractedPayload"),
    "ExtractionLimitExceeded": ("stoq_core._budget", "ExtractionLimitExceeded"),
    "Option": ("stoq_core.options", "Option"),
    "Payload": ("stoq_core.data_classes", "Payload"),
    "PayloadMeta": ("stoq_core.data_classes", "PayloadMeta"),
    "PayloadResults": ("stoq_core.data_classes", "PayloadResults"),
    "PluginInfo": ("stoq_core._manager", "PluginInfo"),
    "PluginTiming": ("stoq_core._observe", "PluginTiming"),
    "QueueItem": ("stoq_core.data_classes", "QueueItem"),
    "Request": ("stoq_core.data_classes", "Request"),
    "RequestMeta": ("stoq_core.data_classes", "RequestMeta"),
    "RunStats": ("stoq_core.engine", "RunStats"),
    "Stoq": ("stoq_core.engine", "Stoq"),
    "StoqConfigParser": ("stoq_core.config", "StoqConfigParser"),
    "StoqException": ("stoq_core.exceptions", "StoqException"),
    "StoqPluginException": ("stoq_core.exceptions", "StoqPluginException"),
    "StoqPluginNotFound": ("stoq_core.exceptions", "StoqPluginNotFound"),
    "StoqResponse": ("stoq_core.data_classes", "StoqResponse"),
    "WorkerResponse": ("stoq_core.data_classes", "WorkerResponse"),
    "charge_extracted_bytes": ("stoq_core._budget", "charge_extracted_bytes"),
    "hookimpl": ("stoq_core.hookspecs", "hookimpl"),
    "refresh_entry_points": ("stoq_core._index", "refresh"),
    "run_blocking": ("stoq_core._threads", "run_blocking"),
    "use_entry_point_index": ("stoq_core._index", "use_index_file"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'stoq_core' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once: the next lookup is an ordinary global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CACHE_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "ArchiverResponse",
    "CacheBackend",
    "CacheSettings",
    "DecoratorResponse",
    "DispatcherResponse",
    "Error",
    "ExtractedPayload",
    "ExtractionLimitExceeded",
    "Option",
    "Payload",
    "PayloadMeta",
    "PayloadResults",
    "PluginInfo",
    "PluginTiming",
    "QueueItem",
    "Request",
    "RequestMeta",
    "RunStats",
    "Stoq",
    "StoqConfigParser",
    "StoqException",
    "StoqPluginException",
    "StoqPluginNotFound",
    "StoqResponse",
    "WorkerResponse",
    "__version__",
    "charge_extracted_bytes",
    "hookimpl",
    "refresh_entry_points",
    "run_blocking",
    "use_entry_point_index",
]
