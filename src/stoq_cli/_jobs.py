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
worker takes its place. On Ctrl-C, ``scan`` kills its workers and exits 130; ``run`` drains as it
does in one process (the workers finish what is in flight), and a second Ctrl-C kills them.
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
from stoq_core import Stoq

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
    from multiprocessing.process import BaseProcess

    from stoq_cli._home import EngineOptions
    from stoq_cli._inputs import Input
    from stoq_cli._output import ResponsePrinter
    from stoq_cli._scan import Tally
    from stoq_core import Error, Request, StoqResponse

__all__ = ["FileScan", "PooledStoq", "RequestPool", "response_from_dict"]

_READ_SIZE = 1 << 16
_BATCH = 64  #: most files sent to a worker in one message
_FIRST_BATCH = 4  #: a worker's first batch; each next one is 4 times larger, up to _BATCH
_PREFILL = 8  #: batches each worker is given at once while this process loads its own engine
_QUEUED = 4  #: batches each worker holds afterwards, so that none waits for this process
#: Task bytes a worker may hold unread; with a batch below _BATCH_BYTES, the sum stays under a
#: pipe's smallest size (64 KiB), so a send never blocks this process. A blocking send could
#: deadlock with a worker blocked writing a large response to the result pipe this process
#: would then not be reading.
_TASK_ROOM = 32 << 10
_BATCH_BYTES = 16 << 10
_DIRECT_SEND = 16 << 10  #: larger requests are written from a thread: a full pipe would block
_GATHER = 0.002  #: seconds ``stoq scan`` lets its workers' lines gather between two reads
#: What the fork server imports for every worker (``stoq_cli.main``: multiprocessing runs the
#: ``stoq`` script again in each worker, which imports it).
_PRELOAD = ("stoq_cli.main", "stoq_cli._jobs_worker", "stoq_cli._scan", "stoq_core.engine")
_PIPE_SIZE = 1 << 20  #: a result pipe's size: 1 MiB holds about 700 small responses


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
        self.partial = b""  #: the start of a line not yet read whole
        #: ``stoq scan``: indices sent and not yet answered, in the order sent
        self.files: collections.deque[int] = collections.deque()
        #: ``stoq scan``: the batches not yet answered whole: (last index, bytes sent)
        self.batches: collections.deque[tuple[int, int]] = collections.deque()
        self.queued = 0  #: the bytes of those batches
        self.next_size = _FIRST_BATCH

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def lines(self, data: bytes) -> list[tuple[int, str, str]]:
        """The whole lines in ``data`` (and what came before it), as (index, tag, text)."""
        chunk = self.partial + data
        end = chunk.rfind(b"\n") + 1
        self.partial = chunk[end:]
        found = []
        # Split on LF only: str.splitlines() also splits on U+2028 and others, which JSON
        # leaves unescaped inside strings.
        for line in chunk[: end - 1].split(b"\n") if end else ():
            index, tag, text = line.decode("utf-8", "surrogateescape").split("\t", 2)
            found.append((int(index), tag, text))
        return found

    def end(self) -> Optional[int]:
        """Wait for the process to be gone (its result pipe is closed); its exit code."""
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.tasks.close()
        self.results.close()
        return self.process.exitcode


class _Pool:
    """The worker processes, each in a slot; a dead one's slot is reused by its replacement."""

    def __init__(self, options: EngineOptions, mode: str, jobs: int) -> None:
        import multiprocessing

        self.options = options
        self.mode = mode
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
        self.slots = self.context.RawArray("q", [-1] * jobs)
        self.workers: list[Optional[_Worker]] = [None] * jobs

    def start(self, slot: int) -> _Worker:
        """Start a worker in ``slot``."""
        self.slots[slot] = -1
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
        process = context.Process(
            target=worker_main,
            args=(self.options, self.mode, tasks_out, results_in, self.slots, slot, inherited),
            name=f"stoq-job-{slot}",
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


def _started(worker: _Worker, tag: str, text: str) -> None:
    """Note a worker's first line: ``ready``, or ``failed`` with why."""
    if tag == "failed":
        raise CliError(f"a worker process could not start: {json.loads(text)}", EXIT_FAILED)
    worker.ready = True


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
            # At most what pickle writes for it: 3 bytes a character (an undecodable byte in a
            # name is a surrogate, which pickle writes as 3) and a tuple's framing; the source
            # directory is the same object for a directory's files, which pickle writes once.
            cost += 3 * len(self.items[index].label) + 16
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

        def take(lines: list[tuple[int, str, str]]) -> None:
            printed = []
            for index, tag, text in lines:
                label = items.pop(index).label
                if tag == "skip" or tag == "note":
                    warn(json.loads(text))
                    tally.failed = tally.failed or tag == "skip"
                else:
                    tally.answered = True
                    tally.failed = tally.failed or "e" in tag
                    tally.scanned = tally.scanned or "s" in tag
                    tally.worked = tally.worked or "w" in tag
                    if not direct:
                        printer.emit(response_from_dict(json.loads(text)), label)
                    elif "p" in tag:  # the JSON the worker wrote is the line to print
                        printed.append(text)
                advance(label)
            if printed:
                _write(printer, "\n".join(printed))  # one write for many, not one each

        self._exchange(take, lost, warn)
        if lost:
            asyncio.run(self._report_lost(stoq, lost, printer, tally, advance))
        self.pool.close()

    def _exchange(
        self,
        take: Callable[[list[tuple[int, str, str]]], None],
        lost: list[tuple[int, str]],
        warn: Callable[[str], None],
    ) -> None:
        pool = self.pool
        selector = selectors.DefaultSelector()
        for worker in pool.live():
            selector.register(worker.fd, selectors.EVENT_READ, worker)
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
                    worker = key.data
                    data = os.read(worker.fd, _READ_SIZE)
                    if data:
                        answers = []
                        for index, tag, text in worker.lines(data):
                            if index < 0:
                                _started(worker, tag, text)
                            else:
                                _forget(worker, index)
                                answers.append((index, tag, text))
                        take(answers)
                        continue
                    selector.unregister(worker.fd)
                    new = self._died(worker, lost, warn)
                    if new is not None:
                        selector.register(new.fd, selectors.EVENT_READ, new)
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
        held = pool.slots[worker.slot]
        exitcode = worker.end()
        pool.workers[worker.slot] = None
        if not worker.ready:
            raise _never_started(worker, exitcode)
        how = f"worker process {worker.pid} {_how(exitcode)}"
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
        from stoq_core import Error, Request

        for index, how in lost:
            label = self.items[index].label
            error = Error(f"{label} was not scanned: the {how} while scanning it")
            request = Request([], self.options.request_meta(), errors=[error])
            printer.emit(await stoq.scan_request(request), label)
            tally.failed = True
            advance(label)


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


def _write(printer: ResponsePrinter, text: str) -> None:
    """Print a worker's JSON as ``ResponsePrinter.emit`` prints a response."""
    try:
        printer.write(text)
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


class RequestPool:
    """The workers of ``stoq run --jobs N``: each scans up to ``provider_consumers`` requests at
    once, as one ``stoq run`` does; the engine's provider loop runs that many times ``jobs``.

    :param engine: the parent's engine, whose ``_scan_and_save`` sends requests here.
    """

    def __init__(self, engine: PooledStoq, options: EngineOptions, jobs: int) -> None:
        self.engine = engine
        self.pool = _Pool(options, RUN, jobs)
        self.waiting: dict[int, tuple[_Worker, asyncio.Future[tuple[str, str]]]] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.next_index = 0
        self.closing = False
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.started: Optional[asyncio.Future[None]] = None
        engine.provider_consumers *= jobs
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
        self.locks[slot] = asyncio.Lock()
        self.loop.add_reader(worker.fd, self._readable, worker)

    def _readable(self, worker: _Worker) -> None:
        data = os.read(worker.fd, _READ_SIZE)
        if not data:
            self._died(worker)
            return
        for index, tag, text in worker.lines(data):
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
            if entry is not None and not entry[1].done():
                entry[1].set_result((tag, text))

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
        exitcode = worker.end()
        self.pool.workers[worker.slot] = None
        how = f"worker process {worker.pid} {_how(exitcode)}"
        for index, (holder, future) in list(self.waiting.items()):
            if holder is worker:
                del self.waiting[index]
                if not future.done():
                    future.set_result(("died", how))
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
        workers = self.pool.live()
        if not workers:
            return await self._not_scanned(request, "no worker process is left")
        busy = collections.Counter(holder.slot for holder, _ in self.waiting.values())
        worker = min(workers, key=lambda each: busy[each.slot])
        index = self.next_index
        self.next_index += 1
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self.waiting[index] = (worker, future)
        message = pickle.dumps((index, request_data(request)), pickle.HIGHEST_PROTOCOL)
        try:
            async with self.locks[worker.slot]:
                if len(message) <= _DIRECT_SEND:
                    worker.tasks.send_bytes(message)
                else:
                    await asyncio.get_running_loop().run_in_executor(
                        None, worker.tasks.send_bytes, message
                    )
        except OSError:
            pass  # it died: its pipe's end answers the future
        tag, text = await future
        if tag == "died":
            how = f"the {text} while scanning it"
            self.engine.log.error("a request was not scanned: %s", how)
            return await self._not_scanned(request, how)
        if tag == "raised":
            raise WorkerProcessError(json.loads(text))
        response = response_from_dict(json.loads(text))
        unsaved = int(tag[2:])  # "ru<N>"
        return response, (response.errors[-unsaved:] if unsaved else [])

    async def _not_scanned(self, request: Request, why: str) -> tuple[StoqResponse, list[Error]]:
        from stoq_core import Error, Request

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
        if kill:
            self.pool.abort()
        else:
            self.pool.close()


# -- responses ---------------------------------------------------------------------------------


def response_from_dict(data: dict[str, Any]) -> StoqResponse:
    """The ``StoqResponse`` whose ``to_dict()`` is ``data`` (a worker's JSON, parsed)."""
    from stoq_core import Error, PayloadMeta, PayloadResults, Request, RequestMeta, StoqResponse

    errors = [
        Error(**error) if isinstance(error, dict) and error.keys() == _ERROR_KEYS else error
        for error in data["errors"]
    ]
    response = StoqResponse(
        Request([], RequestMeta(**data["request_meta"]), errors),
        time=data["time"],
        decorators=data["decorators"],
        scan_id=data["scan_id"],
    )
    response.results = [
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
        for result in data["results"]
    ]
    return response


_ERROR_KEYS = {"error", "plugin_name", "payload_id"}
