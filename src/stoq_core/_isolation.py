"""Isolated plugins: ``isolate = true`` runs one plugin's hooks in processes of its own.

In the stoq process a time limit can only cancel an ``await`` or abandon a thread. A plain
``def`` hook holding the GIL (catastrophic regex backtracking, a long pure-Python loop) or an
``async def`` hook that swallows ``CancelledError`` went on for minutes past ``--timeout 2``; a
segfaulting C extension took the whole scan down, and a plugin leaking 10 MB per scan grew the
process to 2.9 GB (issue 12). A process can be killed, capped and replaced.

The plugin is built only in its process (``_isolation_child``), from the same class or v3
plugin directory and the same options; the stoq process sends each call, pickled, over a socket
pair and awaits the answer on its event loop (``loop.sock_*``: no thread, no tie to one loop).
When the engine cancels a call (its timeout, the request's deadline, Ctrl-C), the process is
killed with SIGKILL, and the next call gets a new one. A process that dies on its own is an
error for the call it was serving; one that dies between calls is replaced unnoticed.

What crosses to the process is a copy: a worker's request holds only the payload it is called
with (sending every payload of a request to every call would cost the square of an archive's
size), and what the plugin changes in its arguments stays in its process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib
import inspect
import io
import logging
import math
import mmap
import os
import pickle
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, Optional

import attrs

from stoq_core import _budget
from stoq_core._legacy import LegacyPlugin, module_name
from stoq_core.config import StoqConfigParser
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
from stoq_core.exceptions import StoqPluginException

__all__ = [
    "IsolatedPlugin",
    "IsolationOptions",
    "PluginProcessDied",
    "PluginRaised",
    "Recipe",
    "options",
    "recipe",
]

log = logging.getLogger("stoq")

#: True in a plugin's own process, where the plugin runs in-process (no isolation in isolation).
IN_CHILD = False

_HEADER = 8  # bytes of the length before each message
_WORKER_HOOKS = frozenset(("scan", "get_dispatches", "archive"))
_RESPONSE_HOOKS = frozenset(("decorate", "save"))
# How long a process that closed its end may take to exit, and a retired one to finish.
_EXIT_GRACE = 5.0


class PluginProcessDied(StoqPluginException):
    """An isolated plugin's process died (a signal, an exit) while serving the call."""


class PluginRaised(Exception):
    """Base of the exceptions re-raised here for those a hook raised in its process.

    Each is a subclass named as the original (``RuntimeError``, ``SystemExit``...), so the
    ``Error`` reads as it would in-process; none is the original type, so a ``SystemExit`` or
    ``CancelledError`` a plugin raised never ends or cancels anything in the stoq process.
    """


@functools.lru_cache(maxsize=256)
def _raised_type(name: str) -> type[PluginRaised]:
    return type(name, (PluginRaised,), {"__module__": __name__, "__qualname__": name})


# -- options ---------------------------------------------------------------------------------


@attrs.frozen
class IsolationOptions:
    """A plugin's ``isolate_*`` options, checked."""

    memory: int = 0  #: bytes of address space per process (``RLIMIT_AS``); 0: no cap
    memory_text: str = ""  #: ``isolate_memory`` as the user wrote it, for messages
    recycle: int = 0  #: calls after which a process is replaced; 0: never
    processes: int = 1  #: processes serving this plugin's calls at most


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def options(name: str, config: StoqConfigParser) -> Optional[IsolationOptions]:
    """The plugin's isolation options, or None when it runs in the stoq process.

    :raises StoqPluginException: an ``isolate*`` option has a value that means nothing.
    """
    if IN_CHILD:
        return None
    raw = config.get("options", "isolate", fallback="")
    try:
        isolate = config.getboolean("options", "isolate", fallback=False)
    except ValueError:
        raise StoqPluginException(
            f"plugin {name!r}: option isolate must be true or false, not {raw!r}"
        ) from None
    if not isolate:
        return None
    memory_text = config.get("options", "isolate_memory", fallback="0").strip() or "0"
    size = _SIZE.fullmatch(memory_text)
    memory = math.nan if size is None else float(size[1]) * _UNITS[size[2].lower()]
    if not (math.isfinite(memory) and memory >= 0):
        raise StoqPluginException(
            f"plugin {name!r}: option isolate_memory must be a size such as 512M or 2G "
            f"(0: no cap), not {memory_text!r}"
        )
    return IsolationOptions(
        memory=int(memory),
        memory_text=memory_text,
        recycle=_whole(name, config, "isolate_recycle", 0, "calls per process, 0: never"),
        processes=_whole(name, config, "isolate_processes", 1, "processes"),
    )


def _whole(name: str, config: StoqConfigParser, option: str, least: int, what: str) -> int:
    raw = config.get("options", option, fallback=str(least)).strip() or str(least)
    if not raw.isdigit() or int(raw) < least:
        raise StoqPluginException(
            f"plugin {name!r}: option {option} must be a whole number >= {least} ({what}), "
            f"not {raw!r}"
        )
    return int(raw)


# -- what the process builds -----------------------------------------------------------------


@attrs.frozen
class Recipe:
    """How a plugin's process builds the plugin: what the stoq process would have built."""

    name: str
    origin: str  #: as load errors name it: ``distribution stoq-plugin-x``, ``plugin directory ...``
    config: dict[str, dict[str, str]]  #: the plugin's StoqConfigParser, section by section
    legacy: Optional[LegacyPlugin]  #: a v3 plugin directory's plugin, imported again there
    module: str = ""  #: otherwise the class (or module) to import
    qualname: str = ""

    def build_config(self) -> StoqConfigParser:
        config = StoqConfigParser()
        for section, values in self.config.items():
            config.set_options(section, values)
        return config


def recipe(
    name: str,
    target: Any,
    config: StoqConfigParser,
    origin: str,
    legacy: Optional[LegacyPlugin],
) -> Recipe:
    """The recipe for ``target`` (a plugin class or module), registered as ``name``.

    :param legacy: the plugin directory's plugin of that name, if there is one.
    :raises StoqPluginException: a new process could not find ``target`` by its name.
    """
    sections = {section: dict(config.items(section, raw=True)) for section in config.sections()}
    legacy_module = sys.modules.get(module_name(legacy)) if legacy is not None else None
    if legacy is not None and legacy_module is not None:
        if any(value is target for value in vars(legacy_module).values()):
            return Recipe(name, origin, sections, legacy)
    if inspect.ismodule(target):
        module, qualname = target.__name__, ""
    elif inspect.isclass(target):
        module, qualname = target.__module__, target.__qualname__
    else:
        raise StoqPluginException(
            f"plugin {name!r} from {origin}: isolate = true needs a plugin class or module, "
            f"which its own process imports and builds, not a {type(target).__name__} object"
        )
    if module == "__main__" or "<" in qualname or _imported(module, qualname) is not target:
        where = f"{module}:{qualname}" if qualname else module
        raise StoqPluginException(
            f"plugin {name!r} from {origin}: isolate = true needs {where} to be importable "
            "under that name by a new process (define the plugin in a module)"
        )
    return Recipe(name, origin, sections, None, module, qualname)


def _imported(module: str, qualname: str) -> Any:
    """What ``module:qualname`` names, or None."""
    try:
        found: Any = importlib.import_module(module)
        for part in filter(None, qualname.split(".")):
            found = getattr(found, part)
    except Exception:
        return None
    return found


# -- messages ---------------------------------------------------------------------------------


def _payload(content: Any, dispatch_meta: Any, results: Any, digests: Any) -> Payload:
    payload = Payload.__new__(Payload)
    payload.content = content
    payload.dispatch_meta = dispatch_meta
    payload.results = results
    payload._digests = digests
    return payload


def _response(*fields: Any) -> StoqResponse:
    response = StoqResponse.__new__(StoqResponse)
    (response.results, response.request_meta, response.errors, response._time,
     response.decorators, response._scan_id) = fields  # fmt: skip
    return response


# Each crossing pickles a payload and a request: through their constructors, not attrs'
# generic __getstate__/__setstate__, a no-op call's round trip is 50 us shorter here.
_REDUCERS: dict[type, Callable[[Any], Any]] = {
    # A payload's content may be any buffer (an mmap of a large file); it crosses as bytes.
    mmap.mmap: lambda m: (bytes, (m[:],)),
    memoryview: lambda v: (bytes, (v.tobytes(),)),
    Payload: lambda p: (_payload, (p.content, p.dispatch_meta, p.results, p._digests)),
    PayloadMeta: lambda m: (
        PayloadMeta,
        (m.should_archive, m.should_scan, m.extra_data, m.dispatch_to),
    ),
    PayloadResults: lambda r: (
        PayloadResults,
        (
            r.size,
            r._payload_id,
            r.payload_meta,
            r.plugins_run,
            r.extracted_from,
            r.extracted_by,
            r.workers,
            r.archivers,
        ),
    ),
    Request: lambda r: (Request, (r.payloads, r.request_meta, r.errors)),
    RequestMeta: lambda m: (RequestMeta, (m.archive_payloads, m.source, m.extra_data)),
    Error: lambda e: (Error, (e.error, e.plugin_name, e.payload_id)),
    StoqResponse: lambda r: (
        _response,
        (r.results, r.request_meta, r.errors, r._time, r.decorators, r._scan_id),
    ),
    WorkerResponse: lambda w: (WorkerResponse, (w.results, w.extracted, w.errors, w.dispatch_to)),
    ExtractedPayload: lambda e: (ExtractedPayload, (e.content, e.payload_meta)),
    DispatcherResponse: lambda d: (DispatcherResponse, (d.plugin_names, d.meta, d.errors)),
    ArchiverResponse: lambda a: (ArchiverResponse, (a.results, a.errors)),
    DecoratorResponse: lambda d: (DecoratorResponse, (d.results, d.errors)),
}


class _Pickler(pickle.Pickler):
    dispatch_table = _REDUCERS


def dumps(thing: Any) -> memoryview:
    """``thing`` pickled, with its length in front: one message, ready to send."""
    buffer = io.BytesIO()
    buffer.write(bytes(_HEADER))
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(thing)
    view = buffer.getbuffer()  # not getvalue(): a large payload is not copied once more
    view[:_HEADER] = (len(view) - _HEADER).to_bytes(_HEADER, "big")
    return view


async def send(loop: asyncio.AbstractEventLoop, sock: socket.socket, message: memoryview) -> None:
    await loop.sock_sendall(sock, message)


async def receive(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> Optional[bytearray]:
    """The next message's bytes; None if the other end closed first."""
    header = await _read(loop, sock, _HEADER)
    if header is None:
        return None
    body = await _read(loop, sock, int.from_bytes(header, "big"))
    if body is None:
        raise EOFError("the connection closed in the middle of a message")
    return body


async def _read(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> Optional[bytearray]:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = await loop.sock_recv_into(sock, view[got:])
        if not count:
            return None
        got += count
    return buffer


def receive_blocking(sock: socket.socket) -> Optional[bytearray]:
    """``receive`` for a blocking socket."""
    header = _read_blocking(sock, _HEADER)
    if header is None:
        return None
    body = _read_blocking(sock, int.from_bytes(header, "big"))
    if body is None:
        raise EOFError("the connection closed in the middle of a message")
    return body


def _read_blocking(sock: socket.socket, size: int) -> Optional[bytearray]:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view[got:])
        if not count:
            return None
        got += count
    return buffer


def _portable_args(hook: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments as they cross to the plugin's process."""
    if hook in _WORKER_HOOKS:
        payload, request = args
        _ = payload.results.payload_id  # made here: else the process would make its own
        return payload, Request([payload], request.request_meta)
    if hook in _RESPONSE_HOOKS:
        response: StoqResponse = args[0]
        _ = response.scan_id  # made here, as payload ids are
        for results in response.results:
            _ = results.payload_id
    return args


# -- processes --------------------------------------------------------------------------------


class _Launcher:
    """Starts every plugin process from one thread that lives as long as the program.

    A child asks Linux to kill it when its parent dies (``PR_SET_PDEATHSIG``), so that a
    process stuck in a GIL-holding call does not outlive a killed stoq; Linux sends that
    signal when the *thread* that started the child ends, so no short-lived thread may.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, job))
        with self._lock:  # a fork of this program has none of the parent's threads
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="stoq-isolation", daemon=True
                )
                self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)


_launcher = _Launcher()

# ``python -c``: the child first takes the stoq process's import path, so that it imports
# stoq_core, the plugin and its dependencies from where this process did.
_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv.pop(1)); "
    "from stoq_core._isolation_child import main; main()"
)


class _Child:
    """One plugin process and this end of its socket."""

    __slots__ = ("calls", "pid", "process", "sock")

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.pid = process.pid
        self.calls = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, then reap it in the background."""
        self._close()
        with contextlib.suppress(OSError):
            self.process.kill()
        _reap(self.process, 0.0)

    def retire(self) -> None:
        """Close its socket: it finishes as a program does (``atexit``, buffers), then exits."""
        self._close()
        _reap(self.process, _EXIT_GRACE)

    def _close(self) -> None:
        if self.sock.fileno() < 0:
            return
        # A cancelled sock_recv_into removes its reader later, by fd: remove it now, before
        # the fd can be reused by the next process's socket.
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.sock)
            loop.remove_writer(self.sock)
        self.sock.close()

    async def ended(self) -> str:
        """How the process ended, once it has (it closed its end of the socket)."""
        for _ in range(int(_EXIT_GRACE / 0.01)):
            code = self.process.poll()
            if code is not None:
                return _exit_text(code)
            await asyncio.sleep(0.01)
        self.kill()
        return "closed its connection and was killed"

    def ended_blocking(self) -> str:
        try:
            return _exit_text(self.process.wait(_EXIT_GRACE))
        except subprocess.TimeoutExpired:
            self.kill()
            return "closed its connection and was killed"


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} ({signal.strsignal(-code) or 'unknown signal'})"
    return f"exited with status {code}"


def _reap(process: subprocess.Popen[bytes], grace: float) -> None:
    """Wait for ``process`` in a daemon thread (SIGKILL after ``grace`` seconds): no zombie."""

    def wait() -> None:
        try:
            process.wait(grace or None)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()

    if process.poll() is None:
        try:
            threading.Thread(target=wait, name="stoq-isolation-reap", daemon=True).start()
        except RuntimeError:  # the interpreter is exiting: init reaps what outlives it
            pass


def _spawn() -> _Child:
    """A new plugin process, not yet told what to build (runs in the launcher's thread)."""
    ours, theirs = socket.socketpair()
    try:
        # stdout is the results' channel (``stoq scan`` prints JSON there): a plugin's prints
        # go to stderr. A session of its own: Ctrl-C in the terminal is the stoq process's to
        # handle (``stoq run`` drains on the first), not a signal to every plugin process.
        process = subprocess.Popen(
            [
                sys.executable,
                *(["-X", "faulthandler"] if log.isEnabledFor(logging.DEBUG) else []),
                "-c",
                _BOOTSTRAP,
                _json_path(),
                str(theirs.fileno()),
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=_stderr_fd(),
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return _Child(process, ours)


def _json_path() -> str:
    import json

    return json.dumps([entry for entry in sys.path if isinstance(entry, str)])


def _stderr_fd() -> int:
    try:
        os.fstat(2)
    except OSError:
        return subprocess.DEVNULL
    return 2


def _kill_when_spawned(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().kill()


def _start_message(recipe: Recipe, options: IsolationOptions) -> memoryview:
    return dumps(("start", recipe, options.memory, log.getEffectiveLevel()))


def _started(recipe: Recipe, child: _Child, reply: Any, ended: Optional[str]) -> Any:
    """The ready message's contents, or the reason the plugin did not start, raised."""
    if ended is not None:
        raise StoqPluginException(
            f"plugin {recipe.name!r} from {recipe.origin} failed to start: its process "
            f"(pid {child.pid}) {ended}"
        )
    kind, contents = pickle.loads(reply)
    if kind != "ready":
        raise StoqPluginException(contents)
    return contents


def _start_blocking(recipe: Recipe, options: IsolationOptions) -> tuple[_Child, Any]:
    """Start a process and wait, blocking, until it has built the plugin (or failed to)."""
    spawning = _launcher.submit(_spawn)
    try:
        child: _Child = spawning.result()
    except BaseException:  # a load timeout's signal, Ctrl-C: the process may come after all
        spawning.add_done_callback(_kill_when_spawned)
        raise
    try:
        child.sock.sendall(_start_message(recipe, options))
        reply = receive_blocking(child.sock)
        ended = child.ended_blocking() if reply is None else None
        ready = _started(recipe, child, reply, ended)
    except BaseException:
        child.kill()
        raise
    child.sock.setblocking(False)
    return child, ready


async def _start(recipe: Recipe, options: IsolationOptions) -> _Child:
    """``_start_blocking`` on the event loop."""
    spawning = _launcher.submit(_spawn)
    try:
        child: _Child = await asyncio.wrap_future(spawning)
    except BaseException:
        spawning.add_done_callback(_kill_when_spawned)
        raise
    try:
        child.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await send(loop, child.sock, _start_message(recipe, options))
        reply = await receive(loop, child.sock)
        ended = await child.ended() if reply is None else None
        _started(recipe, child, reply, ended)
    except BaseException:
        child.kill()
        raise
    return child


def _close_all(children: set[_Child]) -> None:
    for child in list(children):
        child.retire()
    children.clear()


class _Gone(Exception):
    """The process closed its end before answering."""


# -- the plugin as the stoq process sees it ---------------------------------------------------


class IsolatedPlugin:
    """An isolated plugin as the stoq process sees it (what ``Stoq.load_plugin`` returns).

    The plugin object lives only in its processes. Starting this starts the first process and
    waits until it has built the plugin; a failure there is the plugin's load failure.

    :param recipe: what the processes build.
    :param options: the plugin's ``isolate_*`` options.
    :raises StoqPluginException: the plugin failed to start in its process.
    """

    def __init__(self, recipe: Recipe, options: IsolationOptions) -> None:
        self.name = recipe.name
        self.options = options
        self._recipe = recipe
        self._children: set[_Child] = set()  # every process, idle or serving a call
        self._idle: list[_Child] = []
        self._starting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        child, (hooks, required) = _start_blocking(recipe, options)
        self._children.add(child)
        self._idle.append(child)
        # Processes are not left behind when this is dropped, nor at the program's exit.
        self._finalizer = weakref.finalize(self, _close_all, self._children)
        self.hooks: list[str] = list(hooks)
        self.required_workers: frozenset[str] = frozenset(required)
        #: Per hook, what the engine calls: a function returning the call's coroutine.
        self.callers: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
            hook: functools.partial(self._call, hook) for hook in self.hooks
        }

    def __repr__(self) -> str:
        return f"<IsolatedPlugin {self.name!r} in processes {self.pids}>"

    @property
    def pids(self) -> list[int]:
        """The process ids of the plugin's processes now."""
        return sorted(child.pid for child in self._children)

    def close(self) -> None:
        """End every process of this plugin (each finishes as a program does, or is killed)."""
        self._finalizer()

    # -- a call ------------------------------------------------------------------------------

    async def _call(self, hook: str, *args: Any) -> Any:
        if hook == "ingest":
            raise StoqPluginException(
                f"plugin {self.name!r}: a provider cannot be isolated (its queue lives in the "
                "stoq process); set isolate = false for it"
            )
        if not self._finalizer.alive:
            raise StoqPluginException(f"plugin {self.name!r} was closed")
        budget = _budget.state(args[1]) if hook == "scan" else None
        message = dumps(("call", hook, _portable_args(hook, args), budget))
        child = await self._acquire()
        try:
            reply = await self._exchange(child, message)
        except _Gone:
            try:
                ended = await child.ended()
            finally:
                self._forget(child)
                child.kill()  # reaps it; kills it only if it closed its end and lives on
            raise PluginProcessDied(self._death(child, ended)) from None
        except BaseException:  # cancelled (a time limit): whatever it is doing, it stops now
            self._forget(child)
            child.kill()
            raise
        try:
            (kind, value), retire = pickle.loads(reply)
        except BaseException as exc:
            # Unpickling runs the plugin's reducers here: one calling sys.exit once left this
            # process neither idle nor forgotten, and every later call waited for it forever.
            self._release(child)
            if not isinstance(exc, Exception):
                raise
            raise StoqPluginException(
                f"the answer of {self.name!r}'s process could not be read here: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        recycle = self.options.recycle
        if retire or (recycle and child.calls >= recycle):
            self._forget(child)
            child.retire()
        else:
            self._release(child)
        if kind == "raised":
            name, text = value
            if name == "MemoryError" and self.options.memory:
                text = (
                    f"the process ran out of memory under isolate_memory = "
                    f"{self.options.memory_text}; the next call gets a new process"
                )
            raise _raised_type(name)(text)
        return value

    async def _exchange(self, child: _Child, message: memoryview) -> bytearray:
        loop = asyncio.get_running_loop()
        try:
            await send(loop, child.sock, message)
            reply = await receive(loop, child.sock)
        except (EOFError, ConnectionError):
            raise _Gone from None
        if reply is None:
            raise _Gone
        child.calls += 1
        return reply

    def _death(self, child: _Child, ended: str) -> str:
        cap = f" (isolate_memory = {self.options.memory_text})" if self.options.memory else ""
        return (
            f"the plugin's process (pid {child.pid}) {ended} during the call{cap}; "
            "the next call gets a new process"
        )

    # -- the processes -----------------------------------------------------------------------

    async def _acquire(self) -> _Child:
        """An idle process, started if there are fewer than ``isolate_processes``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._new_loop(loop)
        while True:
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                self._forget(child)  # died between calls (killed from outside): replaced
                child.kill()
            if len(self._children) + self._starting < self.options.processes:
                self._starting += 1
                task = loop.create_task(self._start_one())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _new_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new asyncio.run(): the last loop's waiters and starts went with it, and a process
        # still serving one of its calls was abandoned mid-call.
        self._loop = loop
        self._waiters.clear()
        self._starting = 0
        for child in self._children - set(self._idle):
            self._forget(child)
            child.kill()

    async def _start_one(self) -> None:
        try:
            child = await _start(self._recipe, self.options)
        except Exception as exc:
            # The calls waiting would wait for a process that is not coming: each fails with
            # the reason (the next call tries again).
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(StoqPluginException(str(exc)))
            return
        finally:
            self._starting = max(0, self._starting - 1)  # 0 already if a new loop reset it
        self._children.add(child)
        if self._finalizer.alive:
            self._release(child)
        else:  # closed while it started
            self._forget(child)
            child.retire()

    def _release(self, child: _Child) -> None:
        self._idle.append(child)
        self._wake_one()

    def _forget(self, child: _Child) -> None:
        """Stop counting ``child`` (it is dead, or being killed or retired)."""
        self._children.discard(child)
        with contextlib.suppress(ValueError):
            self._idle.remove(child)
        # A call queued for a process may now start one in its place.
        self._wake_one()

    def _wake_one(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return
