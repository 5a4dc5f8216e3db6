"""A v3 yara plugin and this one in the same environment.

v3's public yara plugin reads yara-python 4.2's ``match.strings``: it slices the
``(offset, identifier, data)`` tuples into its results and unpacks them in its dispatcher. The
plugin below is our own, written the same way. Both it and stoq-plugin-yara must work with the
yara-python installed; under 4.2 that is checked here by ``test_yara_python_42.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Stoq
from stoq_core.testing import scan_sync

V3_STOQ_FILE = """
[Core]
Name = yara
Module = oldyara

[Documentation]
Author = tests
Version = 3.0.3
Description = a v3-style yara plugin

[options]
strings_limit = 10
"""

V3_MODULE = """
import yara

from stoq import DispatcherResponse, WorkerResponse
from stoq.plugins import DispatcherPlugin, WorkerPlugin


class OldYara(WorkerPlugin, DispatcherPlugin):
    def __init__(self, config):
        super().__init__(config)
        self.strings_limit = config.getint("options", "strings_limit", fallback=None)
        self.worker_rules = yara.compile(filepath=config.get("options", "worker_rules"))
        self.dispatch_rules = yara.compile(filepath=config.get("options", "dispatch_rules"))

    async def scan(self, payload, request):
        matches = self.worker_rules.match(data=payload.content)
        return WorkerResponse(
            {"matches": [{"rule": m.rule, "strings": m.strings[: self.strings_limit]}
                         for m in matches]}
        )

    async def get_dispatches(self, payload, request):
        response = DispatcherResponse()
        for match in self.dispatch_rules.match(data=payload.content):
            name = match.meta["plugin"]
            response.plugin_names.append(name)
            response.meta[name] = {"offsets": [offset for offset, _, _ in match.strings]}
        return response
"""

GREETING = 'rule greeting { strings: $hello = "hello" $world = "world" condition: all of them }'
ROUTE = 'rule route { meta: plugin = "probe" strings: $key = "key" condition: $key }'


@pytest.fixture
def v3_plugins(tmp_path: Path) -> Path:
    """A v3 plugin directory holding the v3-style plugin, named ``yara`` as v3's was."""
    directory = tmp_path / "v3-plugins" / "oldyara"
    directory.mkdir(parents=True)
    (directory / "oldyara.stoq").write_text(V3_STOQ_FILE)
    (directory / "oldyara.py").write_text(V3_MODULE)
    for path in [directory.parent, directory, *directory.iterdir()]:
        path.chmod(path.stat().st_mode & ~0o022)  # stoQ refuses v3 plugins others can write
    return directory.parent


@pytest.fixture
def rules(write_rules: Callable[..., str]) -> dict[str, str]:
    """Options naming one rule file for each half, for either plugin."""
    return {
        "worker_rules": write_rules("greeting.yar", GREETING),
        "dispatch_rules": write_rules("route.yar", ROUTE),
    }


def strings_in_json(stoq: Stoq, content: bytes) -> Any:
    response = json.loads(str(scan_sync(stoq, content)))
    assert response["errors"] == []
    return response["results"][0]["workers"]["yara"]["matches"][0]["strings"]


def test_a_v3_yara_worker_reports_its_strings(
    make_stoq: Callable[..., Stoq], v3_plugins: Path, rules: dict[str, str]
) -> None:
    old = make_stoq(rules, plugin_dir_list=[str(v3_plugins)], always_dispatch=["yara"])

    strings = strings_in_json(old, b"hello world, hello")

    assert strings == [[0, "$hello", "hello"], [13, "$hello", "hello"], [6, "$world", "world"]]


def test_a_v3_yara_worker_and_this_plugin_report_the_same_strings(
    make_stoq: Callable[..., Stoq], v3_plugins: Path, rules: dict[str, str]
) -> None:
    old = make_stoq(rules, plugin_dir_list=[str(v3_plugins)], always_dispatch=["yara"])
    new = make_stoq(rules, always_dispatch=["yara"])

    content = b"hello world, hello"
    assert type(old.load_plugin("yara")) is not type(new.load_plugin("yara"))
    assert strings_in_json(old, content) == strings_in_json(new, content)


@pytest.mark.usefixtures("test_workers")
def test_a_v3_yara_dispatcher_that_unpacks_the_strings_dispatches(
    make_stoq: Callable[..., Stoq], v3_plugins: Path, rules: dict[str, str]
) -> None:
    stoq = make_stoq(rules, plugin_dir_list=[str(v3_plugins)], dispatchers=["yara"])

    response = scan_sync(stoq, b"a key, another key")

    assert response.errors == []
    assert response.results[0].workers["probe"] == {
        "dispatch_meta": {"probe": {"offsets": [2, 15]}}
    }
