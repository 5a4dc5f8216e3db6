"""``stoq run``: scan what the providers queue until they finish, or until Ctrl-C.

The first Ctrl-C (or SIGTERM) stops the providers and lets every payload already queued or
being scanned finish, its response saved or printed; a second one aborts at once. Either way the
exit code is 128 + the signal (130 for Ctrl-C), so a script can tell the run did not end on its
own.

The engine has no stop switch or progress callback (see the report), so both live here: each
provider's ``ingest`` runs inside a wrapper that ends when asked to and counts what it queues,
and ``_CliStoq.scan_request`` counts and prints each response.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Optional, TextIO

from stoq_cli._engine import EngineOptions, StoqHome, build_stoq, check_workers
from stoq_cli._errors import EXIT_FAILED, EXIT_OK
from stoq_cli._output import ResponsePrinter
from stoq_core import Request, Stoq, StoqResponse

__all__ = ["run_command"]


class _Counts:
    """What the status line shows."""

    def __init__(self) -> None:
        self.ingested = 0  #: items the providers queued
        self.scanned = 0  #: responses finished
        self.errors = 0  #: responses with errors, plus failed providers
        self.started = time.monotonic()
        self.stopped_by: Optional[int] = None  #: the signal that stopped the run
        self.abandoned_threads = False  #: a plain-def provider still running in a thread
        self.output_closed = False  #: stdout's reader went away

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"ingested {self.ingested} \u00b7 scanned {self.scanned} \u00b7 errors {self.errors}"
            f" \u00b7 {self.scanned / elapsed:.1f}/s"
        )


class _StatusLine:
    """One line of counts on a terminal's stderr, redrawn in place."""

    def __init__(self, counts: _Counts, stream: TextIO, stdout_shares_terminal: bool) -> None:
        self.counts = counts
        self.stream = stream
        self.shared = stdout_shares_terminal

    def draw(self) -> None:
        self.stream.write("\r\x1b[2K" + self.counts.line())
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()

    def print_result(self, text: str) -> None:
        """Print a response line to stdout without tearing the status line."""
        if self.shared:
            self.clear()
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        if self.shared:
            self.draw()

    def note(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.draw()

    async def keep_drawing(self, every: float = 0.25) -> None:
        while True:
            self.draw()
            await asyncio.sleep(every)


class _CountingQueue:
    """The run's queue as a provider sees it: every item put is counted."""

    def __init__(self, queue: asyncio.Queue[Any], counts: _Counts) -> None:
        self._queue = queue
        self._counts = counts

    async def put(self, item: Any) -> None:
        await self._queue.put(item)
        self._counts.ingested += 1

    def put_nowait(self, item: Any) -> None:
        self._queue.put_nowait(item)
        self._counts.ingested += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class _CliStoq(Stoq):
    """The engine, reporting each finished response to the command line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.on_response: Callable[[StoqResponse], None] = lambda response: None
        super().__init__(*args, **kwargs)

    async def scan_request(
        self, request: Request, add_start_dispatch: Optional[Any] = None
    ) -> StoqResponse:
        response = await super().scan_request(request, add_start_dispatch)
        self.on_response(response)
        return response


def _stoppable_providers(stoq: Stoq, stop: asyncio.Event, counts: _Counts) -> None:
    """Wrap every loaded provider's ``ingest`` so that it returns once ``stop`` is set."""
    for plugin in list(stoq.plugins.loaded.values()):
        if "ingest" not in plugin.hooks:
            continue
        function, is_async = plugin.hooks["ingest"], plugin.is_async["ingest"]
        plugin.hooks["ingest"] = _stoppable(function, is_async, stop, counts)
        plugin.is_async["ingest"] = True


def _stoppable(
    function: Callable[..., Any], is_async: bool, stop: asyncio.Event, counts: _Counts
) -> Callable[[asyncio.Queue[Any]], Any]:
    async def ingest(queue: asyncio.Queue[Any]) -> None:
        proxy = _CountingQueue(queue, counts)
        call = function(proxy) if is_async else asyncio.to_thread(function, proxy)
        work = asyncio.ensure_future(call)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            stopping.cancel()
        if not work.done():
            # Cancelling stops a coroutine; a thread runs on and is abandoned at exit.
            counts.abandoned_threads = counts.abandoned_threads or not is_async
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return
        if work.cancelled():
            return
        exc = work.exception()
        if exc is not None:
            counts.errors += 1
            raise exc  # the engine logs it and the other providers go on

    return ingest


def run_command(options: EngineOptions) -> int:
    """Run ``stoq run``; returns the exit code."""
    home = StoqHome.from_environment()
    stoq = build_stoq(home, options, stoq_class=_CliStoq)
    assert isinstance(stoq, _CliStoq)
    check_workers(stoq, options.start_dispatch or (), "-s/--start-dispatch")
    counts = _Counts()
    status: Optional[_StatusLine] = None
    if sys.stderr is not None and sys.stderr.isatty():
        status = _StatusLine(counts, sys.stderr, sys.stdout.isatty())
    printer = ResponsePrinter(
        "json", connectors=options.connectors, write=status.print_result if status else None
    )
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_run(stoq, options, printer, counts, status))
    finally:
        if status is not None:
            status.draw()
            sys.stderr.write("\n")
        _say_how_it_ended(counts, status)
        if counts.abandoned_threads:
            # A provider blocked in a thread cannot be stopped; waiting for it would hang.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + (counts.stopped_by or signal.SIGINT))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    if counts.output_closed:
        raise BrokenPipeError  # reported as for scan: quietly, exit 1
    if counts.stopped_by is not None:
        return 128 + counts.stopped_by
    return EXIT_FAILED if counts.errors else EXIT_OK


def _say_how_it_ended(counts: _Counts, status: Optional[_StatusLine]) -> None:
    if counts.stopped_by is None:
        return
    name = signal.Signals(counts.stopped_by).name
    print(
        f"stoq: stopped by {name}: ingested {counts.ingested}, scanned {counts.scanned}, "
        f"{counts.errors} with errors",
        file=sys.stderr,
        flush=True,
    )


async def _run(
    stoq: _CliStoq,
    options: EngineOptions,
    printer: ResponsePrinter,
    counts: _Counts,
    status: Optional[_StatusLine],
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()

    def on_response(response: StoqResponse) -> None:
        counts.scanned += 1
        if response.errors:
            counts.errors += 1
        if counts.output_closed:
            return
        try:
            printer.emit(response)
        except BrokenPipeError:
            # The reader is gone (stoq run | head): scanning on would print to no one.
            counts.output_closed = True
            if main is not None:
                main.cancel()

    stoq.on_response = on_response

    def on_signal(signum: int) -> None:
        if stop.is_set():
            if main is not None:
                main.cancel()  # the second Ctrl-C: abort what is in flight
            return
        stop.set()
        counts.stopped_by = signum
        message = (
            "stoq: stopping: no new payloads; finishing those queued or in flight "
            "(Ctrl-C again to abort)"
        )
        if status is not None:
            status.note(message)
        else:
            print(message, file=sys.stderr, flush=True)

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    _stoppable_providers(stoq, stop, counts)
    drawing = asyncio.ensure_future(status.keep_drawing()) if status is not None else None
    try:
        await stoq.run(
            request_meta=options.request_meta(), add_start_dispatch=options.start_dispatch
        )
    except asyncio.CancelledError:
        if counts.output_closed:
            return
        if not stop.is_set():
            raise
        print("stoq: aborted", file=sys.stderr, flush=True)
    finally:
        if drawing is not None:
            drawing.cancel()
        for signum in handled:
            loop.remove_signal_handler(signum)
