"""The stoQ v3 API (``import stoq``), backed by ``stoq_core``.

Every name here but ``Stoq`` is the ``stoq_core`` object itself, not a copy, so a v3 program or
plugin and a new entry-point plugin share one data model and one set of exceptions. ``Stoq`` is
the core engine with v3's tables of loaded plugins added (``stoq.core``).
"""

from stoq.core import Stoq
from stoq_core import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    Error,
    ExtractedPayload,
    Payload,
    PayloadMeta,
    PayloadResults,
    Request,
    RequestMeta,
    StoqException,
    StoqPluginException,
    StoqPluginNotFound,
    StoqResponse,
    WorkerResponse,
    __version__,
)

__all__ = [
    "ArchiverResponse",
    "DecoratorResponse",
    "DispatcherResponse",
    "Error",
    "ExtractedPayload",
    "Payload",
    "PayloadMeta",
    "PayloadResults",
    "Request",
    "RequestMeta",
    "Stoq",
    "StoqException",
    "StoqPluginException",
    "StoqPluginNotFound",
    "StoqResponse",
    "WorkerResponse",
    "__version__",
]
