"""A v3 plugin's methods and ``required_workers`` are looked up when used, as v3 did (issue 13).

Programs (and v3's own tests) configure a plugin from a plugin directory after
``load_plugin``: they replace its ``scan`` or ``save`` with a mock, or change its
``required_workers``. Plugins installed as distributions stay bound at load time, which keeps
their calls cheap (``bench/instructions.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from stoq import Stoq, StoqResponse, WorkerResponse

NAMED = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin

class Named(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"name": self.plugin_name})
"""

BLOCKING = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin

class Blocking(WorkerPlugin):
    def scan(self, payload, request):
        return WorkerResponse({"blocking": True})
"""

SAVER = """
from stoq.plugins import ConnectorPlugin

class Saver(ConnectorPlugin):
    async def save(self, response):
        raise RuntimeError("the original save ran")
"""


@pytest.fixture
def plugins(tmp_path: Path, write_plugin: Callable[..., Path]) -> Path:
    root = tmp_path / "plugins"
    for name in ("first", "second"):
        write_plugin(root, name, NAMED)
    write_plugin(root, "blocking", BLOCKING)
    write_plugin(root, "saver", SAVER)
    return root


def make(tmp_path: Path, plugins: Path, **kwargs: Any) -> Stoq:
    return Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[str(plugins)], **kwargs)


def scan(stoq: Stoq, start: list[str]) -> StoqResponse:
    return asyncio.run(stoq.scan(b"payload", add_start_dispatch=start))


def test_a_v3_workers_scan_replaced_after_loading_is_the_one_called(tmp_path, plugins):
    stoq = make(tmp_path, plugins)
    plugin = stoq.load_plugin("first")
    plugin.scan = mock.AsyncMock(return_value=WorkerResponse({"mocked": True}))
    response = scan(stoq, ["first"])
    assert response.results[0].workers["first"] == {"mocked": True}
    plugin.scan.assert_awaited_once()


def test_a_replacement_that_is_not_a_coroutine_is_called_too(tmp_path, plugins):
    stoq = make(tmp_path, plugins)
    stoq.load_plugin("first").scan = mock.Mock(return_value=WorkerResponse({"plain": 1}))
    assert scan(stoq, ["first"]).results[0].workers["first"] == {"plain": 1}


def test_an_unchanged_plain_def_method_still_runs_as_loaded(tmp_path, plugins):
    stoq = make(tmp_path, plugins)
    assert scan(stoq, ["blocking"]).results[0].workers["blocking"] == {"blocking": True}


def test_a_v3_connectors_save_replaced_after_loading_is_the_one_called(tmp_path, plugins):
    stoq = make(tmp_path, plugins, connectors=["saver"])
    replacement = mock.AsyncMock(return_value=None)
    stoq.load_plugin("saver").save = replacement
    response = scan(stoq, [])
    replacement.assert_awaited_once()
    assert response.errors == []  # the original save would have failed


def test_required_workers_changed_after_loading_are_honoured(tmp_path, plugins):
    stoq = make(tmp_path, plugins)
    second = stoq.load_plugin("second")
    # Scanned once with no requirement: both run in the first round, in the order given.
    ran = scan(stoq, ["second", "first"]).results[0].plugins_run["workers"]
    assert ran == ["second", "first"]
    second.required_workers = {"first"}
    assert scan(stoq, ["second"]).results[0].plugins_run["workers"] == ["first", "second"]


def test_an_installed_plugin_stays_bound_at_load(tmp_path, plugins):
    stoq = make(tmp_path, plugins)
    stoq.plugins.register("installed", stoq.load_plugin("first").__class__)
    installed = stoq.plugins.load("installed")
    assert installed.late is False
    assert installed.callers["scan"] == installed.hooks["scan"]
    assert stoq.plugins.load("first").late is True
