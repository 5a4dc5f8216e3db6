"""One test per hookspec, named ``test_hook_<hook>`` (tests/test_docs.py checks they exist).

Each drives its hook through the engine, the way a run calls it: the plugins below are published
as entry points of a test distribution, named in the role that calls the hook, and the test
asserts what the hook's return did to the response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import (
    ArchiverResponse,
    DecoratorResponse,
    DispatcherResponse,
    Payload,
    PayloadMeta,
    Request,
    Stoq,
    StoqConfigParser,
    StoqResponse,
    WorkerResponse,
    hookimpl,
)
from stoq_core.testing import scan_sync


class Measure:
    """Worker: the payload's size and the ``label`` option."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.label = config.get("options", "label", fallback="measured")

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"label": self.label, "size": len(payload.content)})


class Router:
    """Dispatcher: payloads starting with ``route:`` go to the worker ``hooks_measure``."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def get_dispatches(self, payload: Payload, request: Request) -> DispatcherResponse:
        if bytes(payload.content).startswith(b"route:"):
            return DispatcherResponse(["hooks_measure"], meta={"prefix": "route:"})
        return DispatcherResponse()


class Shelf:
    """Archiver: ``archive`` writes a payload to ``shelf_dir``; ``get`` reads one back."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.shelf = Path(config.get("options", "shelf_dir", fallback="shelf"))

    @hookimpl
    def archive(self, payload: Payload, request: Request) -> ArchiverResponse:
        path = self.shelf / payload.digest("sha256")
        path.write_bytes(bytes(payload.content))
        return ArchiverResponse({"path": str(path)})

    @hookimpl
    def get(self, task: ArchiverResponse) -> Payload:
        assert isinstance(task.results, dict)
        path = Path(task.results["path"])
        return Payload(path.read_bytes(), PayloadMeta(extra_data={"filename": path.name}))


class Counter:
    """Decorator: how many payloads and errors a response holds."""

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def decorate(self, response: StoqResponse) -> DecoratorResponse:
        return DecoratorResponse(
            {"payloads": len(response.results), "errors": len(response.errors)}
        )


class Keeper:
    """Connector: keeps every response it is given."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.saved: list[StoqResponse] = []

    @hookimpl
    async def save(self, response: StoqResponse) -> None:
        self.saved.append(response)


class Feeder:
    """Provider: queues a payload per item of ``texts``, then ``{archiver: task}`` per ``tasks``."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.texts = config.getlist("options", "texts", fallback=[])
        self.tasks = config.getjson("options", "tasks", fallback={})

    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        for text in self.texts:
            await queue.put(Payload(text.encode()))
        for archiver, tasks in self.tasks.items():
            for task in tasks:
                await queue.put({archiver: task})


PLUGINS = {
    "hooks_measure": "Measure",
    "hooks_router": "Router",
    "hooks_shelf": "Shelf",
    "hooks_counter": "Counter",
    "hooks_keeper": "Keeper",
    "hooks_feeder": "Feeder",
}


@pytest.fixture(autouse=True)
def hook_plugins(install_plugins: Callable[..., Path]) -> None:
    """The plugins above, published as entry points (this module is already imported)."""
    install_plugins({name: f"{__name__}:{cls}" for name, cls in PLUGINS.items()})


def run_all(stoq: Stoq) -> list[StoqResponse]:
    responses: list[StoqResponse] = []
    stats = asyncio.run(stoq.run(on_response=responses.append))
    assert stats.failed == 0
    return responses


def test_hook_scan(stoq_with: Callable[..., Stoq]) -> None:
    stoq = stoq_with("hooks_measure", options={"label": "from the option"})

    response = scan_sync(stoq, b"twelve bytes", start=["hooks_measure"])

    assert response.errors == []
    assert response.results[0].workers == {
        "hooks_measure": {"label": "from the option", "size": 12}
    }
    assert response.results[0].plugins_run["workers"] == ["hooks_measure"]


def test_hook_get_dispatches(stoq_with: Callable[..., Stoq]) -> None:
    stoq = stoq_with("hooks_router", dispatchers=["hooks_router"])

    routed = scan_sync(stoq, b"route: me")
    ignored = scan_sync(stoq, b"leave me")

    assert routed.errors == [] and ignored.errors == []
    assert routed.results[0].workers["hooks_measure"] == {"label": "measured", "size": 9}
    assert ignored.results[0].plugins_run["workers"] == []


def test_hook_archive(stoq_with: Callable[..., Stoq], tmp_path: Path) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    stoq = stoq_with(
        "hooks_shelf", options={"shelf_dir": str(shelf)}, dest_archivers=["hooks_shelf"]
    )

    response = scan_sync(stoq, b"archive me")

    assert response.errors == []
    result = response.results[0]
    assert result.plugins_run["archivers"] == ["hooks_shelf"]
    saved = Path(result.archivers["hooks_shelf"]["path"])
    assert saved.parent == shelf
    assert saved.read_bytes() == b"archive me"


def test_hook_get(stoq_with: Callable[..., Stoq], tmp_path: Path) -> None:
    stored = tmp_path / "stored.bin"
    stored.write_bytes(b"from the shelf")
    stoq = stoq_with(
        "hooks_feeder",
        options={"tasks": {"hooks_shelf": [{"path": str(stored)}]}},
        providers=["hooks_feeder"],
        source_archivers=["hooks_shelf"],
        always_dispatch=["hooks_measure"],
    )

    [response] = run_all(stoq)

    assert response.errors == []
    [result] = response.results
    assert result.payload_meta.extra_data == {"filename": "stored.bin"}
    assert result.workers["hooks_measure"]["size"] == len(b"from the shelf")


def test_hook_decorate(stoq_with: Callable[..., Stoq]) -> None:
    stoq = stoq_with("hooks_counter", decorators=["hooks_counter"])

    response = scan_sync(stoq, b"decorate me", start=["not_installed"])

    # The decorator sees the finished response: its one payload and the worker's error.
    assert response.decorators == {"hooks_counter": {"payloads": 1, "errors": 1}}


def test_hook_save(stoq_with: Callable[..., Stoq]) -> None:
    stoq = stoq_with("hooks_keeper", connectors=["hooks_keeper"])

    first = scan_sync(stoq, b"one")
    second = scan_sync(stoq, b"two")

    assert stoq.load_plugin("hooks_keeper").saved == [first, second]


def test_hook_ingest(stoq_with: Callable[..., Stoq]) -> None:
    stoq = stoq_with(
        "hooks_feeder",
        options={"texts": ["a", "bb", "ccc"]},
        providers=["hooks_feeder"],
        always_dispatch=["hooks_measure"],
    )

    responses = run_all(stoq)

    sizes = sorted(r.results[0].workers["hooks_measure"]["size"] for r in responses)
    assert sizes == [1, 2, 3]
