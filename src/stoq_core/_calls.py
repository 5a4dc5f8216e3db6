"""Where a plugin call starts and ends: every hook the engine calls goes through ``PluginCalls``.

A call runs up to its first real wait in the caller's task (``start``): most calls (hashing,
parsing) finish there and never pay for a task, a timer or the watchdog. One that waits is then
awaited within its time limits (``finish``, ``carry_on``), each step in a ``contextvars``
context of its own, as under ``asyncio.gather``. Whatever the plugin raises or returns that does
not fit becomes an ``Error`` naming the plugin and the payload (``failed``, ``take``), so one
failing plugin never stops a scan. Only a cancellation someone asked of the task, or the user's
Ctrl-C, goes on through.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Protocol, TypeVar

import attrs

from stoq_core._manager import LoadedPlugin

if TYPE_CHECKING:
    from stoq_core._cache import ResultCache
from stoq_core._watchdog import Watchdog
from stoq_core.data_classes import Error, PayloadResults
from stoq_core.helpers import check_results

__all__ = [
    "CANCEL_GRACE",
    "FAILED",
    "DroppedErrors",
    "Limits",
    "PluginCalls",
    "Waiting",
    "cut",
    "dropped_text",
    "gather",
    "interrupting",
    "payload_id_of",
    "text_of",
    "trim_errors",
]

T = TypeVar("T")

FAILED: Any = object()  # a plugin call that raised; its Error is already recorded

# How long a call may go on after a cancellation (a timeout, Ctrl-C) was thrown into it without
# raising: room for an ``except CancelledError`` that tidies up, not for one that carries on.
CANCEL_GRACE = 1.0


class Limits(Protocol):
    """The settings a call is held to, read at each call (a ``Stoq``'s may change after it is made)."""

    timeout: float
    deadline: float
    max_result_size: int
    max_errors: int
    max_error_length: int


class PluginCalls:
    """The call machinery of a ``Stoq``: ``call`` and ``call_each`` run hooks within their
    limits; ``take`` files what they return. Every hook the engine calls goes through one."""

    __slots__ = ("cache", "limits", "log", "on_limit_hit", "on_timeout", "watchdog")

    def __init__(
        self, limits: Limits, log: logging.Logger, cache: Optional[ResultCache] = None
    ) -> None:
        self.limits = limits
        self.log = log
        self.watchdog = Watchdog()
        #: The result cache a worker's scan may be answered from (``_rounds``); None: off.
        self.cache = cache
        #: Told ``(plugin, hook)`` of each call a time limit stopped (the metrics count them).
        self.on_timeout: Optional[Callable[[str, str], None]] = None
        #: Told ``(limit, count)`` when a limit cuts a request's work: ``max_errors`` here,
        #: ``max_recursion`` and ``max_payloads`` in ``_rounds`` (the metrics count them).
        self.on_limit_hit: Optional[Callable[[str, int], None]] = None

    def take(
        self,
        outcome: Any,
        expected: type[Any],
        plugin: LoadedPlugin,
        errors: list[Error],
        about: Optional[PayloadResults],
        results: dict[str, Any],
    ) -> Any:
        """File a plugin's response: its results under its name, its errors in ``errors``.

        :returns: the response if it is of the ``expected`` type, else ``None``.
        """
        if outcome is None or outcome is FAILED:
            return None
        if not isinstance(outcome, expected):
            errors.append(
                Error(
                    f"returned {type(outcome).__name__}, expected {expected.__name__} or None",
                    plugin.name,
                    payload_id_of(about),
                )
            )
            return None
        found = getattr(outcome, "results", None)
        if found is not None:
            problem = check_results(found, self.limits.max_result_size)
            if problem is None:
                results[plugin.name] = found
            else:
                errors.append(
                    Error(f"{problem}; results dropped", plugin.name, payload_id_of(about))
                )
        try:
            if outcome.errors:
                errors.extend(self.attributed(outcome.errors, plugin.name, about))
                if len(errors) > 2 * self.limits.max_errors:
                    trim_errors(errors, self.limits.max_errors)
        except Exception as exc:
            # Not a list, or a generator that raised part way: the plugin's error, not the
            # request's (it once ended the scan).
            message = f"returned errors that could not be read: {type(exc).__name__}: "
            errors.append(
                Error(
                    cut(message + text_of(exc), self.limits.max_error_length),
                    plugin.name,
                    payload_id_of(about),
                )
            )
        return outcome

    def attributed(
        self, errors: Iterable[Any], plugin_name: str, about: Optional[PayloadResults]
    ) -> list[Error]:
        """The errors a plugin returned, as ``Error``s: at most ``max_errors`` of them (then one
        saying how many more there were), each message cut to ``max_error_length``.

        v3's own docs return bare strings as errors; they are kept, attributed to the plugin.
        """
        lazy = type(errors) is not list
        # A generator may never end: take one past the limit, to know it was passed.
        given = list(itertools.islice(errors, self.limits.max_errors + 1)) if lazy else errors
        assert isinstance(given, list)
        kept = []
        # One place is kept for the Error saying how many were dropped.
        room = (
            self.limits.max_errors
            if len(given) <= self.limits.max_errors
            else self.limits.max_errors - 1
        )
        for error in given[:room]:
            if type(error) is not Error:
                if isinstance(error, Error):  # a subclass: keep its fields, not its type
                    error = Error(error.error, _name(error.plugin_name), _name(error.payload_id))
                else:
                    error = Error(text_of(error), plugin_name, payload_id_of(about))
            elif not (_is_name(error.plugin_name) and _is_name(error.payload_id)):
                # Written into the JSON and used as a key: a list there once ended the scan.
                error = Error(error.error, _name(error.plugin_name), _name(error.payload_id))
            if len(error.error) > self.limits.max_error_length:
                error.error = cut(error.error, self.limits.max_error_length)
            kept.append(error)
        if len(given) > self.limits.max_errors:
            if self.on_limit_hit is not None:
                # Once per cut: how many a generator had left is never known.
                self.on_limit_hit("max_errors", 1)
            more = "more" if lazy else str(len(given) - room)
            kept.append(
                Error(
                    f"returned {more} errors past max_errors ({self.limits.max_errors}); dropped",
                    plugin_name,
                    payload_id_of(about),
                )
            )
        return kept

    async def call(
        self,
        plugin: LoadedPlugin,
        hook: str,
        args: tuple[Any, ...],
        errors: list[Error],
        about: Optional[PayloadResults] = None,
        until: Optional[float] = None,
    ) -> Any:
        """Run one hook of one plugin within its time limits.

        A raise, or running past the plugin's ``timeout`` or the request's deadline (``until``,
        in event-loop time), becomes an ``Error`` and ``FAILED`` is returned.
        """
        started = self.start(plugin, hook, args, errors, about)
        if type(started) is not Waiting:
            return started
        return await self.finish(started, plugin, hook, errors, about, until)

    async def call_each(
        self,
        calls: Sequence[
            tuple[LoadedPlugin, str, tuple[Any, ...], list[Error], Optional[PayloadResults]]
        ],
        until: Optional[float] = None,
    ) -> list[Any]:
        """``call`` for each ``(plugin, hook, args, errors, about)``: started one after another,
        the calls that wait then wait concurrently.

        What ``asyncio.gather`` over the ``call``s would do, except that a call finishing
        without waiting (most do) costs no task: a round of 1,000 payloads would cost 1,000.
        """
        outcomes: list[Any] = []
        waiting: list[tuple[int, Waiting]] = []
        try:
            for plugin, hook, args, errors, about in calls:
                outcome = self.start(plugin, hook, args, errors, about)
                if type(outcome) is Waiting:
                    waiting.append((len(outcomes), outcome))
                outcomes.append(outcome)
        except BaseException:
            for _, started in waiting:
                started.context.run(started.call.close)
            raise
        if waiting:
            finishing = []
            for index, started in waiting:
                plugin, hook, _, errors, about = calls[index]
                finishing.append(self.finish(started, plugin, hook, errors, about, until))
            for (index, _), outcome in zip(waiting, await gather(finishing)):
                outcomes[index] = outcome
        return outcomes

    def start(
        self,
        plugin: LoadedPlugin,
        hook: str,
        args: tuple[Any, ...],
        errors: list[Error],
        about: Optional[PayloadResults],
    ) -> Any:
        """Run a call up to its first real wait: its outcome, or ``Waiting`` if it waits.

        Nothing watches the call until then (nothing could interrupt it before its first wait),
        and most calls (hashing, parsing) finish without waiting, so they never pay for the
        watchdog's running loop, task and clock lookups.
        """
        began = time.monotonic()
        # A context of its own, as the task asyncio.gather made per call gave it: what the
        # plugin sets in a ContextVar stays with this call, not the next plugin or the caller.
        context = contextvars.copy_context()
        try:
            call = plugin.callers[hook](*args)
            waiting_on = context.run(call.send, None)
        except StopIteration as finished:
            return finished.value
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt, CancelledError: before its first wait nothing but
            # the plugin itself can have raised it, so it is the plugin's failure, not the
            # program's (a plugin's sys.exit once ended ``stoq scan`` with no output).
            if isinstance(exc, KeyboardInterrupt) and interrupting(exc):
                raise  # Ctrl-C pressed again while the task is already being cancelled
            return self.failed(plugin, hook, exc, errors, about)
        return Waiting(call, waiting_on, began, context)

    async def finish(
        self,
        started: Waiting,
        plugin: LoadedPlugin,
        hook: str,
        errors: list[Error],
        about: Optional[PayloadResults],
        until: Optional[float],
    ) -> Any:
        """Await a call ``start`` left waiting, within its time limits (counted from its start)."""
        limit = plugin.timeout if plugin.timeout is not None else self.limits.timeout
        if not limit and until is None:
            try:
                return await carry_on(started)
            except BaseException as exc:
                if interrupting(exc):
                    raise
                return self.failed(plugin, hook, exc, errors, about)
        watchdog = self.watchdog
        elapsed = time.monotonic() - started.began
        token, deadline = watchdog.enter(limit, until, elapsed)
        try:
            return await carry_on(started)
        except asyncio.CancelledError as exc:
            if not watchdog.expired(token):
                if interrupting(exc):
                    raise
                return self.failed(plugin, hook, exc, errors, about)
            # The watchdog cancelled this task; take the cancellation back so the scan goes on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if deadline == until:
                message = f"{hook} stopped at the request deadline ({self.limits.deadline:g} s)"
            else:
                message = f"{hook} timed out after {limit:g} s"
            errors.append(Error(message, plugin.name, payload_id_of(about)))
            self.log.warning("plugin %s: %s", plugin.name, message)
            if self.on_timeout is not None:
                self.on_timeout(plugin.name, hook)
            return FAILED
        except BaseException as exc:
            if interrupting(exc):
                raise
            return self.failed(plugin, hook, exc, errors, about)
        finally:
            watchdog.leave(token)

    def failed(
        self,
        plugin: LoadedPlugin,
        hook: str,
        exc: BaseException,
        errors: list[Error],
        about: Optional[PayloadResults],
    ) -> Any:
        # A 100 MB message was once copied whole into the response and into one log line.
        message = cut(
            f"{hook} failed: {type(exc).__name__}: {text_of(exc)}", self.limits.max_error_length
        )
        errors.append(Error(message, plugin.name, payload_id_of(about)))
        self.log.warning(
            "plugin %s: %s", plugin.name, message, exc_info=self.log.isEnabledFor(logging.DEBUG)
        )
        return FAILED


class Waiting:
    """A plugin call run up to a wait: the coroutine, what it waits on, when it began, and the
    context it runs in."""

    __slots__ = ("began", "call", "context", "waiting_on")

    def __init__(
        self,
        call: Coroutine[Any, Any, Any],
        waiting_on: Any,
        began: float,
        context: contextvars.Context,
    ) -> None:
        self.call = call
        self.waiting_on = waiting_on
        self.began = began
        self.context = context


@types.coroutine
def carry_on(started: Waiting) -> Generator[Any, Any, Any]:
    """Await the call ``start`` left waiting, each of its steps run in its own context.

    What the call waits on goes to the awaiting task as if the call had yielded it there; what
    the task sends or throws in (a cancellation) goes on to the call.

    A call that swallows a cancellation (``except CancelledError: pass``) once ignored every
    timeout, the deadline and Ctrl-C. It now has ``CANCEL_GRACE`` seconds to finish tidying
    up; then, or at the next cancellation, it is closed and the cancellation goes on as if it
    had raised it. A result it returns after a cancellation comes too late and is dropped.
    """
    call, waiting_on, run = started.call, started.waiting_on, started.context.run
    refused: Optional[BaseException] = None  # the cancellation the call swallowed
    grace: Optional[asyncio.TimerHandle] = None
    graced = False  # the grace timer has cancelled the task: that cancel is ours to take back

    def end_grace(task: asyncio.Task[Any]) -> None:
        nonlocal graced
        graced = True
        task.cancel()

    try:
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                close_call(run, call)
                raise
            except BaseException as exc:
                # Thrown in by the task: the error of a future the call awaited (which it may
                # handle), or a cancellation (which it must not swallow).
                cancelled = isinstance(exc, asyncio.CancelledError)
                if cancelled and refused is not None:  # grace over, or cancelled again: stop
                    task = asyncio.current_task()
                    if graced and task is not None:
                        task.uncancel()
                    close_call(run, call)
                    raise refused from None
                try:
                    waiting_on = run(call.throw, exc)
                except StopIteration as finished:
                    if cancelled:
                        raise exc from None  # its result comes too late to be taken
                    return finished.value
                if cancelled:
                    refused = exc
                    task = asyncio.current_task()
                    if task is not None:
                        grace = asyncio.get_running_loop().call_later(CANCEL_GRACE, end_grace, task)
                continue
            try:
                waiting_on = run(call.send, sent)
            except StopIteration as finished:
                if refused is not None:
                    raise refused from None
                return finished.value
    finally:
        if grace is not None:
            grace.cancel()


def close_call(run: Callable[..., Any], call: Coroutine[Any, Any, Any]) -> None:
    """Close an abandoned call; one that ignores even that is left to the garbage collector."""
    try:
        run(call.close)
    except BaseException:  # RuntimeError: coroutine ignored GeneratorExit, or its own raise
        pass


async def gather(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` without its task overhead when there is nothing to overlap."""
    items = list(awaitables)
    if len(items) == 1:
        return [await items[0]]
    if not items:
        return []
    return list(await asyncio.gather(*items))


def interrupting(exc: BaseException) -> bool:
    """Whether ``exc``, raised out of a plugin's call after a wait, interrupts the program
    rather than the plugin: a cancellation someone asked of the task (Ctrl-C, ``stop``, an
    outer timeout), or Ctrl-C itself once it has cancelled the task.

    Anything else a plugin raises (``SystemExit``, its own ``CancelledError`` or
    ``KeyboardInterrupt``) is that plugin's failure.
    """
    if not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def text_of(thing: Any) -> str:
    """``str(thing)``, or a description if its ``__str__`` fails (a hostile exception's may)."""
    try:
        return str(thing)
    except BaseException:
        return f"<{type(thing).__name__} whose str() failed>"


def _is_name(value: Any) -> bool:
    return value is None or (type(value) is str and len(value) <= _MAX_NAME)


def _name(value: Any) -> Optional[str]:
    """An ``Error``'s ``plugin_name`` or ``payload_id`` as text (or None), however given."""
    return value if _is_name(value) else text_of(value)[:_MAX_NAME]


_MAX_NAME = 200  # characters of an Error's plugin_name or payload_id kept (ids have 36)


@attrs.define(eq=False)
class DroppedErrors(Error):
    """Where ``trim_errors`` dropped errors: its text says how many, as ``cap_errors``'s does."""

    count: int = 0


def trim_errors(errors: list[Error], limit: int) -> None:
    """Keep the first ``limit`` of ``errors`` and one ``DroppedErrors`` counting the others
    (those an earlier trim counted included).

    Called as a plugin's returned errors are filed: one returning ``max_errors`` errors on each
    of thousands of payloads once held millions until the request ended and ``cap_errors``
    ran. Outcomes without errors never get here, so a scan pays nothing for it.
    """
    count = 0
    for error in errors[limit:]:
        count += error.count if type(error) is DroppedErrors else 1
    del errors[limit:]
    errors.append(DroppedErrors(dropped_text(count, limit), count=count))


def dropped_text(count: int, limit: int) -> str:
    return f"{count} more error(s) dropped: max_errors ({limit}) reached"


def cut(text: str, length: int) -> str:
    """``text`` cut to about ``length`` characters, saying how much was cut."""
    if len(text) <= length:
        return text
    return f"{text[: length - 40]}... ({len(text) - length + 40} characters cut)"


def payload_id_of(about: Optional[PayloadResults]) -> Optional[str]:
    return None if about is None else about.payload_id
