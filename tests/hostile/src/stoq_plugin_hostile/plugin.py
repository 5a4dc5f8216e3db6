"""One plugin class per calling style, playing every role, misbehaving as its options say.

Options (``--plugin-opts hostile:mode=system_exit hostile:hooks=scan``):

- ``mode``: what to do (the ``MODES`` below; ``ok`` behaves). ``content``: ``scan`` does what
  the payload's content names (``b"segfault"``, ``b"pid"``...), so one plugin can crash on one
  payload and behave on the next.
- ``hooks``: the hooks that misbehave (comma separated; default all); the others behave.
- ``init``: what ``__init__`` does: ``ok``, ``hang`` (sleeps ``seconds``),
  ``swallow_interrupt`` (sleeps ``seconds``, catching every KeyboardInterrupt), ``system_exit``,
  ``keyboard_interrupt``, ``raise``, ``huge_error`` (a ``size``-character message).
- ``marker``: a file ``__init__`` creates as it begins.
- ``seconds``, ``size``, ``count``, ``n``: the numbers some modes use.
- ``dispatch``: the workers the dispatcher picks when it behaves.
- ``payloads``: how many payloads the provider queues when it behaves (default 1).

A behaving hook returns something small and valid for its role, so a test can see that the
other hooks and plugins went on.
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import itertools
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from stoq_core import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    ExtractedPayload,
    Payload,
    StoqConfigParser,
    StoqResponse,
    WorkerResponse,
    hookimpl,
)

HOOKS = ("scan", "get_dispatches", "archive", "get", "decorate", "save", "ingest")

#: What "leak" keeps alive between calls, as a leaking C extension or cache would.
LEAKED: list[bytes] = []


class Hostile:
    """``async def`` hooks."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.name = config.get("Core", "Name")
        self.mode = config.get("options", "mode", fallback="ok")
        hooks = config.getlist("options", "hooks", fallback=list(HOOKS))
        self.hooks = frozenset(hooks)
        self.seconds = config.getfloat("options", "seconds", fallback=60.0)
        self.size = config.getint("options", "size", fallback=100 << 20)
        self.count = config.getint("options", "count", fallback=1_000_000)
        self.n = config.getint("options", "n", fallback=34)
        self.dispatch = config.getlist("options", "dispatch", fallback=[])
        self.payloads = config.getint("options", "payloads", fallback=1)
        init = config.get("options", "init", fallback="ok")
        marker = config.get("options", "marker", fallback="")
        if marker:  # says that __init__ has begun, for a test to signal it then
            with open(marker, "w"):
                pass
        if init == "hang":
            time.sleep(self.seconds)
        elif init == "swallow_interrupt":
            ends = time.monotonic() + self.seconds
            while time.monotonic() < ends:
                try:
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    pass
        elif init == "system_exit":
            raise SystemExit(6)
        elif init == "keyboard_interrupt":
            raise KeyboardInterrupt
        elif init == "raise":
            raise RuntimeError(f"{self.name} refuses to start")
        elif init == "huge_error":
            raise RuntimeError("I" * self.size)

    # -- the hooks -------------------------------------------------------------------------

    @hookimpl
    async def scan(self, payload: Payload, request: Any) -> Any:
        acting = self._as_content_says(payload)
        return await acting._act("scan", lambda: WorkerResponse({"hostile": self.name}))

    @hookimpl
    async def get_dispatches(self, payload: Payload, request: Any) -> Any:
        return await self._act("get_dispatches", lambda: DispatcherResponse(list(self.dispatch)))

    @hookimpl
    async def archive(self, payload: Payload, request: Any) -> Any:
        return await self._act("archive", lambda: ArchiverResponse({"archived": self.name}))

    @hookimpl
    async def get(self, task: ArchiverResponse) -> Any:
        return await self._act("get", lambda: Payload(repr(task.results).encode()))

    @hookimpl
    async def decorate(self, response: StoqResponse) -> Any:
        return await self._act("decorate", lambda: DecoratorResponse({"decorated": self.name}))

    @hookimpl
    async def save(self, response: StoqResponse) -> Any:
        return await self._act("save", lambda: None)

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        if "ingest" in self.hooks and self.mode != "ok":
            await self._act("ingest", lambda: None)
        for index in range(self.payloads):
            await queue.put(Payload(f"{self.name} payload {index}".encode()))

    # -- misbehaving -----------------------------------------------------------------------

    def _as_content_says(self, payload: Payload) -> Any:
        """Mode ``content``: a copy of this plugin in the mode the payload's content names."""
        if self.mode != "content":
            return self
        acting = copy.copy(self)
        acting.mode = bytes(payload.content).decode(errors="replace").strip()
        return acting

    async def _act(self, hook: str, behave: Any) -> Any:
        if hook not in self.hooks:
            return behave()
        mode = self.mode
        if mode == "sleep":
            await asyncio.sleep(self.seconds)
            return behave()
        if mode == "swallow_cancel":
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    continue
            return behave()
        if mode == "cancelled":
            raise asyncio.CancelledError
        return misbehave(self, hook, behave)


class HostileBlocking(Hostile):
    """The same, as plain ``def`` hooks: the engine runs them in its daemon threads."""

    @hookimpl
    def scan(self, payload: Payload, request: Any) -> Any:  # type: ignore[override]
        acting = self._as_content_says(payload)
        return acting._act_blocking("scan", lambda: WorkerResponse({"hostile": self.name}))

    @hookimpl
    def get_dispatches(self, payload: Payload, request: Any) -> Any:  # type: ignore[override]
        return self._act_blocking("get_dispatches", lambda: DispatcherResponse(list(self.dispatch)))

    @hookimpl
    def archive(self, payload: Payload, request: Any) -> Any:  # type: ignore[override]
        return self._act_blocking("archive", lambda: ArchiverResponse({"archived": self.name}))

    @hookimpl
    def get(self, task: ArchiverResponse) -> Any:  # type: ignore[override]
        return self._act_blocking("get", lambda: Payload(repr(task.results).encode()))

    @hookimpl
    def decorate(self, response: StoqResponse) -> Any:  # type: ignore[override]
        return self._act_blocking("decorate", lambda: DecoratorResponse({"decorated": self.name}))

    @hookimpl
    def save(self, response: StoqResponse) -> Any:  # type: ignore[override]
        return self._act_blocking("save", lambda: None)

    def _act_blocking(self, hook: str, behave: Any) -> Any:
        if hook not in self.hooks:
            return behave()
        if self.mode == "sleep":
            time.sleep(self.seconds)
            return behave()
        if self.mode == "cancelled":
            raise asyncio.CancelledError
        return misbehave(self, hook, behave)


def misbehave(plugin: Hostile, hook: str, behave: Any) -> Any:
    """The modes every calling style shares."""
    mode = plugin.mode
    if mode == "ok":
        return behave()
    if mode == "system_exit":
        raise SystemExit(5)
    if mode == "exit":
        sys.exit(5)
    if mode == "keyboard_interrupt":
        raise KeyboardInterrupt
    if mode == "generator_exit":
        raise GeneratorExit
    if mode == "raise":
        raise RuntimeError(f"{plugin.name} failed in {hook}")
    if mode == "huge_error":
        raise RuntimeError("E" * plugin.size)
    if mode == "print":
        print(f"HOSTILE-PRINT from {plugin.name}")
        sys.stdout.flush()
        os.write(1, b"HOSTILE-FD1\n")
        return behave()
    if mode == "print_child":
        # A child process inherits descriptor 1 as it is.
        import subprocess

        subprocess.run([sys.executable, "-c", "print('HOSTILE-CHILD')"], check=True)
        return behave()
    if mode == "gil":
        # Catastrophic backtracking: one C call that holds the GIL for a very long time.
        re.match(r"(a+)+$", "a" * plugin.n + "b")
        return behave()
    if mode == "busy":
        end = time.monotonic() + plugin.seconds
        while time.monotonic() < end:
            pass
        return behave()
    if mode == "leak":
        LEAKED.append(os.urandom(1) * plugin.size)
        return behave()
    if mode == "memory":
        hog = bytearray(plugin.size)
        return _with_results(hook, behave, {"allocated": len(hog)})
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "pid":
        return _with_results(hook, behave, {"pid": os.getpid()})
    return _bad_response(plugin, hook, behave)


def _with_results(hook: str, behave: Any, results: dict[str, Any]) -> Any:
    response = behave()
    if hasattr(response, "results"):
        response.results = results
    return response


def _bad_response(plugin: Hostile, hook: str, behave: Any) -> Any:
    """Modes that return something malformed rather than raise."""
    mode = plugin.mode
    weird = {
        "nan": {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "ok": 1},
        "bigint": {"big": 10**5000},
    }
    if mode in weird:
        return _with_results(hook, behave, weird[mode])
    if mode == "many_errors":
        response = behave()
        if response is None:
            response = WorkerResponse()
        response.errors = [f"error {i}" for i in range(plugin.count)]
        return response
    if mode == "wrong_type":
        return {"not": "a response"}
    if hook == "get_dispatches":
        if mode == "plugin_names_int":
            return DispatcherResponse(plugin_names=[123])  # type: ignore[list-item]
        if mode == "plugin_names_none":
            return DispatcherResponse(plugin_names=[None])  # type: ignore[list-item]
    if hook != "scan":
        return behave()
    if mode == "extracted_int":
        return WorkerResponse(extracted=[123])  # type: ignore[list-item]
    if mode == "content_int":
        return WorkerResponse(extracted=[ExtractedPayload(123)])  # type: ignore[arg-type]
    if mode == "meta_dict":
        return WorkerResponse(
            extracted=[ExtractedPayload(b"child", {"should_scan": True})]  # type: ignore[arg-type]
        )
    if mode == "dispatch_none":
        return WorkerResponse(dispatch_to=[None])  # type: ignore[list-item]
    if mode == "endless":
        return WorkerResponse(extracted=_endless())  # type: ignore[arg-type]
    if mode == "huge_extra_data":
        from stoq_core import PayloadMeta

        meta = PayloadMeta(extra_data={"blob": "X" * plugin.size})
        return WorkerResponse(extracted=[ExtractedPayload(b"child", meta)])
    raise ValueError(f"{plugin.name}: unknown mode {mode!r}")


def _endless() -> Iterator[ExtractedPayload]:
    for index in itertools.count():
        yield ExtractedPayload(f"child {index}".encode())
