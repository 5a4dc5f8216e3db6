"""An isolated plugin's process: builds the plugin, then serves the stoq process's calls.

Started by ``_isolation`` as ``python -c <bootstrap> PATH FD PARENT_PID``; FD is its end of the
socket pair. It reads a start message (the recipe, the memory cap, the log level), builds the
plugin exactly as the stoq process would have (``PluginManager.register``), answers ``ready``
with the plugin's hooks, then runs each call it is sent, one at a time, on an event loop of
its own, until the stoq process closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import itertools
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from stoq_core import _budget, _isolation, _legacy
from stoq_core._isolation import Recipe, dumps, receive, receive_blocking, send
from stoq_core.data_classes import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    WorkerResponse,
)
from stoq_core.exceptions import StoqPluginException

__all__ = ["main"]

# Items read from a response's iterator (an ``extracted`` generator may never end): more than
# any max_payloads the engine would keep, so that it still reports the excess.
_MAX_ITEMS = 100_000
_MAX_TEXT = 65536  # characters of an exception's message sent back (the engine cuts further)
_PR_SET_PDEATHSIG = 1


def main() -> None:
    """The process's whole life."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    _die_with(parent)
    # Ctrl-C is the stoq process's to handle; this session gets none from the terminal, but
    # a signal sent to it by hand should not leave a traceback mid-call either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _isolation.IN_CHILD = True
    sock = socket.socket(fileno=fd)
    start = receive_blocking(sock)
    if start is None:
        return
    _, recipe, memory, level = pickle.loads(start)
    _log_to_stderr(level)
    if memory:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        loaded = _build(recipe)
    except StoqPluginException as exc:
        sock.sendall(dumps(("failed", str(exc))))
        return
    except BaseException as exc:  # SystemExit, MemoryError: still the plugin's load failure
        message = f"plugin {recipe.name!r} from {recipe.origin} failed to start"
        message = f"{message}: {type(exc).__name__}: {_text(exc)}"
        if memory and isinstance(exc, MemoryError):
            message += f" (its isolate_memory, {memory} bytes, may be too small)"
        sock.sendall(dumps(("failed", message)))
        return
    sock.sendall(dumps(("ready", (list(loaded.hooks), sorted(loaded.required_workers)))))
    sock.setblocking(False)
    asyncio.run(_serve(sock, loaded))


def _die_with(parent: int) -> None:
    """Ask Linux for SIGKILL when the stoq process dies: a call holding the GIL would never
    notice the socket closing, and would run on as an orphan."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def _log_to_stderr(level: int) -> None:
    logger = logging.getLogger("stoq")
    logger.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("[%(asctime)s %(levelname)s] %(name)s (pid %(process)d): %(message)s")
    )
    logger.addHandler(handler)


def _build(recipe: Recipe) -> Any:
    """The plugin, built and registered as the stoq process would have: a ``LoadedPlugin``."""
    from stoq_core._manager import PluginManager  # it imports _isolation: not at the top

    target: Any
    if recipe.legacy is not None:
        target = _legacy.load_class(recipe.legacy)
    else:
        target = importlib.import_module(recipe.module)
        for part in filter(None, recipe.qualname.split(".")):
            target = getattr(target, part)
    return PluginManager().register(recipe.name, target, recipe.build_config(), recipe.origin)


async def _serve(sock: socket.socket, loaded: Any) -> None:
    loop = asyncio.get_running_loop()
    while True:
        message = await receive(loop, sock)
        if message is None:  # the stoq process is done with this one
            return
        _, hook, args, budget = pickle.loads(message)
        retire = False
        if budget is not None:
            args[1]._extraction = _Budget(*budget)
        try:
            # Awaited here, not in a task of its own: a SystemExit or KeyboardInterrupt the
            # plugin raises then comes here, rather than out of the event loop.
            reply: tuple[str, Any] = ("returned", _portable(await loaded.callers[hook](*args)))
        except MemoryError:
            reply, retire = ("raised", ("MemoryError", "")), True  # its state is suspect
        except BaseException as exc:
            reply = ("raised", (type(exc).__name__, _text(exc)[:_MAX_TEXT]))
        try:
            answer = dumps((reply, retire))
        except MemoryError:
            answer, retire = dumps((("raised", ("MemoryError", "")), True)), True
        except Exception as exc:  # what cannot be pickled (a lambda in results, a socket)
            problem = f"its answer cannot leave the plugin's process: {_text(exc)}"
            answer = dumps((("raised", (type(exc).__name__, problem[:_MAX_TEXT])), False))
        await send(loop, sock, answer)
        if retire:
            return


class _Budget:
    """The request's ``max_extracted_bytes`` as it stood when the call was sent, for
    ``charge_extracted_bytes`` here (what the request held then, plus what this call charges)."""

    def __init__(self, limit: int, held: int) -> None:
        self.limit = limit
        self.held = held

    def charge_in_flight(self, nbytes: int) -> None:
        if self.held + nbytes > self.limit:
            raise _budget.exceeded(self.limit, self.held, nbytes)
        self.held += nbytes


def _portable(value: Any) -> Any:
    """A response whose lazy fields (iterators, which cannot be pickled) are read into lists."""
    if isinstance(value, WorkerResponse):
        value.extracted = _listed(value.extracted)
        value.errors = _listed(value.errors)
        value.dispatch_to = _listed(value.dispatch_to)
    elif isinstance(value, DispatcherResponse):
        value.plugin_names = _listed(value.plugin_names)
        value.errors = _listed(value.errors)
    elif isinstance(value, (ArchiverResponse, DecoratorResponse)):
        value.errors = _listed(value.errors)
    return value


def _listed(items: Any) -> Any:
    if isinstance(items, Iterator):
        return list(itertools.islice(items, _MAX_ITEMS + 1))
    return items


def _text(thing: Any) -> str:
    try:
        return str(thing)
    except BaseException:
        return f"<{type(thing).__name__} whose str() failed>"
