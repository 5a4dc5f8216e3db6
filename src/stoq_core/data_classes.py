"""The data model: what plugins receive and return, and the response a scan produces.

Every class keeps stoQ v3's constructor arguments and defaults, so v3 plugins build them unchanged.
``str(StoqResponse)`` is the same JSON v3 wrote, field for field and in the same order.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Iterable
from typing import Any, Optional, Union

import attrs

from stoq_core.helpers import dumps

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


def _dict(value: Optional[dict[str, Any]]) -> dict[str, Any]:
    return {} if value is None else value


def _list(value: Union[str, Iterable[Any], None]) -> list[Any]:
    # v3 accepted a bare string where a list was meant (``PayloadMeta(dispatch_to='yara')``).
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value if isinstance(value, list) else list(value)


def _bytes(content: Union[bytes, bytearray, memoryview, str]) -> Any:
    # A str is encoded so that ``size`` counts bytes, not characters (a v3 bug).
    if isinstance(content, str):
        return content.encode()
    return content


@attrs.define(eq=False)
class PayloadMeta:
    """What the submitter or the extracting worker says about a payload.

    :param should_archive: destination archivers may save this payload.
    :param should_scan: workers and dispatchers see this payload; ``False`` keeps it in the results only.
    :param extra_data: free-form metadata (``filename``, ``source_dir``, ...), kept in the JSON.
    :param dispatch_to: workers to run on this payload besides those the dispatchers pick.
    """

    should_archive: bool = True
    should_scan: bool = True
    extra_data: dict[str, Any] = attrs.field(default=None, converter=_dict)
    dispatch_to: list[str] = attrs.field(default=None, converter=_list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "should_archive": self.should_archive,
            "should_scan": self.should_scan,
            "extra_data": self.extra_data,
            "dispatch_to": self.dispatch_to,
        }


@attrs.define(eq=False)
class RequestMeta:
    """Metadata of one request (one submission and everything extracted from it)."""

    archive_payloads: bool = True
    source: Optional[str] = None
    extra_data: dict[str, Any] = attrs.field(default=None, converter=_dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive_payloads": self.archive_payloads,
            "source": self.source,
            "extra_data": self.extra_data,
        }

    def is_default(self) -> bool:
        """True when nothing differs from ``RequestMeta()``."""
        return self.archive_payloads and self.source is None and not self.extra_data


@attrs.define(eq=False)
class Error:
    """One failure, kept in the response instead of stopping the scan."""

    error: str = attrs.field(converter=str)
    plugin_name: Optional[str] = None
    payload_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "plugin_name": self.plugin_name, "payload_id": self.payload_id}


@attrs.define(eq=False)
class PayloadResults:
    """Everything learnt about one payload; this is what the JSON's ``results`` list holds.

    The field order is the JSON's order, which is v3's.
    """

    size: int
    payload_id: str
    payload_meta: PayloadMeta
    plugins_run: dict[str, list[str]] = attrs.field(
        factory=lambda: {"workers": [], "archivers": []}
    )
    extracted_from: list[str] = attrs.field(factory=list, converter=_list)
    extracted_by: list[str] = attrs.field(factory=list, converter=_list)
    workers: dict[str, Any] = attrs.field(factory=dict)
    archivers: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "payload_id": self.payload_id,
            "payload_meta": self.payload_meta.to_dict(),
            "plugins_run": self.plugins_run,
            "extracted_from": self.extracted_from,
            "extracted_by": self.extracted_by,
            "workers": self.workers,
            "archivers": self.archivers,
        }


@attrs.define(eq=False, init=False)
class Payload:
    """A payload under scan: its bytes, the dispatchers' metadata and its results.

    :param content: the bytes (a ``str`` is UTF-8 encoded; any buffer such as an ``mmap`` is kept as is).
    :param payload_meta: defaults to ``PayloadMeta()``.
    :param extracted_by: the worker(s) that extracted it.
    :param extracted_from: the ``payload_id``(s) it was extracted from.
    :param payload_id: defaults to a new uuid4.
    """

    content: Any
    dispatch_meta: dict[str, Any]
    results: PayloadResults
    _digests: dict[str, str]

    def __init__(
        self,
        content: Union[bytes, str],
        payload_meta: Optional[PayloadMeta] = None,
        extracted_by: Union[str, list[str], None] = None,
        extracted_from: Union[str, list[str], None] = None,
        payload_id: Optional[str] = None,
    ) -> None:
        self.content = _bytes(content)
        self.dispatch_meta = {}
        self._digests = {}
        self.results = PayloadResults(
            len(self.content),
            payload_id or str(uuid.uuid4()),
            PayloadMeta() if payload_meta is None else payload_meta,
            extracted_from=extracted_from,
            extracted_by=extracted_by,
        )

    @property
    def payload_id(self) -> str:
        """This payload's id (``results.payload_id``)."""
        return self.results.payload_id

    @property
    def payload_meta(self) -> PayloadMeta:
        """This payload's metadata (``results.payload_meta``)."""
        return self.results.payload_meta

    def digest(self, algorithm: str = "sha256") -> str:
        """The lowercase hex digest of the content, computed once and shared.

        The core's de-duplication and the hash plugin read the same cache, so no pass over the
        bytes is made twice.
        """
        known = self._digests.get(algorithm)
        if known is None:
            known = self._digests[algorithm] = hashlib.new(algorithm, self.content).hexdigest()
        return known

    def known_digests(self) -> dict[str, str]:
        """The digests already computed, by hashlib name (a live view: add to it to share one)."""
        return self._digests


def _request_meta(meta: Optional[RequestMeta]) -> RequestMeta:
    return RequestMeta() if meta is None else meta


def _payload_meta(meta: Optional[PayloadMeta]) -> PayloadMeta:
    return PayloadMeta() if meta is None else meta


@attrs.define(eq=False)
class Request:
    """All payloads of one scan, the request's metadata and the errors gathered so far."""

    payloads: list[Payload] = attrs.field(default=None, converter=_list)
    request_meta: RequestMeta = attrs.field(default=None, converter=_request_meta)
    errors: list[Error] = attrs.field(default=None, converter=_list)


@attrs.define(eq=False)
class ExtractedPayload:
    """A payload a worker carved out of the one it scanned."""

    content: Any = attrs.field(converter=_bytes)
    payload_meta: PayloadMeta = attrs.field(default=None, converter=_payload_meta)


@attrs.define(eq=False)
class WorkerResponse:
    """What ``scan`` returns: results for the JSON, extracted payloads, errors, more workers."""

    results: Optional[Any] = None
    extracted: list[ExtractedPayload] = attrs.field(default=None, converter=_list)
    errors: list[Any] = attrs.field(default=None, converter=_list)
    dispatch_to: list[str] = attrs.field(default=None, converter=_list)


@attrs.define(eq=False)
class DispatcherResponse:
    """What ``get_dispatches`` returns: the workers to run and metadata kept per payload."""

    plugin_names: list[str] = attrs.field(default=None, converter=_list)
    meta: dict[str, Any] = attrs.field(default=None, converter=_dict)
    errors: list[Any] = attrs.field(default=None, converter=_list)


@attrs.define(eq=False)
class ArchiverResponse:
    """What ``archive`` returns (and ``get`` receives): how to find the payload again."""

    results: Optional[Any] = None
    errors: list[Any] = attrs.field(default=None, converter=_list)


@attrs.define(eq=False)
class DecoratorResponse:
    """What ``decorate`` returns: results added under the decorator's name."""

    results: Optional[Any] = None
    errors: list[Any] = attrs.field(default=None, converter=_list)


def _now() -> str:
    return datetime.datetime.now().isoformat()


@attrs.define(eq=False, init=False)
class StoqResponse:
    """The outcome of one request; ``str()`` gives v3's JSON.

    :param request: the scanned request; its payloads' results, metadata and errors are taken.
    :param time: ISO 8601; defaults to now.
    :param decorators: decorator results by decorator name.
    :param scan_id: defaults to a new uuid4.
    """

    results: list[PayloadResults]
    request_meta: RequestMeta
    errors: list[Error]
    time: str
    decorators: dict[str, Any]
    scan_id: str

    def __init__(
        self,
        request: Request,
        time: Optional[str] = None,
        decorators: Optional[dict[str, Any]] = None,
        scan_id: Optional[str] = None,
    ) -> None:
        self.results = [payload.results for payload in request.payloads]
        self.request_meta = request.request_meta
        self.errors = request.errors
        self.time = _now() if time is None else time
        self.decorators = _dict(decorators)
        self.scan_id = str(uuid.uuid4()) if scan_id is None else scan_id

    def to_dict(self) -> dict[str, Any]:
        """The response as plain dicts and lists, in v3's field order."""
        return {
            "results": [result.to_dict() for result in self.results],
            "request_meta": self.request_meta.to_dict(),
            "errors": [_error_dict(error) for error in self.errors],
            "time": self.time,
            "decorators": self.decorators,
            "scan_id": self.scan_id,
        }

    def __str__(self) -> str:
        return dumps(self.to_dict())

    def split(self) -> list[dict[str, Any]]:
        """One response dict per (payload, worker result), for stores indexed by worker."""
        common = self.to_dict()
        del common["results"]
        pieces = []
        for result in self.results:
            for worker, worker_result in result.workers.items():
                one = result.to_dict()
                one["workers"] = {worker: worker_result}
                pieces.append({"results": [one], **common})
        return pieces


def _error_dict(error: Any) -> Any:
    # Plugins sometimes put bare strings where an Error belongs; keep them readable.
    return error.to_dict() if isinstance(error, Error) else error


def subresponse_results(response: StoqResponse) -> Iterable[list[PayloadResults]]:
    """For each payload in turn, it and everything extracted from it, directly or further down."""
    children: dict[str, list[PayloadResults]] = {}
    for result in response.results:
        for parent in result.extracted_from:
            children.setdefault(parent, []).append(result)
    for root in response.results:
        tree, seen, stack = [root], {root.payload_id}, [root.payload_id]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child.payload_id not in seen:
                    seen.add(child.payload_id)
                    tree.append(child)
                    stack.append(child.payload_id)
        yield tree
