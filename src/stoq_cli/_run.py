"""``stoq run``: scan what the providers queue until they finish, or until Ctrl-C.

The first Ctrl-C (or SIGTERM) stops the providers and lets every payload already queued or
being scanned finish, its response saved or printed; a second one aborts at once. Either way the
exit code is 128 + the signal (130 for Ctrl-C), so a script can tell the run did not end on its
own.

The engine's ``run`` does the work: its ``stop`` event ends the providers, its ``stats`` are the
status line's counts, and ``on_response`` prints each response once the connectors have it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Optional, TextIO

from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError, OutputError
from stoq_cli._home import EngineOptions, StoqHome, build_stoq, check_workers, config_path
from stoq_cli._output import ResponsePrinter
from stoq_cli._streams import check_destination, results_stream
from stoq_core import RunStats, Stoq, StoqResponse

if TYPE_CHECKING:
    from stoq_cli._jobs import RequestPool

__all__ = ["require_providers", "run_command"]


class _Counts:
    """What the status line shows: the engine's counters and how the run ended."""

    def __init__(self) -> None:
        self.stats = RunStats()
        self.started = time.monotonic()
        self.stopped_by: Optional[int] = None  #: the signal that stopped the run
        self.output_closed = False  #: stdout's reader went away
        self.output_failed: Optional[OutputError] = None  #: stdout failed otherwise

    @property
    def errors(self) -> int:
        """Responses with errors, failed providers and queued items that could not be scanned."""
        return self.stats.with_errors + self.stats.failed

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"ingested {self.stats.ingested} \u00b7 scanned {self.stats.scanned} \u00b7 "
            f"errors {self.errors} \u00b7 {self.stats.scanned / elapsed:.1f}/s"
        )


class _StatusLine:
    """One line of counts on a terminal's stderr, redrawn in place."""

    def __init__(self, counts: _Counts, stream: TextIO, results: TextIO) -> None:
        self.counts = counts
        self.stream = stream
        self.results = results
        self.shared = results.isatty()

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
        self.results.write(text + "\n")
        self.results.flush()
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


def run_command(options: EngineOptions, jobs: int = 1) -> int:
    """Run ``stoq run``; returns the exit code.

    :param jobs: worker processes that scan what the providers (here) queue (``_jobs``); 1:
        this process scans.
    """
    with results_stream() as out:
        return _run_command(options, out, jobs)


def _run_command(options: EngineOptions, out: TextIO, jobs: int = 1) -> int:
    check_destination(out, options.connectors)
    home = StoqHome.from_environment()
    pooled: Optional[type[Stoq]] = None
    if jobs > 1:
        from stoq_cli._jobs import PooledStoq

        pooled = PooledStoq
    stoq = build_stoq(home, options, engine=pooled)
    check_workers(stoq, options.start_dispatch or (), "-s/--start-dispatch")
    require_providers(home, options)
    counts = _Counts()
    status: Optional[_StatusLine] = None
    if sys.stderr is not None and sys.stderr.isatty():
        status = _StatusLine(counts, sys.stderr, out)
    printer = ResponsePrinter(
        "json",
        connectors=options.connectors,
        write=status.print_result if status else None,
        stream=out,
    )
    loop = asyncio.new_event_loop()
    pool: Optional[RequestPool] = None
    try:
        if jobs > 1:
            from stoq_cli._jobs import PooledStoq, RequestPool

            assert isinstance(stoq, PooledStoq)
            pool = RequestPool(stoq, options, jobs)
            loop.run_until_complete(pool.start())
        loop.run_until_complete(_run(stoq, options, printer, counts, status))
    except BaseException:
        if pool is not None:
            pool.abort()  # a Ctrl-C while they start, a failure: nothing to wait for
        raise
    finally:
        if pool is not None:
            pool.finish()
        if status is not None:
            status.draw()
            sys.stderr.write("\n")
        _say_how_it_ended(counts, status)
        # A plain-def provider abandoned at the stop runs in a daemon thread: nothing waits for it.
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    if counts.output_closed:
        raise BrokenPipeError  # reported as for scan: quietly, exit 1
    if counts.output_failed is not None:
        raise counts.output_failed
    if counts.stopped_by is not None:
        return 128 + counts.stopped_by
    return EXIT_FAILED if counts.errors else EXIT_OK


def require_providers(home: StoqHome, options: EngineOptions) -> None:
    """Refuse a run that names no provider, in the command line's words (the engine's own
    message speaks Python: ``providers=[...]``).

    :raises CliError: neither -P nor stoq.cfg's ``[core] providers`` names one.
    """
    if options.providers or _configured_providers(config_path(home, options.config_file)):
        return
    raise CliError(
        "no provider plugins are loaded: name one with -P NAME, or with 'providers = NAME' in "
        "the [core] section of stoq.cfg ('stoq list' shows the plugins with the ingest hook)"
    )


def _configured_providers(path: str) -> list[str]:
    """``[core] providers`` of the stoq.cfg at ``path`` (build_stoq has read it without error)."""
    from stoq_core import StoqException
    from stoq_core.config import read_stoq_cfg

    try:  # read as the engine reads it: inline comments, ``%%``
        value = read_stoq_cfg(path).get("core", {}).get("providers", "")
    except StoqException:
        return []
    return [name for name in (part.strip() for part in value.split(",")) if name]


def _say_how_it_ended(counts: _Counts, status: Optional[_StatusLine]) -> None:
    if counts.stopped_by is None:
        return
    name = signal.Signals(counts.stopped_by).name
    print(
        f"stoq: stopped by {name}: ingested {counts.stats.ingested}, "
        f"scanned {counts.stats.scanned}, "
        f"{counts.errors} with errors",
        file=sys.stderr,
        flush=True,
    )


async def _run(
    stoq: Stoq,
    options: EngineOptions,
    printer: ResponsePrinter,
    counts: _Counts,
    status: Optional[_StatusLine],
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()

    def on_response(response: StoqResponse) -> None:
        if counts.output_closed or counts.output_failed is not None:
            return
        try:
            printer.emit(response)
        except BrokenPipeError:
            # The reader is gone (stoq run | head): scanning on would print to no one.
            counts.output_closed = True
        except OutputError as exc:
            counts.output_failed = exc  # a full disk: results scanned on would be lost too
        else:
            if options.timings:
                _print_timings(stoq, response, status)
            return
        if main is not None:
            main.cancel()

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

    drawing = asyncio.ensure_future(status.keep_drawing()) if status is not None else None
    try:
        with _Signals(loop, on_signal):
            await stoq.run(
                request_meta=options.request_meta(),
                add_start_dispatch=options.start_dispatch,
                stop=stop,
                on_response=on_response,
                stats=counts.stats,
            )
    except asyncio.CancelledError:
        if counts.output_closed or counts.output_failed is not None:
            return
        if not stop.is_set():
            raise
        print("stoq: aborted", file=sys.stderr, flush=True)
    finally:
        if drawing is not None:
            drawing.cancel()


def _print_timings(stoq: Stoq, response: StoqResponse, status: Optional[_StatusLine]) -> None:
    """``--timings``: the table ``stoq scan`` prints, on stderr, for a response just printed."""
    from stoq_cli._scan import timings_lines

    if sys.stderr is None:
        return
    lines = timings_lines(_label(response), response, stoq.plugin_timings(response))
    if status is not None:
        status.note("\n".join(lines))  # above the status line, which is drawn again below
    else:
        print("\n".join(lines), file=sys.stderr, flush=True)


def _label(response: StoqResponse) -> str:
    """What a response is about, for a person: its queued payload's file name if a provider
    gave one (``-P filedir`` does), else the payload's id."""
    if not response.results:  # a provider may queue a Request holding no payload
        return f"scan {response.scan_id}"
    root = response.results[0]
    filename = root.payload_meta.extra_data.get("filename")
    return filename if isinstance(filename, str) and filename else root.payload_id


class _Signals:
    """Delivers SIGINT and SIGTERM to ``handler`` on the event loop, without ever losing one.

    ``loop.add_signal_handler`` learns of a signal only from the byte the interpreter writes to
    the loop's self-pipe, the pipe ``call_soon_threadsafe`` writes to as well. While the loop
    waited on a slow stdout reader, watchdog's thread (``-P filedir`` in watch mode) filled that
    pipe, the signal's byte was dropped ("Exception ignored when trying to write to the signal
    wakeup fd") and the Ctrl-C with it. Here a Python-level handler, which the interpreter runs
    whatever the pipe holds, hands the signal to the loop; the wakeup fd, which wakes the loop
    when another thread took the signal, is a socket only signals write to.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]) -> None:
        self.loop = loop
        self.handler = handler
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._sockets: Optional[tuple[socket.socket, socket.socket]] = None

    def __enter__(self) -> _Signals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may handle signals
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._sockets = (reader, writer)
        self.loop.add_reader(reader.fileno(), self._drain)
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, self._caught) for signum in self.SIGNALS}
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._sockets is None:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_fd)
        reader, writer = self._sockets
        self.loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()
        self._sockets = None

    def _caught(self, signum: int, frame: Optional[FrameType]) -> None:
        # Runs in the main thread between two bytecodes, even while it waits on a write.
        try:
            self.loop.call_soon_threadsafe(self.handler, signum)
        except RuntimeError:  # the loop has closed: the run is over anyway
            pass

    def _drain(self) -> None:
        assert self._sockets is not None
        try:
            while self._sockets[0].recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
