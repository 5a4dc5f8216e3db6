"""Time limits for plugin calls at the cost of a dict entry, not a timer each.

``asyncio.timeout`` schedules and cancels a timer per call, which costs more (about 10 us here)
than the framework's whole budget for a small payload. The watchdog keeps one timer per event
loop, armed for the earliest limit of the calls under way; when it fires it cancels the tasks
whose calls are past their limit and re-arms for the next. Calls that finish in time never
touch the timer.

A call is watched only once it waits (see ``_calls.PluginCalls.start``): until its first ``await`` that
yields to the event loop, nothing could interrupt it anyway, and most plugin calls finish
without ever waiting.
"""

from __future__ import annotations

import asyncio
from typing import Optional

__all__ = ["Watchdog"]

_NEVER = float("inf")


class Watchdog:
    """Cancels the task of any call still running at its deadline (event-loop time)."""

    __slots__ = ("_calls", "_expired", "_loop", "_timer", "_timer_at", "expirations")

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._calls: dict[object, tuple[float, asyncio.Task[object]]] = {}
        self._expired: set[object] = set()  # calls cancelled for being late
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = _NEVER
        self.expirations = 0  #: calls cancelled for being late, ever (the budget reads it)

    def enter(
        self, limit: float, until: Optional[float] = None, elapsed: float = 0.0
    ) -> tuple[object, float]:
        """Watch the current task until ``leave``: ``limit`` seconds from the call's start
        (``elapsed`` seconds ago; 0: no limit), or until ``until`` (event-loop time) if that
        comes first.

        :returns: the token for ``leave`` and ``expired``, and the deadline chosen.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new asyncio.run(): forget the old loop's calls
            self._loop, self._calls, self._expired = loop, {}, set()
            self._timer, self._timer_at = None, _NEVER
        deadline = loop.time() - elapsed + limit if limit else _NEVER
        if until is not None and until < deadline:
            deadline = until
        task = asyncio.current_task(loop)
        assert task is not None, "plugin calls run inside a task"
        token = object()
        self._calls[token] = (deadline, task)
        if deadline < self._timer_at:
            self._arm(deadline)
        return token, deadline

    def expired(self, token: object) -> bool:
        """Whether the watchdog cancelled this call's task for being late."""
        return token in self._expired

    def leave(self, token: object) -> None:
        self._calls.pop(token, None)
        if self._expired:
            self._expired.discard(token)

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer, self._timer_at = None, _NEVER
        now = self._loop.time()
        earliest = _NEVER
        for token, (deadline, task) in list(self._calls.items()):
            if deadline <= now:
                del self._calls[token]
                self._expired.add(token)
                self.expirations += 1
                task.cancel()
            elif deadline < earliest:
                earliest = deadline
        if earliest != _NEVER:
            self._arm(earliest)
