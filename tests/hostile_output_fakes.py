"""Plugins that return hostile objects rather than raise (``tests/core/test_hostile_outputs.py``).

Each class plays one role; its ``mode`` option says what it returns. Published as entry points
by the tests, so each takes the path of a third-party plugin.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator
from typing import Any

from stoq_core import (
    DecoratorResponse,
    DispatcherResponse,
    Error,
    ExtractedPayload,
    Payload,
    PayloadMeta,
    Request,
    StoqConfigParser,
    StoqResponse,
    WorkerResponse,
    hookimpl,
)


class Unprintable:
    """An object whose ``str()`` and ``repr()`` raise, with no ``__dict__`` to fall back on."""

    __slots__ = ()

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class UnreprKey(str):
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class RaisingItems(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise KeyError("items")


class RaisingSet(set):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("set iteration")


class UndecodableBytes(bytes):
    def decode(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("decode")


class ValueRaises(enum.Enum):
    ONE = 1

    @property
    def value(self) -> Any:
        raise RuntimeError("enum value")


class TurnsHostile(dict):  # type: ignore[type-arg]
    """Plain when the engine checks it; holding an ``Unprintable`` when the JSON is written."""

    def __init__(self) -> None:
        super().__init__(ok=1)
        self.reads = 0

    def items(self) -> Any:
        self.reads += 1
        return [("ok", 1)] if self.reads == 1 else [("ok", Unprintable())]


def _raising_errors() -> Iterator[str]:
    yield "first"
    raise RuntimeError("errors generator broke")


def _raising_names() -> Iterator[str]:
    yield "worker"
    raise RuntimeError("plugin_names generator broke")


def _results(mode: str) -> Any:
    if mode == "items_raise":
        return RaisingItems(a=1)
    if mode == "set_raises":
        return {"s": RaisingSet([1])}
    if mode == "bytes_raise":
        return {"b": UndecodableBytes(b"x")}
    if mode == "enum_raises":
        return {"e": ValueRaises.ONE}
    if mode == "key_repr_raises":
        return {UnreprKey("k"): object()}
    if mode == "long_keys":
        return {f"{'k' * 100}{i}": 1 for i in range(1000)}
    if mode == "long_keys_nested":
        return {f"{'k' * 100}{i}": [1] for i in range(1000)}
    if mode == "huge_int":
        return {"n": 1 << 400_000}
    if mode == "long_ints":
        return {str(i): 10**4000 for i in range(30)}
    if mode == "turns_hostile":
        return TurnsHostile()
    return None


class Worker:
    def __init__(self, config: StoqConfigParser) -> None:
        self.mode = config.get("options", "mode", fallback="ok")
        self.count = config.getint("options", "count", fallback=1000)

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Any:
        mode = self.mode
        if bytes(payload.content) != b"root":
            return WorkerResponse({"seen": True})
        if mode == "errors_raise":
            return WorkerResponse({"kept": True}, errors=_raising_errors())  # type: ignore[arg-type]
        if mode == "errors_not_iterable":
            response = WorkerResponse({"kept": True})
            response.errors = 5  # type: ignore[assignment]
            return response
        if mode == "unprintable_meta":
            meta = PayloadMeta(should_archive=Unprintable())  # type: ignore[arg-type]
            return WorkerResponse(extracted=[ExtractedPayload(b"child", meta)])
        if mode == "unprintable_error_fields":
            return WorkerResponse(
                errors=[Error("odd", Unprintable(), ["not", "an", "id"])]  # type: ignore[arg-type]
            )
        if mode == "same_extracted":
            member = ExtractedPayload(b"member")
            return WorkerResponse(extracted=[member] * self.count)
        if mode == "unscanned_dispatch_to":
            meta = PayloadMeta(should_scan=False, dispatch_to=["w"] * self.count)
            return WorkerResponse(extracted=[ExtractedPayload(b"child", meta)])
        if mode == "long_dispatch_to":
            return WorkerResponse(dispatch_to=["x" * self.count])
        return WorkerResponse(_results(mode))


class Dispatcher:
    def __init__(self, config: StoqConfigParser) -> None:
        self.mode = config.get("options", "mode", fallback="ok")

    @hookimpl
    async def get_dispatches(self, payload: Payload, request: Request) -> Any:
        if self.mode == "names_raise":
            return DispatcherResponse(plugin_names=_raising_names())
        if self.mode == "many_names":
            return DispatcherResponse(plugin_names=["odd_worker"] * 1001)
        if self.mode == "list_plugin_name":
            return DispatcherResponse(errors=[Error("odd", ["a", "list"])])  # type: ignore[arg-type]
        return DispatcherResponse()


class Decorator:
    def __init__(self, config: StoqConfigParser) -> None:
        self.mode = config.get("options", "mode", fallback="ok")

    @hookimpl
    async def decorate(self, response: StoqResponse) -> Any:
        if self.mode == "replace_fields":
            response.errors = None  # type: ignore[assignment]
            response.decorators = None  # type: ignore[assignment]
        elif self.mode == "append_unprintable":
            response.errors.append(Unprintable())  # type: ignore[arg-type]
        return DecoratorResponse({"decorated": True})


class ExitOnArrival:
    """Pickled in a plugin's process, unpickled in the stoq process as a call to sys.exit."""

    def __reduce__(self) -> Any:
        return (sys.exit, (3,))


class IsolatedWorker:
    def __init__(self, config: StoqConfigParser) -> None:
        self.mode = config.get("options", "mode", fallback="ok")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Any:
        if bytes(payload.content) == b"exit on arrival":
            return WorkerResponse({"x": ExitOnArrival()})
        return WorkerResponse({"fine": True})
