"""Fake workers for the ``--jobs`` tests, published as entry points of a test distribution."""

from __future__ import annotations

import os
import time

from stoq_core import Payload, Request, StoqConfigParser, WorkerResponse, hookimpl


class Pid:
    """A worker that reports which process scanned the payload (and its parent), and the
    payload's text."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        text = bytes(payload.content).decode("utf-8", "replace")
        return WorkerResponse({"pid": os.getpid(), "ppid": os.getppid(), "text": text})


def _is_the_one(payload: Payload, on: str) -> bool:
    """The payload whose file name, or text, is ``on``."""
    name = payload.results.payload_meta.extra_data.get("filename")
    return on in (name, bytes(payload.content).decode("utf-8", "replace"))


class ExitOn:
    """A worker whose process exits at once (``os._exit(3)``, as a crash would) on the payload
    whose file name or text is its ``on`` option; every other payload gets ``{"ok": true}``."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.on = config.get("options", "on")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        if _is_the_one(payload, self.on):
            os._exit(3)
        return WorkerResponse({"ok": True})


class Scribble:
    """A worker that, on the payload whose file name or text is its ``on`` option, writes a
    line of junk where a plugin writing to a descriptor it does not own would do harm: the
    worker's result pipe, and the descriptor ``stoq`` keeps its real stdout on (a worker forked
    from ``stoq`` holds a copy); every payload gets ``{"ok": true}``."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.on = config.get("options", "on")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        import gc
        from multiprocessing.connection import Connection

        from stoq_cli._streams import _STREAMS

        if _is_the_one(payload, self.on):
            targets = [
                each.fileno()
                for each in gc.get_objects()
                if isinstance(each, Connection) and not each.closed and each.writable
            ]
            if _STREAMS.results_fd is not None:
                targets.append(_STREAMS.results_fd)
            for fd in targets:
                try:
                    os.write(fd, b"not a line of stoq's\n")
                except OSError:
                    pass
        return WorkerResponse({"ok": True})


class ForkThenExit:
    """A worker whose process, on the payload whose file name or text is its ``on`` option,
    forks a child that outlives it (holding every descriptor the worker had, its result pipe
    too) and then exits at once; the child writes its pid to the ``marker`` option's file and
    sleeps a minute. Every other payload gets ``{"ok": true}``."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.on = config.get("options", "on")
        self.marker = config.get("options", "marker")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        if _is_the_one(payload, self.on):
            if os.fork() == 0:
                # Not the terminal's streams (a test would wait for their end too): the rest.
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                with open(self.marker, "w") as marker:
                    marker.write(str(os.getpid()))
                time.sleep(60)
                os._exit(0)
            os._exit(3)
        return WorkerResponse({"ok": True})


class AtExit:
    """A worker that registers an exit handler when it is made, appending its process's pid to
    the ``marker`` option's file, as a connector writing out what it buffered would."""

    def __init__(self, config: StoqConfigParser) -> None:
        import atexit

        marker = config.get("options", "marker")

        def write_out() -> None:
            with open(marker, "a") as file:
                file.write(f"{os.getpid()}\n")

        atexit.register(write_out)

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"pid": os.getpid()})
