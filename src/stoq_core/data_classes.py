"""The data model: what plugins receive and return, and the response a scan produces.

Every class keeps stoQ v3's constructor arguments and defaults, so v3 plugins build them unchanged.
``str(StoqResponse)`` is the same JSON v3 wrote, field for field and in the same order.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time as _time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Optional, Union, cast

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
    "QueueItem",
    "Request",
    "RequestMeta",
    "StoqResponse",
    "WorkerResponse",
]


def new_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, at half the cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


# hashlib's named constructors: hashlib.new() looks the name up on every call.
_HASHES: dict[str, Callable[[Any], Any]] = {
    name: getattr(hashlib, name) for name in ("md5", "sha1", "sha256", "sha512")
}

# The variant nibble of an RFC 4122 UUID is 10xx: 8, 9, a or b.
_VARIANT = "89ab" * 4


def _dict(value: Optional[dict[str, Any]]) -> dict[str, Any]:
    return {} if value is None else value


def _list(value: Union[str, Iterable[Any], None]) -> Any:
    # v3 accepted a bare string where a list was meant (``PayloadMeta(dispatch_to='yara')``).
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    if isinstance(value, Iterator):
        # Kept as it is: the engine reads it under its limits (an endless generator given as
        # ``extracted`` once hung the scan right here, in the plugin's own call).
        return value
    return list(value)


class _JsonText:
    """``str()`` gives the object's JSON, fields in v3's order, as v3's data classes did."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields by name, in v3's order; ``dumps`` writes nested objects the same way."""
        raise NotImplementedError

    def __str__(self) -> str:
        return dumps(self.to_dict())


def _bytes(content: Union[bytes, bytearray, memoryview, str]) -> Any:
    # A str is encoded so that ``size`` counts bytes, not characters (a v3 bug).
    if isinstance(content, str):
        return content.encode()
    return content


@attrs.define(eq=False, init=False)
class PayloadMeta(_JsonText):
    """What the submitter or the extracting worker says about a payload.

    :param should_archive: destination archivers may save this payload.
    :param should_scan: workers and dispatchers see this payload; ``False`` keeps it in the results only.
    :param extra_data: free-form metadata (``filename``, ``source_dir``, ...), kept in the JSON.
    :param dispatch_to: workers to run on this payload besides those the dispatchers pick.
    """

    should_archive: bool
    should_scan: bool
    extra_data: dict[str, Any]
    dispatch_to: list[str]

    # Hand-written: this runs for every payload, and attrs' converters cost more than the scan.
    def __init__(
        self,
        should_archive: bool = True,
        should_scan: bool = True,
        extra_data: Optional[dict[str, Any]] = None,
        dispatch_to: Union[str, list[str], None] = None,
    ) -> None:
        self.should_archive = should_archive
        self.should_scan = should_scan
        self.extra_data = {} if extra_data is None else extra_data
        self.dispatch_to = [] if dispatch_to is None else _list(dispatch_to)

    def to_dict(self) -> dict[str, Any]:
        return {
            "should_archive": self.should_archive,
            "should_scan": self.should_scan,
            "extra_data": self.extra_data,
            "dispatch_to": self.dispatch_to,
        }


@attrs.define(eq=False, init=False)
class RequestMeta(_JsonText):
    """Metadata of one request (one submission and everything extracted from it)."""

    archive_payloads: bool
    source: Optional[str]
    extra_data: dict[str, Any]

    def __init__(
        self,
        archive_payloads: bool = True,
        source: Optional[str] = None,
        extra_data: Optional[dict[str, Any]] = None,
    ) -> None:
        self.archive_payloads = archive_payloads
        self.source = source
        self.extra_data = {} if extra_data is None else extra_data

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
class Error(_JsonText):
    """One failure, kept in the response instead of stopping the scan."""

    error: str = attrs.field(converter=str)
    plugin_name: Optional[str] = None
    payload_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "plugin_name": self.plugin_name, "payload_id": self.payload_id}


@attrs.define(eq=False, init=False)
class PayloadResults(_JsonText):
    """Everything learnt about one payload; this is what the JSON's ``results`` list holds.

    The field order is the JSON's order, which is v3's.
    """

    size: int
    _payload_id: Optional[str]
    payload_meta: PayloadMeta
    plugins_run: dict[str, list[str]]
    extracted_from: list[str]
    extracted_by: list[str]
    workers: dict[str, Any]
    archivers: dict[str, Any]
    #: The workers whose results the result cache reused, each with when its result was
    #: made (ISO 8601, UTC); ``None`` when none were. In the JSON only when there are some.
    cached: Optional[dict[str, str]]

    def __init__(
        self,
        size: int,
        payload_id: Optional[str],
        payload_meta: PayloadMeta,
        plugins_run: Optional[dict[str, list[str]]] = None,
        extracted_from: Union[str, list[str], None] = None,
        extracted_by: Union[str, list[str], None] = None,
        workers: Optional[dict[str, Any]] = None,
        archivers: Optional[dict[str, Any]] = None,
    ) -> None:
        self.size = size
        self._payload_id = payload_id
        self.payload_meta = payload_meta
        self.plugins_run = {"workers": [], "archivers": []} if plugins_run is None else plugins_run
        self.extracted_from = [] if extracted_from is None else _list(extracted_from)
        self.extracted_by = [] if extracted_by is None else _list(extracted_by)
        self.workers = {} if workers is None else workers
        self.archivers = {} if archivers is None else archivers
        self.cached = None

    @property
    def payload_id(self) -> str:
        """A uuid4, made on first use: most payloads' ids are only needed for the JSON."""
        if self._payload_id is None:
            self._payload_id = new_id()
        return self._payload_id

    @payload_id.setter
    def payload_id(self, value: str) -> None:
        self._payload_id = value

    def to_dict(self) -> dict[str, Any]:
        data = {
            "size": self.size,
            "payload_id": self.payload_id,
            "payload_meta": self.payload_meta.to_dict(),
            "plugins_run": self.plugins_run,
            "extracted_from": self.extracted_from,
            "extracted_by": self.extracted_by,
            "workers": self.workers,
            "archivers": self.archivers,
        }
        if self.cached:  # after v3's fields, so a reader of v3's JSON sees what it knew
            data["cached"] = self.cached
        return data


@attrs.define(eq=False, init=False)
class Payload(_JsonText):
    """A payload under scan: its bytes, the dispatchers' metadata and its results.

    :param content: the bytes (a ``str`` is UTF-8 encoded; any buffer such as an ``mmap`` is kept as is).
    :param payload_meta: defaults to ``PayloadMeta()``.
    :param extracted_by: the worker(s) that extracted it.
    :param extracted_from: the ``payload_id``(s) it was extracted from.
    :param payload_id: defaults to a new uuid4.
    """

    # Not in repr: a payload may be gigabytes, and reprs get built where no one reads them.
    content: Any = attrs.field(repr=False)
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
        if isinstance(content, str):  # encoded, so that ``size`` counts bytes (a v3 bug)
            content = content.encode()
        self.content = content
        self.dispatch_meta = {}
        self._digests = {}
        self.results = PayloadResults(
            len(content),
            payload_id or None,
            PayloadMeta() if payload_meta is None else payload_meta,
            None,
            extracted_from,
            extracted_by,
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
            new = _HASHES.get(algorithm)
            digest = new(self.content) if new is not None else hashlib.new(algorithm, self.content)
            known = self._digests[algorithm] = digest.hexdigest()
        return known

    def known_digests(self) -> dict[str, str]:
        """The digests already computed, by hashlib name (a live view: add to it to share one)."""
        return self._digests

    def to_dict(self) -> dict[str, Any]:
        """``content`` (written as text), ``dispatch_meta`` and ``results``, as v3 printed them."""
        return {
            "content": self.content,
            "dispatch_meta": self.dispatch_meta,
            "results": self.results.to_dict(),
        }


class _Given:
    """A ``time`` a caller gave that is not text: written as given, as v3 did. (The engine's
    own time is a bare float until first read: formatting costs more than the rest of a small
    scan's response, and most times are never read; wrapping it would cost every scan.)"""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _counted(what: str, items: list[Any]) -> str:
    return f"{len(items)} {what}" if len(items) != 1 else f"1 {what[:-1]}"


@attrs.define(eq=False, init=False, repr=False)
class Request(_JsonText):
    """All payloads of one scan, the request's metadata and the errors gathered so far."""

    payloads: list[Payload]
    request_meta: RequestMeta
    errors: list[Error]
    #: The scan under way, for ``charge_extracted_bytes``; unset outside a scan.
    _extraction: Any = attrs.field(repr=False)

    def __init__(
        self,
        payloads: Optional[list[Payload]] = None,
        request_meta: Optional[RequestMeta] = None,
        errors: Optional[list[Error]] = None,
    ) -> None:
        self.payloads = payloads if type(payloads) is list else _list(payloads)
        self.request_meta = RequestMeta() if request_meta is None else request_meta
        self.errors = [] if errors is None else _list(errors)

    def to_dict(self) -> dict[str, Any]:
        """``payloads`` (content included), ``request_meta`` and ``errors``."""
        return {
            "payloads": [payload.to_dict() for payload in self.payloads],
            "request_meta": self.request_meta.to_dict(),
            "errors": [_error_dict(error) for error in self.errors],
        }

    def __repr__(self) -> str:
        # A count, not every payload: a request may hold thousands, and asyncio formats the
        # repr of a task's result on its own (``asyncio.run`` does, on the way out).
        return (
            f"<Request {_counted('payloads', self.payloads)}, "
            f"{_counted('errors', self.errors)}, {self.request_meta!r}>"
        )


@attrs.define(eq=False, init=False)
class ExtractedPayload(_JsonText):
    """A payload a worker carved out of the one it scanned."""

    content: Any = attrs.field(repr=False)
    payload_meta: PayloadMeta

    # Hand-written: an archive of thousands of members makes thousands of these.
    def __init__(
        self, content: Union[bytes, str], payload_meta: Optional[PayloadMeta] = None
    ) -> None:
        self.content = _bytes(content)
        self.payload_meta = PayloadMeta() if payload_meta is None else payload_meta

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "payload_meta": self.payload_meta.to_dict()}


@attrs.define(eq=False, init=False)
class WorkerResponse(_JsonText):
    """What ``scan`` returns: results for the JSON, extracted payloads, errors, more workers."""

    results: Optional[Any]
    extracted: list[ExtractedPayload]
    errors: list[Any]
    dispatch_to: list[str]

    def __init__(
        self,
        results: Optional[Any] = None,
        extracted: Optional[list[ExtractedPayload]] = None,
        errors: Optional[list[Any]] = None,
        dispatch_to: Union[str, list[str], None] = None,
    ) -> None:
        self.results = results
        self.extracted = [] if extracted is None else _list(extracted)
        self.errors = [] if errors is None else _list(errors)
        self.dispatch_to = [] if dispatch_to is None else _list(dispatch_to)

    def to_dict(self) -> dict[str, Any]:
        # ``extracted`` as given: an iterator is the engine's to read (under its limits),
        # so ``str()`` must not consume it; ``dumps`` writes it as its repr.
        return {
            "results": self.results,
            "extracted": self.extracted,
            "errors": self.errors,
            "dispatch_to": self.dispatch_to,
        }


@attrs.define(eq=False)
class DispatcherResponse(_JsonText):
    """What ``get_dispatches`` returns: the workers to run and metadata kept per payload."""

    plugin_names: list[str] = attrs.field(default=None, converter=_list)
    meta: dict[str, Any] = attrs.field(default=None, converter=_dict)
    errors: list[Any] = attrs.field(default=None, converter=_list)

    def to_dict(self) -> dict[str, Any]:
        return {"plugin_names": self.plugin_names, "meta": self.meta, "errors": self.errors}


@attrs.define(eq=False)
class ArchiverResponse(_JsonText):
    """What ``archive`` returns (and ``get`` receives): how to find the payload again."""

    results: Optional[Any] = None
    errors: list[Any] = attrs.field(default=None, converter=_list)

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.results, "errors": self.errors}


@attrs.define(eq=False)
class DecoratorResponse(_JsonText):
    """What ``decorate`` returns: results added under the decorator's name."""

    results: Optional[Any] = None
    errors: list[Any] = attrs.field(default=None, converter=_list)

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.results, "errors": self.errors}


@attrs.define(eq=False, init=False, repr=False)
class StoqResponse(_JsonText):
    """The outcome of one request; ``str()`` gives v3's JSON.

    :param request: the scanned request; its payloads' results, metadata and errors are taken.
    :param time: ISO 8601; defaults to now. Any other value is kept and written as given, as
        v3 did (``StoqResponse(request, [])`` writes ``"time": []``).
    :param decorators: decorator results by decorator name.
    :param scan_id: defaults to a new uuid4.
    """

    results: list[PayloadResults]
    request_meta: RequestMeta
    errors: list[Error]
    _time: Any  # a timestamp until first read, then its ISO text; or a caller's _Given
    decorators: dict[str, Any]
    _scan_id: Optional[str]

    def __init__(
        self,
        request: Request,
        time: Optional[str] = None,
        decorators: Optional[dict[str, Any]] = None,
        scan_id: Optional[str] = None,
    ) -> None:
        payloads = request.payloads
        # One payload is the common request; a comprehension would add a frame for it.
        self.results = (
            [payloads[0].results]
            if len(payloads) == 1
            else [payload.results for payload in payloads]
        )
        self.request_meta = request.request_meta
        self.errors = request.errors
        if time is None:
            self._time = _time.time()
        else:
            self._time = time if isinstance(time, str) else _Given(time)
        self.decorators = {} if decorators is None else decorators
        self._scan_id = scan_id

    @property
    def time(self) -> str:
        """When the response was made, ISO 8601 in local time (formatted on first read)."""
        stamp = self._time
        if type(stamp) is float:
            self._time = stamp = datetime.datetime.fromtimestamp(stamp).isoformat()
        elif type(stamp) is _Given:
            return cast(str, stamp.value)
        return cast(str, stamp)

    @time.setter
    def time(self, value: str) -> None:
        self._time = value

    @property
    def scan_id(self) -> str:
        """A uuid4, made on first use."""
        if self._scan_id is None:
            self._scan_id = new_id()
        return self._scan_id

    @scan_id.setter
    def scan_id(self, value: str) -> None:
        self._scan_id = value

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

    def __repr__(self) -> str:
        # Counts only, as Request's (str() gives the whole response).
        return (
            f"<StoqResponse scan_id={self._scan_id!r}, {_counted('results', self.results)}, "
            f"{_counted('errors', self.errors)}>"
        )

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


@attrs.define(eq=False)
class QueueItem:
    """A provider's queue item that wants to know how its scan ended.

    ``Stoq.run`` scans ``item`` (a ``Payload``, a ``Request`` or ``{archiver_name: task}``) as
    usual, then calls ``on_done(responses, failures)`` once every request it stood for has been
    scanned and handed to the connectors. ``failures`` lists what went wrong on the way: tasks a
    source archiver could not load, connectors that failed to save, a scan that raised. An empty
    list means every result was saved, the moment a queue may acknowledge the message.
    ``on_done`` is not called when the run is cancelled first.

    :param request_meta: for a Payload or archiver task, used instead of ``run``'s.
    """

    item: Any
    request_meta: Optional[RequestMeta] = None
    on_done: Optional[Callable[[list[StoqResponse], list[Error]], Any]] = None


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
