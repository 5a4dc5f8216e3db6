"""A v3 plugin's methods and ``required_workers`` are looked up when used, as v3 did (issue 13).

Programs (and v3's own tests) configure a plugin after ``load_plugin``: they replace its
``scan`` or ``save`` with a mock, or change its ``required_workers``. A native plugin (pluggy
hook implementations) stays bound at load time, which keeps its calls cheap.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

from stoq import Payload, Request, Stoq, StoqResponse, WorkerResponse
from stoq.plugins import ConnectorPlugin, WorkerPlugin
from stoq_core import hookimpl


class Named(WorkerPlugin):
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"name": self.plugin_name})


class Blocking(WorkerPlugin):
    def scan(self, payload: Payload, request: Request) -> WorkerResponse:  # type: ignore[override]
        return WorkerResponse({"blocking": True})


class Saver(ConnectorPlugin):
    saved: ClassVar[list[str]] = []

    async def save(self, response: StoqResponse) -> None:
        Saver.saved.append("class")


class Native:
    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"native": True})


def make(tmp_path: Path, **kwargs: Any) -> Stoq:
    return Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[], **kwargs)


def scan(stoq: Stoq, start: list[str]) -> StoqResponse:
    return asyncio.run(stoq.scan(b"payload", add_start_dispatch=start))


def test_a_v3_workers_scan_replaced_after_loading_is_the_one_called(tmp_path):
    stoq = make(tmp_path)
    stoq.plugins.register("named", Named)
    plugin = stoq.load_plugin("named")
    plugin.scan = mock.AsyncMock(return_value=WorkerResponse({"mocked": True}))
    response = scan(stoq, ["named"])
    assert response.results[0].workers["named"] == {"mocked": True}
    plugin.scan.assert_awaited_once()


def test_a_replacement_that_is_not_a_coroutine_is_called_too(tmp_path):
    stoq = make(tmp_path)
    stoq.plugins.register("named", Named)
    stoq.load_plugin("named").scan = mock.Mock(return_value=WorkerResponse({"plain": 1}))
    assert scan(stoq, ["named"]).results[0].workers["named"] == {"plain": 1}


def test_an_unchanged_plain_def_method_still_runs_in_a_thread(tmp_path):
    stoq = make(tmp_path)
    stoq.plugins.register("blocking", Blocking)
    assert scan(stoq, ["blocking"]).results[0].workers["blocking"] == {"blocking": True}


def test_a_v3_connectors_save_replaced_after_loading_is_the_one_called(tmp_path, install_plugins):
    install_plugins({"saver": "test_compat_late_binding:Saver"}, import_path=Path(__file__).parent)
    stoq = make(tmp_path, connectors=["saver"])
    replacement = mock.AsyncMock(return_value=None)
    stoq.load_plugin("saver").save = replacement
    Saver.saved.clear()
    scan(stoq, [])
    replacement.assert_awaited_once()
    assert Saver.saved == []


def test_required_workers_changed_after_loading_are_honoured(tmp_path):
    stoq = make(tmp_path)
    for name in ("first", "second"):
        stoq.plugins.register(name, Named)
    second = stoq.load_plugin("second")
    # Scanned once with no requirement: both run in the first round.
    assert scan(stoq, ["second", "first"]).results[0].plugins_run["workers"] == [
        "second",
        "first",
    ]
    second.required_workers = {"first"}
    ran = scan(stoq, ["second"]).results[0].plugins_run["workers"]
    assert ran == ["first", "second"]


def test_a_native_plugin_stays_bound_at_load(tmp_path):
    stoq = make(tmp_path)
    stoq.plugins.register("native", Native())
    loaded = stoq.plugins.load("native")
    assert loaded.late is False
    assert loaded.callers["scan"] == loaded.hooks["scan"]
