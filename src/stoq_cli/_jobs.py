"""``--jobs N``: every core of one machine, without Redis: N worker processes scan, this one
coordinates.

- ``stoq scan DIR --jobs N``: this process walks the inputs as the workers go and hands them
  batches of file paths; each worker reads, scans and sends back one line per file, the
  response's JSON as text, which is written to stdout as it is (a summary or ``jsonl`` rebuilds
  the response first).
- ``stoq run --jobs N``: this process runs the providers and the source archivers, so each
  payload is ingested once whatever the provider; the engine's scan of each request
  (``PooledStoq._scan_and_save``: rounds, archivers, decorators, connectors) runs in a worker.

Every worker builds its engine from the same parsed options, stoq.cfg and ``$STOQ_HOME``. A
worker is forked from this process while that is safe: before any engine, loop or thread exists
here (``stoq scan``, which starts its workers first), so it starts in milliseconds with the
modules already imported. Otherwise (``stoq run``, whose pool starts in a running loop) it comes
from multiprocessing's fork server (``spawn`` where there is none): a fork then would copy a
running event loop, the engine's threads and whatever lock one of them held into a child that
can never release it. The fork server is a fresh interpreter with no thread or loop; it imports
the engine once, so each worker forked from it starts in about the time its plugins take to
load.

A worker that dies is reported: the file (``scan``) or the requests (``run``) it was scanning get
a response holding an Error that says so, the rest of its work goes to the others, and a new
worker takes its place. Its end is seen from its process (a pidfd), not only from its pipes,
which a child process of a plugin may hold open. A worker that writes into its result pipe
what is not one of its lines (a plugin writing to a descriptor not its own) is stopped and
dealt with as dead. On Ctrl-C, ``scan`` kills its workers and exits 130; ``run`` drains as it
does in one process (the workers finish what is in flight), and a second Ctrl-C kills them.

Nothing this process sends can block it: task bytes a ``scan`` worker holds unread stay under
a pipe's size, and ``run`` writes its requests without blocking, from the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import pickle
import selectors
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

from stoq_cli._errors import EXIT_FAILED, CliError, OutputError
from stoq_cli._jobs_worker import RUN, SCAN, SIGNALS, request_data, worker_main

# The engine's classes are imported here, once: response_from_dict runs for every response of
# ``stoq run --jobs``, and an import statement in a function costs a lookup each time.
from stoq_core import Error, PayloadMeta, PayloadResults, Request, RequestMeta, Stoq, StoqResponse

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
    from multiprocessing.process import BaseProcess

    from stoq_cli._home import EngineOptions
    from stoq_cli._inputs import Input
    from stoq_cli._output import ResponsePrinter
    from stoq_cli._scan import Tally

__all__ = ["FileScan", "PooledStoq", "RequestPool", "response_from_dict"]

_READ_SIZE = 1 << 16
_BATCH = 64  #: most files sent to a worker in one message
_FIRST_BATCH = 4  #: a worker's first batch; each next one is 4 times larger, up to _BATCH
_PREFILL = 8  #: batches each worker is given at once while this process loads its own engine
_QUEUED = 4  #: batches each worker holds afterwards, so that none waits for this process
#: Task bytes a worker may hold unread, and a batch's: with the batch's last file (a path and
#: its directory, each at most 4,095 bytes, 3 bytes each as pickle writes an undecodable one)
#: the sum stays under a pipe's smallest size (64 KiB), so a send never blocks this process.
#: A blocking send could deadlock with a worker blocked writing a large response to the result
#: pipe this process would then not be reading.
_TASK_ROOM = 24 << 10
_BATCH_BYTES = 12 << 10
_GATHER = 0.002  #: seconds ``stoq scan`` lets its workers' lines gather between two reads
#: What the fork server imports for every worker (``stoq_cli.main``: multiprocessing runs the
#: ``stoq`` script again in each worker, which imports it).
_PRELOAD = ("stoq_cli.main", "stoq_cli._jobs_worker", "stoq_cli._scan", "stoq_core.engine")
_PIPE_SIZE = 1 << 20  #: a result pipe's size: 1 MiB holds about 700 small responses
#: Seconds a worker told to finish has to exit before it is killed: longer than the result
#: cache's last write may wait for another process's (``_cache_local.CLOSE_TIMEOUT``), with
#: the plugins' exit handlers after it.
_END_WAIT = 10.0
#: ``stoq run``: requests a worker holds for each it scans at once (``provider_consumers``)
_PIPELINE = 8
#: ``stoq run``: request bytes a worker may hold beyond those it scans at once: large payloads
#: are not queued by the dozen in two processes' memory
_HELD_BYTES = 64 << 20


def _how(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _Worker:
    """One worker process, and what this process knows of it."""

    def __init__(
        self, process: BaseProcess, tasks: Connection, results: Connection, slot: int
    ) -> None:
        self.process = process
        self.tasks = tasks
        self.results = results
        self.fd = results.fileno()
        self.slot = slot
        self.ready = False
        self._ended_fd: Optional[int] = None
        self._pidfd = False
        #: it wrote something that is not a line of ours (a plugin writing to a descriptor
        #: that is not its own): it is stopped, and what it held is dealt with as for a death
        self.garbled = False
        #: ``stoq scan``: the file it had not answered when its output went wrong (answers
        #: come in order: the one being scanned when the plugin wrote there)
        self.culprit = -1
        #: ``stoq run``: what it answered after its output went wrong (it scans several at
        #: once: the one whose plugin wrote there is among these, or still being scanned)
        self.after_garbled: set[int] = set()
        self.partial = b""  #: the start of a line not yet read whole
        #: ``stoq scan``: indices sent and not yet answered, in the order sent
        self.files: collections.deque[int] = collections.deque()
        #: ``stoq scan``: the batches not yet answered whole: (last index, bytes sent)
        self.batches: collections.deque[tuple[int, int]] = collections.deque()
        self.queued = 0  #: the bytes of those batches (``stoq run``: of the requests it holds)
        self.next_size = _FIRST_BATCH
        #: ``stoq run``: requests sent and not yet answered
        self.busy = 0
        #: ``stoq run``: task bytes not yet written (the pipe was full)
        self.outbox = bytearray()
        #: ``stoq run`` with metrics: the counts of its plugin calls it sent last
        self.counts: Optional[dict[str, Any]] = None

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def lines(self, data: bytes, expected: Callable[[int], bool]) -> list[tuple[int, bytes, bytes]]:
        """The whole lines in ``data`` (and what came before it), as (index, tag, text).

        Bytes, never decoded here: a response printed as the worker wrote it is never parsed,
        nor decoded and encoded again. A line that is not one of ours, or answers an index
        ``expected`` does not know, sets ``garbled``: the lines before it are returned, those
        after it never are (only their indices are noted, in ``after_garbled``).
        """
        chunk = self.partial + data if self.partial else data
        end = chunk.rfind(b"\n") + 1
        self.partial = chunk[end:]
        found = []
        # Split on LF only: JSON leaves no raw LF inside its text.
        for line in chunk[: end - 1].split(b"\n") if end else ():
            try:
                head, tag, text = line.split(b"\t", 2)
                index = int(head)
            except ValueError:
                index = -2
            if self.garbled:
                if index >= 0:
                    self.after_garbled.add(index)
            elif index < -1 or (index >= 0 and not expected(index)):
                self.garbled = True
            else:
                found.append((index, tag, text))
        return found

    def holds(self, index: int) -> bool:
        """``stoq scan``: ``index`` was sent to it and not yet answered."""
        files = self.files
        return bool(files) and (files[0] == index or index in files)

    def stop_garbled(self) -> None:
        """It wrote what is not a line of ours: stop it; the end of its result pipe follows."""
        if self.process.is_alive():
            self.process.kill()

    @property
    def ended_fd(self) -> int:
        """A descriptor that becomes readable when the process ends: a pidfd where there are
        (Linux 5.3+), else multiprocessing's sentinel. Not the result pipe's end, nor the
        sentinel, where a pidfd exists: both are pipes, which a child process of a plugin
        inherits and may hold open long after the worker died."""
        if self._ended_fd is None:
            self._ended_fd = self.process.sentinel
            if hasattr(os, "pidfd_open") and self.process.pid:
                try:
                    self._ended_fd = os.pidfd_open(self.process.pid)
                    self._pidfd = True
                except OSError:  # an older kernel, or seccomp: the sentinel, then
                    pass
        return self._ended_fd

    def end(self) -> Optional[int]:
        """Wait for the process to be gone (its result pipe is closed); its exit code."""
        self.process.join(_END_WAIT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.tasks.close()
        self.results.close()
        if self._pidfd and self._ended_fd is not None:
            os.close(self._ended_fd)
            self._ended_fd = None
        return self.process.exitcode


class _Pool:
    """The worker processes, each in a slot; a dead one's slot is reused by its replacement.

    :param width: how many scans a worker runs at once; each has a shared integer (``slots``)
        saying which file or request it is scanning, so that the parent knows what a dead worker
        was scanning (and what it only held, which goes to another).
    """

    def __init__(self, options: EngineOptions, mode: str, jobs: int, width: int = 1) -> None:
        import multiprocessing

        self.options = options
        self.mode = mode
        self.width = width
        self.context: ForkServerContext | SpawnContext
        if "forkserver" in multiprocessing.get_all_start_methods():
            server = multiprocessing.get_context("forkserver")
            # Imported once, in the server: each worker forked from it starts with them.
            server.set_forkserver_preload(list(_PRELOAD))
            self.context = server
        else:
            self.context = multiprocessing.get_context("spawn")
        self.fork: Optional[ForkContext] = None
        if "fork" in multiprocessing.get_all_start_methods():
            self.fork = multiprocessing.get_context("fork")
        self.slots = self.context.RawArray("q", [-1] * (jobs * width))
        self.workers: list[Optional[_Worker]] = [None] * jobs

    def scanning(self, worker: _Worker) -> set[int]:
        """What ``worker`` is scanning (was, if it died): files' or requests' indices."""
        first = worker.slot * self.width
        return {self.slots[i] for i in range(first, first + self.width)} - {-1}

    def start(self, slot: int) -> _Worker:
        """Start a worker in ``slot``."""
        for i in range(slot * self.width, (slot + 1) * self.width):
            self.slots[i] = -1
        tasks_out, tasks_in = self.context.Pipe(duplex=False)
        results_out, results_in = self.context.Pipe(duplex=False)
        inherited: tuple[int, ...] = ()
        # Forked from here while that is safe (see _safe_to_fork): it starts in milliseconds,
        # where the fork server first starts an interpreter and imports the engine (about 0.2 s
        # of a 1 s scan of 10,000 small files). A replacement may come later, once this process
        # has threads (a progress bar's, a plugin's): then from the fork server.
        context: ForkContext | ForkServerContext | SpawnContext = self.context
        if self.fork is not None and _safe_to_fork():
            context = self.fork
            # A forked worker gets every descriptor this process holds: it must close the ends
            # that are this process's, its own and the other workers', or a worker's death
            # would never end its result pipe.
            inherited = (
                tasks_in.fileno(),
                results_out.fileno(),
                *(fd for w in self.live() for fd in (w.tasks.fileno(), w.results.fileno())),
            )
        args = (self.options, self.mode, tasks_out, results_in, self.slots, slot * self.width)
        process = context.Process(
            target=worker_main, args=(*args, self.width, inherited), name=f"stoq-job-{slot}"
        )
        # Blocked here, the signals stay blocked in the new interpreter until it handles them:
        # a Ctrl-C during its start-up would print a traceback from it. Here they wait, not lost.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        # Only the worker holds these ends now: its death is the end of its result pipe.
        tasks_out.close()
        results_in.close()
        _enlarge(results_out.fileno())
        worker = self.workers[slot] = _Worker(process, tasks_in, results_out, slot)
        return worker

    def live(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker is not None]

    def close(self) -> None:
        """No more work: each worker finishes what it holds and exits."""
        for worker in self.live():
            worker.tasks.close()
        self._end_all()

    def abort(self) -> None:
        """Kill every worker (Ctrl-C, or this process is failing) and wait for each."""
        for worker in self.live():
            if worker.process.is_alive():
                worker.process.kill()
        self._end_all()

    def _end_all(self) -> None:
        for worker in self.live():
            worker.end()
        self.workers = [None] * len(self.workers)


def _safe_to_fork() -> bool:
    """Whether this process can be forked safely: one thread (no lock another thread may hold
    is copied into the child) and no event loop running (its state would be the child's)."""
    import threading

    return threading.active_count() == 1 and asyncio._get_running_loop() is None


def _enlarge(fd: int) -> None:
    """Give a result pipe room for ``_GATHER`` seconds of lines and more (Linux only)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, AttributeError, OSError):  # another system, or over the user's quota
        pass


def _started(worker: _Worker, tag: bytes, text: bytes) -> None:
    """Note a worker's first line: ``ready``, or ``failed`` with why."""
    if tag == b"failed":
        raise CliError(f"a worker process could not start: {json.loads(text)}", EXIT_FAILED)
    worker.ready = True


def _drain(fd: int) -> Iterator[bytes]:
    """What a pipe holds now, without waiting for more (its writer has ended, but a child of
    a plugin may hold it open)."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            return
        yield data


def _how_worker_ended(worker: _Worker, exitcode: Optional[int]) -> str:
    if worker.garbled:
        return (
            f"worker process {worker.pid} wrote output that is not stoq's (a plugin writing to "
            "a descriptor not its own?) and was stopped"
        )
    return f"worker process {worker.pid} {_how(exitcode)}"


def _never_started(worker: _Worker, exitcode: Optional[int]) -> CliError:
    return CliError(
        f"a worker process (pid {worker.pid}) {_how(exitcode)} before it was ready",
        EXIT_FAILED,
    )


# -- stoq scan ---------------------------------------------------------------------------------


class FileScan:
    """The parent of ``stoq scan --jobs N``: walks the inputs as the workers need files, sends
    them in batches, reads back their responses.

    The workers are started by ``__init__``, so that they start while this process loads its own
    engine (which checks the options and plugins once, and builds the response of a file whose
    worker died).
    """

    def __init__(self, options: EngineOptions, jobs: int, allow_empty: bool = False) -> None:
        self.options = options
        self.allow_empty = allow_empty
        self.pool = _Pool(options, SCAN, jobs)
        for slot in range(jobs):
            self.pool.start(slot)
        self.walk: Iterator[Input] = iter(())
        self.walked = False  #: the walk has given its last file
        self.found = 0  #: files taken from the walk; the next one's index
        #: the files sent and not yet answered (and those a dead worker held), by index: what
        #: this process holds is what is in flight, not the whole tree
        self.items: dict[int, Input] = {}
        #: files to send before the walk's next: those a dead worker held
        self.pending: collections.deque[int] = collections.deque()

    def abort(self) -> None:
        """Kill the workers (Ctrl-C, or the command failed)."""
        self.pool.abort()

    def share(self, items: Iterable[Input]) -> None:
        """Take the files to scan from ``items`` as the workers need them, and send each worker
        its first batches at once: they scan while this process gets ready."""
        self.walk = iter(items)
        self._feed(_PREFILL)

    def _take(self, size: int) -> list[int]:
        """Up to ``size`` files to send next (fewer past _BATCH_BYTES), as indices."""
        batch: list[int] = []
        cost = 0
        directory: Optional[str] = None
        while len(batch) < size and cost < _BATCH_BYTES:
            if self.pending:
                index = self.pending.popleft()
            elif self.walked:
                break
            else:
                item = next(self.walk, None)
                if item is None:
                    self.walked = True
                    break
                index = self.found
                self.found += 1
                self.items[index] = item
            batch.append(index)
            # What pickle writes for it (UTF-8, an undecodable byte as a 3-byte surrogate) and
            # a tuple's framing; a directory's files share one source_dir object, which pickle
            # writes once.
            item = self.items[index]
            cost += len((item.path or "").encode("utf-8", "surrogatepass")) + 24
            if item.source_dir is not directory and item.source_dir is not None:
                directory = item.source_dir
                cost += len(directory.encode("utf-8", "surrogatepass")) + 8
        return batch

    def _feed(self, depth: int = _QUEUED) -> None:
        """Send each worker batches until it holds ``depth`` of them, in turns, so that a few
        files are shared out, not all given to the first worker."""
        items = self.items
        while True:
            sent = False
            for worker in self.pool.live():
                if len(worker.batches) >= depth or worker.queued >= _TASK_ROOM:
                    continue
                batch = self._take(worker.next_size)
                if not batch:
                    return
                tasks = [(i, items[i].path, items[i].source_dir) for i in batch]
                message = pickle.dumps((self.allow_empty, tasks), pickle.HIGHEST_PROTOCOL)
                worker.next_size = min(_BATCH, worker.next_size * 4)
                worker.files.extend(batch)
                worker.batches.append((batch[-1], len(message) + 4))
                worker.queued += len(message) + 4
                try:
                    worker.tasks.send_bytes(message)
                except OSError:
                    continue  # it died: the end of its result pipe says so
                sent = True
            if not sent:
                return

    def scan(
        self,
        stoq: Stoq,
        printer: ResponsePrinter,
        tally: Tally,
        warn: Callable[[str], None],
        advance: Callable[[str], None],
    ) -> None:
        """Scan what ``share`` gave, print each response and add it to ``tally``.

        :param stoq: this process's engine, for the response of a file whose worker died.
        """
        items = self.items
        direct = printer.fmt == "json" and not printer.indent
        lost: list[tuple[int, str]] = []  # files whose worker died, and how

        def take(lines: list[tuple[int, bytes, bytes]]) -> None:
            printed = []
            for index, tag, text in lines:
                label = items.pop(index).label
                if tag == b"skip" or tag == b"note":
                    warn(json.loads(text))
                    tally.failed = tally.failed or tag == b"skip"
                else:
                    tally.answered = True
                    tally.failed = tally.failed or b"e" in tag
                    tally.scanned = tally.scanned or b"s" in tag
                    tally.worked = tally.worked or b"w" in tag
                    if not direct:
                        printer.emit(response_from_dict(json.loads(text)), label)
                    elif b"p" in tag:  # the JSON the worker wrote is the line to print
                        printed.append(text)
                advance(label)
            if printed:
                _write(printer, b"\n".join(printed))  # one write for many, not one each

        self._exchange(take, lost, warn)
        if lost:
            asyncio.run(self._report_lost(stoq, lost, printer, tally, advance))
        self.pool.close()

    def _exchange(
        self,
        take: Callable[[list[tuple[int, bytes, bytes]]], None],
        lost: list[tuple[int, str]],
        warn: Callable[[str], None],
    ) -> None:
        pool = self.pool
        selector = selectors.DefaultSelector()

        def watch(worker: _Worker) -> None:
            # Its result pipe, and its process: a plugin's child process may hold the pipe
            # open after the worker died, and its end would then never come.
            selector.register(worker.fd, selectors.EVENT_READ, (worker, False))
            selector.register(worker.ended_fd, selectors.EVENT_READ, (worker, True))

        def read(worker: _Worker, data: bytes) -> None:
            answers = []
            for index, tag, text in worker.lines(data, worker.holds):
                if index < 0:
                    _started(worker, tag, text)
                else:
                    _forget(worker, index)
                    answers.append((index, tag, text))
            take(answers)
            if worker.garbled and worker.process.is_alive():
                worker.culprit = worker.files[0] if worker.files else -1
                worker.stop_garbled()

        for worker in pool.live():
            watch(worker)
        try:
            while True:
                self._feed()
                if (
                    self.walked
                    and not self.pending
                    and not any(worker.files for worker in pool.live())
                ):
                    return
                for key, _ in selector.select():
                    worker, ended = key.data
                    if pool.workers[worker.slot] is not worker:
                        continue  # both of its descriptors were ready: dealt with already
                    if not ended:
                        data = os.read(worker.fd, _READ_SIZE)
                        if data:
                            read(worker, data)
                            continue
                    else:
                        for data in _drain(worker.fd):  # what it wrote before it ended
                            read(worker, data)
                    selector.unregister(worker.fd)
                    selector.unregister(worker.ended_fd)
                    new = self._died(worker, lost, warn)
                    if new is not None:
                        watch(new)
                # Let the workers' lines gather: a worker that writes to a pipe this process
                # waits on wakes it, and on two busy cores a wake-up per file cost the workers
                # more time than their scans (4.0 s instead of 1.9 s for 10,000 small files).
                time.sleep(_GATHER)
        finally:
            selector.close()

    def _died(
        self, worker: _Worker, lost: list[tuple[int, str]], warn: Callable[[str], None]
    ) -> Optional[_Worker]:
        """A worker's result pipe ended before its work: note the file it held, share the rest."""
        pool = self.pool
        held = worker.culprit if worker.garbled else next(iter(pool.scanning(worker)), -1)
        exitcode = worker.end()
        pool.workers[worker.slot] = None
        if not worker.ready:
            raise _never_started(worker, exitcode)
        how = _how_worker_ended(worker, exitcode)
        if held in worker.files:
            worker.files.remove(held)
            lost.append((held, how))
            warn(f"{how} while scanning {self.items[held].label}: reported as not scanned")
        else:
            warn(f"{how} between two files")
        self.pending.extendleft(reversed(worker.files))
        return pool.start(worker.slot) if self.pending or not self.walked else None

    async def _report_lost(
        self,
        stoq: Stoq,
        lost: list[tuple[int, str]],
        printer: ResponsePrinter,
        tally: Tally,
        advance: Callable[[str], None],
    ) -> None:
        """Each file a dead worker held: a response holding an Error that says so.

        Made by this process's engine, as one for a file over max_payload_size, so that
        decorators and connectors see it like any other.
        """

        for index, how in lost:
            label = self.items[index].label
            error = Error(f"{label} was not scanned: the {how} while scanning it")
            request = Request([], self.options.request_meta(), errors=[error])
            printer.emit(await stoq.scan_request(request), label)
            tally.failed = True
            advance(label)


#: The answer to a request a dead worker held but had not begun: send it to another.
_AGAIN = ("again", b"")


def _busy(worker: _Worker) -> int:
    return worker.busy


def _forget(worker: _Worker, index: int) -> None:
    """``index`` is answered: it and, once it is whole, its batch are no longer the worker's."""
    files = worker.files
    if files and files[0] == index:  # a worker answers in the order it was sent
        files.popleft()
    else:
        files.remove(index)
    batches = worker.batches
    if batches and batches[0][0] == index:
        worker.queued -= batches.popleft()[1]
    if not files:  # nothing is held (whatever the order was): nothing is queued
        batches.clear()
        worker.queued = 0


def _write(printer: ResponsePrinter, text: bytes) -> None:
    """Print a worker's JSON lines as ``ResponsePrinter.emit`` prints a response."""
    try:
        printer.write_bytes(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from exc


# -- stoq run ----------------------------------------------------------------------------------


class WorkerProcessError(Exception):
    """A scan raised in a worker process; the message is its type and text."""


class PooledStoq(Stoq):
    """The engine of ``stoq run --jobs N`` in the parent: the providers and source archivers run
    here, and each request's scan runs in a worker process (``RequestPool``)."""

    pool: Optional[RequestPool] = None

    async def _scan_and_save(
        self, request: Request, add_start_dispatch: Optional[Sequence[str]]
    ) -> tuple[StoqResponse, list[Error]]:
        # The one step of ``Stoq.run`` that scans: its provider loop, counters, on_response
        # and QueueItem.on_done stay as they are, here.
        if self.pool is None:
            return await super()._scan_and_save(request, add_start_dispatch)
        return await self.pool.scan(request)

    async def scan_here(self, request: Request) -> tuple[StoqResponse, list[Error]]:
        """Scan ``request`` in this process (the response of work a dead worker held)."""
        return await super()._scan_and_save(request, None)

    def add_metric_counts(self, counts: dict[str, Any], before: Optional[dict[str, Any]]) -> None:
        """Add a worker's plugin-call counts (its metrics) to those this process serves, less
        what of them was added already."""
        metrics = None if self._observer is None else self._observer.metrics
        if metrics is not None:
            metrics.add(counts, before)


class RequestPool:
    """The workers of ``stoq run --jobs N``: each scans up to ``provider_consumers`` requests at
    once, as one ``stoq run`` does, and holds up to ``_PIPELINE`` times that many, so that it
    never waits for this process between two (a round trip through two pipes and two event
    loops costs more than a small payload's scan). The engine's provider loop here runs as many
    consumers as all the workers hold.

    :param engine: the parent's engine, whose ``_scan_and_save`` sends requests here.
    """

    def __init__(self, engine: PooledStoq, options: EngineOptions, jobs: int) -> None:
        self.engine = engine
        # Twice as many slots as scans at once: a scan's slot is freed once its answer is
        # written, and the next scan may start before that.
        self.pool = _Pool(options, RUN, jobs, width=2 * engine.provider_consumers)
        #: requests sent and not yet answered: their worker, the bytes sent, their answer
        self.waiting: dict[int, tuple[_Worker, int, asyncio.Future[tuple[str, bytes]]]] = {}
        self.next_index = 0
        self.closing = False
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.started: Optional[asyncio.Future[None]] = None
        self.concurrency = engine.provider_consumers  #: scans at once in each worker
        self.answered = asyncio.Event()  #: set when an answer frees room in a worker
        engine.provider_consumers *= jobs * _PIPELINE
        engine.pool = self

    async def start(self) -> None:
        """Start the workers and wait until each has built its engine.

        :raises CliError: one could not.
        """
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.create_future()
        for slot in range(len(self.pool.workers)):
            self._start(slot)
        await self.started

    def _start(self, slot: int) -> None:
        assert self.loop is not None
        worker = self.pool.start(slot)
        # Written without blocking (``_send``): a full task pipe must never stall the loop that
        # reads the workers' results and runs the providers.
        os.set_blocking(worker.tasks.fileno(), False)
        self.loop.add_reader(worker.fd, self._readable, worker)
        # Its process too: a plugin's child process may hold the result pipe open after the
        # worker died, and its end would then never come.
        self.loop.add_reader(worker.ended_fd, self._ended, worker)

    def _ended(self, worker: _Worker) -> None:
        if self.pool.workers[worker.slot] is not worker:
            return
        for data in _drain(worker.fd):  # what it wrote before it ended
            self._take(worker, data)
        self._died(worker)

    def _send(self, worker: _Worker, message: bytes) -> None:
        """Queue ``message`` for ``worker`` framed as ``Connection.recv`` reads it; it is written
        once this turn of the event loop is over, with the others queued in it (one write and
        one wake-up of the worker for many: on two busy cores a wake-up per request cost more
        than the requests' scans), and what the pipe cannot take yet when it has room."""
        if not worker.outbox:
            assert self.loop is not None
            self.loop.call_soon(self._flush, worker)
        size = len(message)
        if size <= 0x7FFFFFFF:
            worker.outbox += size.to_bytes(4, "big", signed=True)
        else:  # multiprocessing's framing of a message of 2 GiB or more
            worker.outbox += (-1).to_bytes(4, "big", signed=True) + size.to_bytes(8, "big")
        worker.outbox += message

    def _flush(self, worker: _Worker) -> None:
        assert self.loop is not None
        if not worker.outbox or worker.tasks.closed:  # it died meanwhile
            return
        fd = worker.tasks.fileno()
        try:
            written = os.write(fd, worker.outbox)
        except BlockingIOError:
            written = 0
        except OSError:  # it died: the end of its result pipe says so
            worker.outbox.clear()
            self.loop.remove_writer(fd)
            return
        del worker.outbox[:written]
        if worker.outbox:
            self.loop.add_writer(fd, self._flush, worker)
        else:
            self.loop.remove_writer(fd)

    def _readable(self, worker: _Worker) -> None:
        data = os.read(worker.fd, _READ_SIZE)
        if not data:
            self._died(worker)
            return
        self._take(worker, data)

    def _take(self, worker: _Worker, data: bytes) -> None:
        def expected(index: int) -> bool:
            entry = self.waiting.get(index)
            return entry is not None and entry[0] is worker

        lines = worker.lines(data, expected)
        if worker.garbled:
            worker.stop_garbled()
        for index, tag, text in lines:
            if index < 0 and tag == b"metrics":
                counts = json.loads(text)
                self.engine.add_metric_counts(counts, worker.counts)
                worker.counts = counts
                continue
            if index < 0:
                try:
                    _started(worker, tag, text)
                except CliError as exc:
                    self._fail(exc)
                else:
                    if all(each.ready for each in self.pool.live()):
                        self._set_started()
                continue
            entry = self.waiting.pop(index, None)
            if entry is not None:
                holder, size, future = entry
                holder.busy -= 1
                holder.queued -= size
                self.answered.set()
                if not future.done():
                    future.set_result((tag.decode(), text))

    def _future(self) -> asyncio.Future[tuple[str, bytes]]:
        assert self.loop is not None
        return self.loop.create_future()

    def _set_started(self) -> None:
        if self.started is not None and not self.started.done():
            self.started.set_result(None)

    def _fail(self, exc: CliError) -> None:
        if self.started is not None and not self.started.done():
            self.started.set_exception(exc)
        else:
            assert self.engine.log is not None
            self.engine.log.error("%s", exc)

    def _died(self, worker: _Worker) -> None:
        assert self.loop is not None
        self.loop.remove_reader(worker.fd)
        self.loop.remove_reader(worker.ended_fd)
        self.loop.remove_writer(worker.tasks.fileno())
        worker.outbox.clear()
        exitcode = worker.end()
        self.pool.workers[worker.slot] = None
        how = _how_worker_ended(worker, exitcode)
        self.answered.set()
        # What it was scanning is reported; what it only held goes to another worker.
        # When its output went wrong, the request whose plugin wrote there is one it was
        # scanning then: still scanning now, or answered since.
        scanning = self.pool.scanning(worker) | worker.after_garbled
        for index, (holder, _, future) in list(self.waiting.items()):
            if holder is worker:
                del self.waiting[index]
                if not future.done():
                    lost = index in scanning
                    future.set_result(("died", how.encode()) if lost else _AGAIN)
        if not worker.ready:
            # Not replaced: one that cannot start would be started again and again.
            self._fail(_never_started(worker, exitcode))
        elif not self.closing:
            self._start(worker.slot)

    async def scan(self, request: Request) -> tuple[StoqResponse, list[Error]]:
        """Scan ``request`` in the least busy worker: its response and the connectors that
        failed to save it (``Stoq._scan_and_save``'s result).

        :raises WorkerProcessError: the scan raised in the worker.
        """
        index = self.next_index
        self.next_index += 1
        message = pickle.dumps((index, request_data(request)), pickle.HIGHEST_PROTOCOL)
        tag, text = _AGAIN
        while (tag, text) == _AGAIN:  # sent again when a worker died holding it unscanned
            workers = self.pool.live()
            if not workers:
                return await self._not_scanned(request, "no worker process is left")
            worker = min(workers, key=_busy)
            # Always room for what it scans at once; past that, only under _HELD_BYTES.
            if worker.busy >= self.concurrency and worker.queued + len(message) > _HELD_BYTES:
                self.answered.clear()
                await self.answered.wait()
                continue
            future: asyncio.Future[tuple[str, bytes]] = self._future()
            self.waiting[index] = (worker, len(message), future)
            worker.busy += 1
            worker.queued += len(message)
            self._send(worker, message)
            tag, text = await future
        if tag == "died":
            how = f"the {text.decode()} while scanning it"
            self.engine.log.error("a request was not scanned: %s", how)
            return await self._not_scanned(request, how)
        if tag == "raised":
            raise WorkerProcessError(json.loads(text))
        unsaved = int(tag[2:].rstrip("e"))  # "ru<N>", "e" if it holds errors
        response = _WorkerResponse(text, errors=None if tag.endswith("e") else [])
        return response, (response.errors[-unsaved:] if unsaved else [])

    async def _not_scanned(self, request: Request, why: str) -> tuple[StoqResponse, list[Error]]:
        names = ", ".join(
            str(p.results.payload_meta.extra_data.get("filename") or p.results.payload_id)
            for p in request.payloads
        )
        error = Error(f"{names or 'a request'} was not scanned: {why}")
        response, unsaved = await self.engine.scan_here(
            Request([], request.request_meta, errors=[*request.errors, error])
        )
        return response, [error, *unsaved]

    def finish(self) -> None:
        """Stop the workers once the run is over: each exits when its pipe closes, or, if
        scans are still in flight (a second Ctrl-C), is killed."""
        self._stop(kill=bool(self.waiting))

    def abort(self) -> None:
        """Kill the workers (a Ctrl-C while they start, a failure)."""
        self._stop(kill=True)

    def _stop(self, kill: bool) -> None:
        self.closing = True
        if self.loop is not None and not self.loop.is_closed():
            for worker in self.pool.live():
                self.loop.remove_reader(worker.fd)
                self.loop.remove_reader(worker.ended_fd)
                self.loop.remove_writer(worker.tasks.fileno())
        if kill:
            self.pool.abort()
        else:
            self.pool.close()


# -- responses ---------------------------------------------------------------------------------


def response_from_dict(data: dict[str, Any]) -> StoqResponse:
    """The ``StoqResponse`` whose ``to_dict()`` is ``data`` (a worker's JSON, parsed)."""
    response = StoqResponse.__new__(StoqResponse)
    _fill(response, data)
    return response


class _WorkerResponse(StoqResponse):
    """A response a worker process made, read from the JSON it wrote (``json_text``) when a
    field is first used.

    ``stoq run --jobs`` answers every request through this process, whose own work bounds how
    fast the workers can go: parsing each response back into objects was a quarter of it, and
    most are only printed (as the worker's JSON, ``ResponsePrinter``) and checked for errors.
    So only ``errors`` is known at once (empty, when the worker said there were none); the other
    fields are unset slots, filled from the JSON when first read (``__getattr__`` runs only for
    an attribute that is not set).
    """

    __slots__ = ("json_text",)
    json_text: Optional[bytes]

    def __init__(self, text: bytes, errors: Optional[list[Any]] = None) -> None:
        self.json_text = text
        if errors is not None:
            self.errors = errors

    def __getattr__(self, name: str) -> Any:
        if name not in _RESPONSE_FIELDS:
            raise AttributeError(name)
        _fill(self, json.loads(self.json_text or b"{}"))
        return object.__getattribute__(self, name)


def _fill(response: StoqResponse, data: dict[str, Any]) -> None:
    errors = [
        Error(**error) if isinstance(error, dict) and error.keys() == _ERROR_KEYS else error
        for error in data["errors"]
    ]
    StoqResponse.__init__(
        response,
        Request([], RequestMeta(**data["request_meta"]), errors),
        time=data["time"],
        decorators=data["decorators"],
        scan_id=data["scan_id"],
    )
    results = response.results = []
    for result in data["results"]:
        results.append(
            PayloadResults(
                result["size"],
                result["payload_id"],
                PayloadMeta(**result["payload_meta"]),
                result["plugins_run"],
                result["extracted_from"],
                result["extracted_by"],
                result["workers"],
                result["archivers"],
            )
        )
        results[-1].cached = result.get("cached")


#: The slots of StoqResponse's fields, as ``__getattr__`` is asked for them.
_RESPONSE_FIELDS = frozenset(
    name for cls in StoqResponse.__mro__ for name in getattr(cls, "__slots__", ())
) - {"__weakref__"}
_ERROR_KEYS = {"error", "plugin_name", "payload_id"}
