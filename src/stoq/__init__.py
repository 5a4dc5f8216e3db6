"""The stoQ v3 API (``import stoq``), backed by ``stoq_core``.

Every name here is the ``stoq_core`` object itself, not a copy, so a v3 program or plugin and a
new entry-point plugin share one engine, one data model and one set of exceptions.
"""

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
    Stoq,
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
