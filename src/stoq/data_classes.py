"""v3's ``stoq.data_classes``: what plugins receive and return, and the scan's response."""

from stoq_core.data_classes import (
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
    StoqResponse,
    WorkerResponse,
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
    "StoqResponse",
    "WorkerResponse",
]
