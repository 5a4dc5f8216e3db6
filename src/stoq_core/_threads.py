"""Daemon threads for blocking (plain ``def``) hooks.

``asyncio.to_thread`` uses the loop's default executor, whose threads ``asyncio.run`` and the
interpreter both wait for on exit: one hung plugin would hang ``stoq`` after its scan was done.
A timeout can only abandon a thread, never stop it, so abandoned work must run in threads that
nothing waits for.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["run_blocking"]

T = TypeVar("T")

_MAX_THREADS = min(32, (os.cpu_count() or 1) * 4 + 4)


class _DaemonPool:
    """A fixed-size pool of daemon threads; work whose caller gave up is skipped, not run."""

    def __init__(self, max_threads: int) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._max = max_threads
        self._threads = 0
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._work.put((future, function, args))
        with self._lock:
            if self._idle == 0 and self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._serve, name="stoq-blocking", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, function, args = self._work.get()
            with self._lock:
                self._idle -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except GeneratorExit as exc:
                # Out of a future, a task would throw it into the awaiting coroutines, where it
                # means "close": the whole scan would end instead of this one call.
                error = RuntimeError("the function raised GeneratorExit")
                error.__cause__ = exc
                future.set_exception(error)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


_pool = _DaemonPool(_MAX_THREADS)


async def run_blocking(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)`` in one of stoQ's daemon threads and return what it returns.

    What the engine does with a plain ``def`` hook, for an ``async def`` hook's blocking part:
    unlike ``asyncio.to_thread``, whose threads ``asyncio.run`` and the interpreter wait for,
    a call that a timeout abandons (cancelling the await) never holds up the program's exit.
    The function runs in a copy of the caller's ``contextvars`` context.
    """
    context = contextvars.copy_context()
    return await asyncio.wrap_future(_pool.submit(context.run, function, *args))
