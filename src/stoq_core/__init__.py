"""stoQ's core: the hookspecs, the data model, the plugin manager and the scan engine.

Plugin authors need ``hookimpl`` and the data classes; everything here is public API.
"""

from stoq_core._budget import ExtractionLimitExceeded, charge_extracted_bytes
from stoq_core._index import ENTRY_POINT_GROUP
from stoq_core._index import refresh as refresh_entry_points
from stoq_core._index import use_index_file as use_entry_point_index
from stoq_core._manager import PluginInfo
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

__version__ = "4.0.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "ArchiverResponse",
    "DecoratorResponse",
    "DispatcherResponse",
    "Error",
    "ExtractedPayload",
    "ExtractionLimitExceeded",
    "Payload",
    "PayloadMeta",
    "PayloadResults",
    "PluginInfo",
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
