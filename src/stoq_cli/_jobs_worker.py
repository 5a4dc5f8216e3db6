"""One worker process of ``--jobs N``: builds the engine as the parent did, then scans what the
parent sends until the parent closes the task pipe.

The parent starts it through multiprocessing's fork server (``spawn`` where there is none): it
never inherits the parent's event loop, threads or locks. It starts with SIGINT and SIGTERM
blocked, so a Ctrl-C at the terminal during its start-up leaves no traceback. Once running, it
ignores SIGINT through a Python handler (the parent decides what a Ctrl-C means: ``stoq scan``
kills its workers, ``stoq run`` lets them finish what is in flight); plugins' own child
processes, which do not inherit a handler, still get the terminal's Ctrl-C.

What it says back goes through a plain pipe, one line per message, so the parent reads many per
system call and writes a response to stdout without parsing it::

    INDEX <TAB> TAG <TAB> TEXT <LF>

``TEXT`` is compact JSON (never a raw newline). Tags: ``ready`` (index -1, the engine is built),
``failed`` (index -1, it could not be built: TEXT is the message), ``metrics`` (index -1,
``stoq run`` with metrics: TEXT is the counts of its plugin calls so far, as JSON), ``skip`` (``stoq scan``: the
file could not be read; TEXT is why), ``note`` (``stoq scan``: the file is not to be scanned,
an empty file or a FIFO under a directory; TEXT is why), ``raised`` (``stoq run``: the scan
raised; TEXT says what), ``r`` followed by flags (a response; TEXT is its JSON). ``stoq scan``'s
flags: ``e`` the response holds errors, ``s`` a payload was scanned, ``w`` a worker ran, ``p``
print it (no connector took it). ``stoq run``'s: ``u<N>``, its last N errors are connectors
that failed to save it, then ``e`` if it holds errors.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Optional

from stoq_core import Error, Payload, PayloadMeta, Request, RequestMeta
from stoq_core.helpers import dumps

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from stoq_cli._home import EngineOptions
    from stoq_core import Stoq

__all__ = ["SCAN", "RUN", "SIGNALS", "request_data", "worker_main"]

SCAN = "scan"  #: tasks are batches of files (``stoq scan``)
RUN = "run"  #: tasks are requests the parent's providers queued (``stoq run``)

#: ``stoq run``: how often a worker sends the parent its plugin calls' counts (metrics).
METRICS_EVERY = 1.0

#: Blocked in the parent while a worker is started; the worker unblocks them once it handles them.
SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _ignore(signum: int, frame: Any) -> None:
    """A Python-level "ignore": unlike SIG_IGN, a plugin's child process does not inherit it."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        # A signal handler that runs during a large write can cut it short: write the rest.
        view = view[os.write(fd, view) :]


def _line(index: int, tag: str, text: str) -> bytes:
    return f"{index}\t{tag}\t{text}\n".encode("utf-8", "surrogateescape")


def worker_main(
    options: EngineOptions,
    mode: str,
    tasks: Connection,
    results: Connection,
    slots: Any,
    first: int,
    width: int,
    inherited: tuple[int, ...] = (),
) -> None:
    """The target of each worker process.

    :param mode: ``SCAN`` or ``RUN``.
    :param tasks: where the parent's tasks arrive (pickled); closed by the parent at the end.
    :param results: the write end of this worker's result pipe (lines, see the module).
    :param slots: shared integers: ``slots[first:first + width]`` are this worker's, each holding
        the index of a file or request being scanned (-1: none), so that the parent knows what
        a dead worker was scanning.
    :param width: how many scans run at once (``stoq run``: its concurrency, twice: a slot is
        freed once the scan's answer is written, and the next may start before).
    :param inherited: descriptors of the parent's a forked worker holds copies of: closed first.
    """
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    _let_go_of_helpers()
    # What was registered before this process began (stoq's own handlers, in a worker forked
    # from it) is the parent's to run; plugins' handlers registered from here on run at the end.
    atexit._clear()
    if inherited:  # forked from stoq itself: it holds a copy of the results' descriptor
        from stoq_cli._streams import detach_results

        detach_results()
    signal.signal(signal.SIGINT, _ignore)
    if mode == RUN:
        signal.signal(signal.SIGTERM, _ignore)  # the parent drains on SIGTERM, as ``stoq run`` does
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    out = results.fileno()
    code = 0
    stoq = None
    try:
        stoq = _build(options, mode, out)
        if stoq is not None:
            _write_all(out, _line(-1, "ready", ""))
            if mode == SCAN:
                _serve_files(stoq, options, tasks, out, slots, first)
            else:
                asyncio.run(_serve_requests(stoq, options, tasks, out, slots, first, width))
    except BrokenPipeError:
        code = 1  # the parent has gone: nothing is left to report to
    except BaseException as exc:  # a bug here: the parent reports the exit, this says why
        print(f"stoq: worker process {os.getpid()} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        code = 1
    finally:
        if stoq is not None:
            try:
                stoq.close()  # the result cache's last entries: os._exit below skips exit's
            except Exception:
                pass
        # Plugins' exit handlers (a connector writing out what it buffered), as at a program's
        # end: os._exit below skips them. Errors are printed, as Python prints them at exit.
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        # Skip the interpreter's shutdown: it would wait for any non-daemon thread a plugin left.
        os._exit(code)


def _let_go_of_helpers() -> None:
    """Close this process's copies of the pipes that keep multiprocessing's fork server and
    resource tracker alive.

    Each lives until every holder of its pipe has closed it, and a worker's copy would pass to
    the processes a plugin forks: one outliving the worker would keep both helpers, and the
    stderr they hold, alive after ``stoq`` exits (a caller reading stderr to its end would wait
    for that process). Neither is this process's to use: a plugin that starts processes through
    multiprocessing here gets helpers of its own.
    """
    from multiprocessing import forkserver, resource_tracker

    for owner, name in (
        (forkserver._forkserver, "_forkserver_alive_fd"),
        (resource_tracker._resource_tracker, "_fd"),
    ):
        fd = getattr(owner, name, None)
        if isinstance(fd, int):
            try:
                os.close(fd)
            except OSError:
                pass
            setattr(owner, name, None)


def _build(options: EngineOptions, mode: str, out: int) -> Optional[Stoq]:
    """The engine for ``options``, or None after telling the parent why it could not be built."""
    import dataclasses

    from stoq_cli._home import StoqHome, build_stoq

    if mode == RUN:
        # Providers and source archivers run in the parent only: here each would ingest again.
        options = dataclasses.replace(options, providers=[], source_archivers=[])
        # Metrics are served by the parent alone (N workers cannot share its port): here the
        # plugin calls are counted, and the counts sent to it (``_send_metrics``).
        from stoq_core import _observe

        _observe.serve_metrics = False
    else:
        options = dataclasses.replace(options, metrics_port=0)  # stoq scan serves none
    try:
        return build_stoq(StoqHome.from_environment(), options)
    except Exception as exc:  # the parent reports it, once, as it reports its own failures
        _write_all(out, _line(-1, "failed", dumps(f"{type(exc).__name__}: {exc}", indent=None)))
        return None


def _serve_files(
    stoq: Stoq, options: EngineOptions, tasks: Connection, out: int, slots: Any, slot: int
) -> None:
    """``stoq scan``: scan each batch of files in turn, one response line per file."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                allow_empty, batch = tasks.recv()
            except EOFError:  # the parent is done, or gone
                return
            loop.run_until_complete(
                _scan_files(stoq, options, allow_empty, batch, out, slots, slot)
            )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _scan_files(
    stoq: Stoq,
    options: EngineOptions,
    allow_empty: bool,
    batch: list[tuple[int, str, Optional[str]]],
    out: int,
    slots: Any,
    slot: int,
) -> None:
    from stoq_cli._inputs import Input, Skipped
    from stoq_cli._output import connector_failed
    from stoq_cli._scan import scan_one

    connectors = options.connectors or ()
    for index, path, source_dir in batch:
        slots[slot] = index
        item = Input(path, source_dir)
        try:
            response = await scan_one(stoq, item, options, allow_empty)
        except Skipped as exc:
            reason = f"skipping {item.label}: {exc.reason}"
            tag = "skip" if exc.failed else "note"
            _write_all(out, _line(index, tag, dumps(reason, indent=None)))
        except OSError as exc:
            reason = f"skipping {item.label}: {exc.strerror or exc}"
            _write_all(out, _line(index, "skip", dumps(reason, indent=None)))
        else:
            flags = "r"
            if response.errors:
                flags += "e"
            if response.results:
                flags += "s"
                if any(result.plugins_run.get("workers") for result in response.results):
                    flags += "w"
            if not connectors or connector_failed(response, connectors):
                flags += "p"
            _write_all(out, _line(index, flags, dumps(response.to_dict(), indent=None)))
        slots[slot] = -1


async def _serve_requests(
    stoq: Stoq,
    options: EngineOptions,
    tasks: Connection,
    out: int,
    slots: Any,
    first: int,
    width: int,
) -> None:
    """``stoq run``: scan the requests as they arrive, ``width // 2`` at once."""
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    running: set[asyncio.Task[None]] = set()
    # The parent sends more than this worker scans at once (so that it never waits for the
    # parent between two): the rest wait here, as they would in one process's queue.
    at_once = asyncio.Semaphore(max(1, width // 2))
    answer = _Answers(loop, out, slots, range(first, first + width))

    def readable() -> None:
        try:
            index, data = tasks.recv()
        except EOFError:  # the parent is done, or gone: finish what is in flight
            loop.remove_reader(tasks.fileno())
            finished.set()
            return
        task = loop.create_task(_scan_request(stoq, options, index, data, answer, at_once))
        running.add(task)
        task.add_done_callback(running.discard)

    loop.add_reader(tasks.fileno(), readable)
    metrics = _metrics(stoq)
    sender = None if metrics is None else loop.create_task(_send_metrics(metrics, answer))
    await finished.wait()
    while running:
        await asyncio.gather(*running)
    if sender is not None:
        sender.cancel()
        answer(_line(-1, "metrics", dumps(metrics.counts(), indent=None)), None)  # the last
    answer.flush()


def _metrics(stoq: Stoq) -> Any:
    """The engine's metric counts (``_observe._Metrics``), or None when metrics are off."""
    observer = getattr(stoq, "_observer", None)
    return None if observer is None else observer.metrics


async def _send_metrics(metrics: Any, answer: _Answers) -> None:
    """Send the parent this worker's counts every ``METRICS_EVERY`` seconds they changed."""
    sent = ""
    while True:
        await asyncio.sleep(METRICS_EVERY)
        counts = dumps(metrics.counts(), indent=None)
        if counts != sent:
            answer(_line(-1, "metrics", counts), None)
            sent = counts


class _Answers:
    """``stoq run``'s answers, written to the parent once per turn of the event loop: one
    write and one wake-up of the parent for all the scans that ended in it.

    Each scan holds a shared slot with its request's index from its start until its answer is
    written: a request whose worker dies holding it is reported if it was being scanned (it may
    be what killed the worker), and sent to another worker if not.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, out: int, slots: Any, mine: range) -> None:
        self.loop = loop
        self.out = out
        self.slots = slots
        self.free = list(reversed(mine))
        self.lines: list[bytes] = []
        self.done: list[int] = []  #: slots to free once the lines are written

    def begin(self, index: int) -> Optional[int]:
        """Note that ``index`` is being scanned; the slot it takes (None: none left)."""
        if not self.free:
            return None
        slot = self.free.pop()
        self.slots[slot] = index
        return slot

    def __call__(self, line: bytes, slot: Optional[int]) -> None:
        if not self.lines:
            self.loop.call_soon(self.flush)
        self.lines.append(line)
        if slot is not None:
            self.done.append(slot)

    def flush(self) -> None:
        lines, self.lines = self.lines, []
        if lines:
            _write_all(self.out, b"".join(lines))
        for slot in self.done:
            self.slots[slot] = -1
        self.free.extend(self.done)
        self.done.clear()


async def _scan_request(
    stoq: Stoq,
    options: EngineOptions,
    index: int,
    data: dict[str, Any],
    answer: _Answers,
    at_once: asyncio.Semaphore,
) -> None:

    async with at_once:
        slot = answer.begin(index)
        try:
            # The engine's own step, connectors included: its second value is the connectors
            # that failed to save, which the parent's provider loop needs (QueueItem.on_done).
            response, unsaved = await stoq._scan_and_save(
                _request_from(data), options.start_dispatch
            )
        except Exception as exc:
            text = dumps(f"{type(exc).__name__}: {exc}", indent=None)
            answer(_line(index, "raised", text), slot)
            return
    tag = f"ru{len(unsaved)}{'e' if response.errors else ''}"
    answer(_line(index, tag, dumps(response.to_dict(), indent=None)), slot)


def request_data(request: Request) -> dict[str, Any]:
    """``request`` as plain values to send to a worker (``_request_from`` rebuilds it there)."""
    return {
        "payloads": [
            (
                bytes(payload.content),  # an mmap or memoryview cannot be pickled
                payload.results.payload_meta.to_dict(),
                payload.results.payload_id,
                payload.results.extracted_by,
                payload.results.extracted_from,
            )
            for payload in request.payloads
        ],
        "request_meta": request.request_meta.to_dict(),
        "errors": [
            error.to_dict() if hasattr(error, "to_dict") else error for error in request.errors
        ],
    }


def _request_from(data: dict[str, Any]) -> Request:
    payloads = [
        Payload(content, PayloadMeta(**meta), extracted_by, extracted_from, payload_id)
        for content, meta, payload_id, extracted_by, extracted_from in data["payloads"]
    ]
    errors = [Error(**error) if isinstance(error, dict) else error for error in data["errors"]]
    return Request(payloads, RequestMeta(**data["request_meta"]), errors)
