"""Fake plugins for the core's tests, published as entry points by the ``install_plugins`` fixture.

Each class is configured through its options (``plugin_opts``), so one class serves under many
plugin names, exactly as a real plugin would be configured.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, ClassVar

from stoq_core import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    Error,
    ExtractedPayload,
    Payload,
    PayloadMeta,
    Request,
    StoqConfigParser,
    StoqResponse,
    WorkerResponse,
    hookimpl,
)
from stoq_core.plugins import WorkerPlugin

#: What the fake archivers stored, by key, and what the fake connectors saved, by plugin name.
STORE: dict[str, bytes] = {}
SAVED: dict[str, list[StoqResponse]] = {}


class Worker:
    """A worker whose behaviour per payload content comes from its options.

    Options: ``results`` (JSON; ``null`` returns no results), ``extract`` (JSON: content ->
    list of child contents, or of ``{"content", "dispatch_to", "should_scan"}``),
    ``raise_on`` (content that makes it raise), ``errors`` (list of error strings to return),
    ``dispatch_to`` (workers to ask for), ``required_workers``, ``wait_for`` (a worker whose
    start this one awaits: proves two workers of a round overlap).
    """

    started: ClassVar[dict[str, asyncio.Event]] = {}

    def __init__(self, config: StoqConfigParser) -> None:
        self.name = config.get("Core", "Name")
        self.results = config.getjson("options", "results", fallback={"worker": self.name})
        self.extract = config.getjson("options", "extract", fallback={})
        self.raise_on = config.get("options", "raise_on", fallback=None)
        self.errors = config.getlist("options", "errors", fallback=[])
        self.dispatch_to = config.getlist("options", "dispatch_to", fallback=[])
        self.required_workers = config.getset("options", "required_workers", fallback=set())
        self.wait_for = config.get("options", "wait_for", fallback=None)
        self.calls: list[tuple[bytes, list[str]]] = []

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse | None:
        content = bytes(payload.content)
        self.calls.append((content, list(payload.results.workers)))
        if self.wait_for:
            Worker.started.setdefault(self.name, asyncio.Event()).set()
            other = Worker.started.setdefault(self.wait_for, asyncio.Event())
            await asyncio.wait_for(other.wait(), 5)
        if self.raise_on is not None and content == self.raise_on.encode():
            raise ValueError(f"{self.name} cannot stand {content!r}")
        extracted = []
        for child in self.extract.get(content.decode(errors="replace"), []):
            if isinstance(child, dict):
                meta = PayloadMeta(
                    should_scan=child.get("should_scan", True),
                    should_archive=child.get("should_archive", True),
                    dispatch_to=child.get("dispatch_to"),
                    extra_data={"filename": child["content"]},
                )
                extracted.append(ExtractedPayload(child["content"].encode(), meta))
            else:
                extracted.append(ExtractedPayload(child.encode()))
        if self.results is None and not extracted and not self.errors and not self.dispatch_to:
            return None
        return WorkerResponse(
            results=self.results,
            extracted=extracted,
            errors=list(self.errors),
            dispatch_to=list(self.dispatch_to),
        )


class SyncWorker:
    """A blocking worker written with plain ``def``: it reports the thread it ran in."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"thread": threading.get_ident()})


class WrongReturn:
    """Returns a dict where a WorkerResponse belongs."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Any:
        return {"not": "a WorkerResponse"}


class Dispatcher:
    """Routes by content: option ``route`` is JSON content -> worker names; records its calls.

    Options: ``route``, ``meta`` (JSON), ``raise_on``, ``errors``.
    """

    def __init__(self, config: StoqConfigParser) -> None:
        self.route = config.getjson("options", "route", fallback={})
        self.meta = config.getjson("options", "meta", fallback={})
        self.raise_on = config.get("options", "raise_on", fallback=None)
        self.errors = config.getlist("options", "errors", fallback=[])
        self.calls: list[tuple[bytes, int]] = []

    @hookimpl
    async def get_dispatches(self, payload: Payload, request: Request) -> DispatcherResponse:
        content = bytes(payload.content)
        self.calls.append((content, len(request.payloads)))
        if self.raise_on is not None and content == self.raise_on.encode():
            raise RuntimeError("dispatcher exploded")
        key = content.decode(errors="replace")
        return DispatcherResponse(
            plugin_names=self.route.get(key, self.route.get("*", [])),
            meta=dict(self.meta),
            errors=[Error(e, "dispatcher-said", payload.results.payload_id) for e in self.errors],
        )


class Archiver:
    """Destination and source archiver over the module's ``STORE``; option ``fail`` raises."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.name = config.get("Core", "Name")
        self.fail = config.getboolean("options", "fail", fallback=False)

    @hookimpl
    async def archive(self, payload: Payload, request: Request) -> ArchiverResponse:
        if self.fail:
            raise OSError("disk full")
        key = f"{self.name}:{payload.results.payload_id}"
        STORE[key] = bytes(payload.content)
        return ArchiverResponse({"key": key})

    @hookimpl
    async def get(self, task: ArchiverResponse) -> Payload:
        return Payload(STORE[task.results["key"]], PayloadMeta(extra_data={"from": "archive"}))


class Connector:
    """Keeps every saved response in ``SAVED[name]``; option ``fail`` raises instead."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.name = config.get("Core", "Name")
        self.fail = config.getboolean("options", "fail", fallback=False)
        SAVED[self.name] = []

    @hookimpl
    async def save(self, response: StoqResponse) -> None:
        if self.fail:
            raise ConnectionError("results store unreachable")
        SAVED[self.name].append(response)


class Decorator:
    """Counts the payloads of a response; option ``fail`` raises, ``errors`` returns errors."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.fail = config.getboolean("options", "fail", fallback=False)
        self.errors = config.getlist("options", "errors", fallback=[])

    @hookimpl
    async def decorate(self, response: StoqResponse) -> DecoratorResponse:
        if self.fail:
            raise KeyError("decorator broke")
        return DecoratorResponse({"payloads": len(response.results)}, errors=list(self.errors))


class Provider:
    """Queues its option ``items`` (JSON list): strings become Payloads; ``{"request": ...}``
    a Request with that source; ``{"archiver": name, "content": ...}`` an archiver task.
    Option ``fail`` raises after queueing.
    """

    def __init__(self, config: StoqConfigParser) -> None:
        self.items = config.getjson("options", "items", fallback=[])
        self.fail = config.getboolean("options", "fail", fallback=False)

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        from stoq_core import RequestMeta

        for item in self.items:
            if isinstance(item, str):
                await queue.put(Payload(item.encode()))
            elif "request" in item:
                meta = RequestMeta(source=item["source"]) if item.get("source") else RequestMeta()
                await queue.put(Request([Payload(item["request"].encode())], meta))
            else:
                key = f"provided:{item['content']}"
                STORE[key] = item["content"].encode()
                await queue.put({item["archiver"]: {"key": key}})
        if self.fail:
            raise RuntimeError("provider lost its source")


class Multi:
    """One plugin that is a worker, a dispatcher and a connector (v3's multiclass plugins)."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.name = config.get("Core", "Name")
        SAVED[self.name] = []

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"role": "worker"})

    @hookimpl
    async def get_dispatches(self, payload: Payload, request: Request) -> DispatcherResponse:
        return DispatcherResponse(meta={"role": "dispatcher"})

    @hookimpl
    async def save(self, response: StoqResponse) -> None:
        SAVED[self.name].append(response)


class BrokenConstructor:
    def __init__(self, config: StoqConfigParser) -> None:
        raise RuntimeError("needs an API key")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        return None


class ExtraArgument:
    """Its ``scan`` takes an argument the hookspec does not have."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request, verbose: bool) -> None:
        return None


class UnknownHook:
    """Implements a hook no spec defines."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan_harder(self, payload: Payload) -> None:
        return None


class NoHooks:
    def __init__(self, config: StoqConfigParser) -> None:
        pass


class ReportsConfig:
    """A worker that returns the options it was given, to check their precedence."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.options = dict(config.items("options"))
        self.config = config

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse(self.options)


class Sleepy:
    """An async worker that hangs (until cancelled)."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        await asyncio.sleep(3600)


class SleepySync:
    """A blocking worker that takes a while: a timeout abandons it, its thread finishes later."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    def scan(self, payload: Payload, request: Request) -> None:
        import time

        time.sleep(1)


class Waiting:
    """An async worker that yields to the event loop a few times, then answers or raises.

    Options: ``waits`` (how many bare yields), ``sleep`` (seconds of the last wait, on a future;
    default 0.001), ``fail`` (raise ValueError after waiting), ``blocking_start`` (seconds of
    blocking work before the first wait).
    """

    finished: ClassVar[list[str]] = []  # "cancelled" when a cancellation reached the plugin
    waited: ClassVar[list[float]] = []  # seconds from the first wait to each cancellation

    def __init__(self, config: StoqConfigParser) -> None:
        self.waits = config.getint("options", "waits", fallback=3)
        self.fail = config.getboolean("options", "fail", fallback=False)
        self.blocking_start = config.getfloat("options", "blocking_start", fallback=0.0)
        self.sleep = config.getfloat("options", "sleep", fallback=0.001)

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        import time

        time.sleep(self.blocking_start)
        first_wait = time.monotonic()
        try:
            for _ in range(self.waits):
                await asyncio.sleep(0)  # a bare yield
            await asyncio.sleep(self.sleep)  # a wait on a future
        except asyncio.CancelledError:
            Waiting.finished.append("cancelled")
            Waiting.waited.append(time.monotonic() - first_wait)
            raise
        if self.fail:
            raise ValueError("failed after waiting")
        return WorkerResponse({"waited": self.waits})


class TaskRecorder:
    """A worker that records the asyncio task each of its calls runs in, and never waits."""

    tasks: ClassVar[list[object]] = []

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        TaskRecorder.tasks.append(asyncio.current_task())


#: What ``ContextMarker`` sets, and the values its calls saw.
MARK: contextvars.ContextVar[str] = contextvars.ContextVar("MARK", default="unset")


class ContextMarker:
    """A worker that records the ``MARK`` it sees, then sets ``MARK`` to its own name.

    Option: ``waits`` (bare yields after setting it, before looking at it again; default 0).
    """

    seen: ClassVar[list[tuple[str, str]]] = []  # (plugin name, "before: X" or "after: X")

    def __init__(self, config: StoqConfigParser) -> None:
        self.name = config.get("Core", "Name")
        self.waits = config.getint("options", "waits", fallback=0)

    def mark(self) -> None:
        ContextMarker.seen.append((self.name, f"before: {MARK.get()}"))
        MARK.set(self.name)

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        self.mark()
        for _ in range(self.waits):
            await asyncio.sleep(0)
        ContextMarker.seen.append((self.name, f"after: {MARK.get()}"))


class BlockingContextMarker(ContextMarker):
    """``ContextMarker`` as a plain ``def`` hook, which runs in a thread."""

    @hookimpl
    def scan(self, payload: Payload, request: Request) -> None:  # type: ignore[override]
        self.mark()


class FetchingWorker(WorkerPlugin):
    """A v3-style worker whose helper method happens to be called ``get``."""

    def get(self, url: str) -> str:
        return f"fetched {url}"

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"got": self.get("x")})


class EndlessProvider:
    """Queues payloads until it is cancelled."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        count = 0
        while True:
            count += 1
            await queue.put(Payload(f"endless-{count}".encode()))


class TrackedProvider:
    """Queues QueueItems and records what each one's on_done was told."""

    outcomes: ClassVar[dict[str, tuple[list[StoqResponse], list[Error]]]] = {}

    def __init__(self, config: StoqConfigParser) -> None:
        TrackedProvider.outcomes = {}

    def _done(self, key: str) -> Any:
        async def done(responses: list[StoqResponse], failures: list[Error]) -> None:
            TrackedProvider.outcomes[key] = (responses, failures)

        return done

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        from stoq_core import QueueItem, RequestMeta

        await queue.put(
            QueueItem(Payload(b"tracked"), RequestMeta(source="item"), self._done("plain"))
        )
        await queue.put(
            QueueItem({"archiver": {"key": "no-such-key"}}, None, self._done("missing"))
        )


class Rendezvous:
    """A worker that returns only once ``parties`` scans are inside it at the same time.

    Run one scan at a time and it times out: proof that scans (or calls) really overlap.
    """

    def __init__(self, config: StoqConfigParser) -> None:
        self.parties = config.getint("options", "parties", fallback=2)
        self.inside = 0
        self.everyone: asyncio.Event | None = None

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        if self.everyone is None:
            self.everyone = asyncio.Event()
        self.inside += 1
        if self.inside >= self.parties:
            self.everyone.set()
        await asyncio.wait_for(self.everyone.wait(), 5)
        return WorkerResponse({"met": self.inside})


class PayloadOnly:
    """A worker whose scan takes only the payload (no request)."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload) -> WorkerResponse:
        return WorkerResponse({"size": payload.results.size})
