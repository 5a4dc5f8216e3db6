"""``import stoq`` is stoQ v3's API: every name in it but ``Stoq`` is the stoq_core object itself,
and ``Stoq`` is the core engine with v3's tables of loaded plugins."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stoq_core
import stoq_core.config
import stoq_core.helpers
import stoq_core.plugins
from stoq_core import StoqConfigParser

# Every import path the v3 documentation and the public v3 plugins use.
V3_NAMES = {
    "stoq": [
        "Stoq",
        "RequestMeta",
        "Error",
        "Payload",
        "PayloadMeta",
        "Request",
        "WorkerResponse",
        "DispatcherResponse",
        "ArchiverResponse",
        "DecoratorResponse",
        "ExtractedPayload",
        "StoqResponse",
        "PayloadResults",
        "StoqException",
        "StoqPluginException",
        "StoqPluginNotFound",
    ],
    "stoq.core": ["Stoq"],
    "stoq.data_classes": [
        "ArchiverResponse",
        "DecoratorResponse",
        "DispatcherResponse",
        "Error",
        "ExtractedPayload",
        "Payload",
        "PayloadMeta",
        "PayloadResults",
        "Request",
        "RequestMeta",
        "StoqResponse",
        "WorkerResponse",
    ],
    "stoq.exceptions": ["StoqException", "StoqPluginNotFound", "StoqPluginException"],
    "stoq.helpers": [
        "StoqConfigParser",
        "dumps",
        "get_md5",
        "get_sha1",
        "get_sha256",
        "get_sha512",
        "merge_dicts",
    ],
    "stoq.plugins": [
        "BasePlugin",
        "WorkerPlugin",
        "DispatcherPlugin",
        "ArchiverPlugin",
        "ConnectorPlugin",
        "DecoratorPlugin",
        "ProviderPlugin",
    ],
    "stoq.plugins.base": ["BasePlugin"],
    "stoq.plugins.worker": ["WorkerPlugin"],
    "stoq.plugins.dispatcher": ["DispatcherPlugin"],
    "stoq.plugins.archiver": ["ArchiverPlugin"],
    "stoq.plugins.connector": ["ConnectorPlugin"],
    "stoq.plugins.decorator": ["DecoratorPlugin"],
    "stoq.plugins.provider": ["ProviderPlugin"],
}

CORE_MODULES = (stoq_core, stoq_core.plugins, stoq_core.helpers, stoq_core.config)


def _core_object(name: str) -> Any:
    for module in CORE_MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"stoq_core has no {name}")


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in V3_NAMES.items() for name in names if name != "Stoq"],
)
def test_every_v3_name_but_stoq_is_the_stoq_core_object(module: str, name: str) -> None:
    # Identity, not equality: one implementation, so isinstance checks and plugin base-class
    # detection agree whichever import path a plugin used.
    assert getattr(importlib.import_module(module), name) is _core_object(name)


@pytest.mark.parametrize("module", sorted(V3_NAMES))
def test_star_import_of_every_v3_module_gives_its_documented_names(module: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {module} import *", namespace)
    assert set(V3_NAMES[module]) <= set(namespace)


def test_stoq_version_is_the_core_version() -> None:
    import stoq

    assert stoq.__version__ == stoq_core.__version__


def test_v3s_stoq_is_the_engine_adding_only_v3s_plugin_tables() -> None:
    import stoq
    import stoq.core

    assert stoq.Stoq is stoq.core.Stoq
    assert stoq.Stoq.__mro__[1] is stoq_core.engine.Stoq
    added = {name for name in vars(stoq.Stoq) if not name.startswith("__")}
    assert added == {
        "_loaded_plugins",
        "_loaded_provider_plugins",
        "_loaded_source_archiver_plugins",
        "_loaded_dest_archiver_plugins",
        "_loaded_dispatcher_plugins",
        "_loaded_decorator_plugins",
        "_loaded_connector_plugins",
    }


def test_v3s_plugin_tables_show_each_roles_plugin_objects(
    plugins_dir: Path, make_stoq: Callable[..., Any]
) -> None:
    s = make_stoq(plugin_dir_list=[str(plugins_dir)], dispatchers=["both"], decorators=["stamp"])
    assert s._loaded_dispatcher_plugins == {"both": s.load_plugin("both")}
    assert s._loaded_decorator_plugins == {"stamp": s.load_plugin("stamp")}
    assert s._loaded_provider_plugins == {}
    assert s._loaded_source_archiver_plugins == s._loaded_dest_archiver_plugins == {}
    assert s._loaded_connector_plugins == []  # a list in v3


def test_v3s_loaded_plugins_table_grows_as_a_scan_loads_workers(
    plugins_dir: Path, make_stoq: Callable[..., Any]
) -> None:
    s = make_stoq(plugin_dir_list=[str(plugins_dir)])
    assert s._loaded_plugins == {}
    asyncio.run(s.scan(b"a|b", add_start_dispatch=["carve"]))
    assert s._loaded_plugins == {"carve": s.load_plugin("carve")}


# The constructor calls the v3 documentation shows, each with what v3 gave back.
DOCUMENTED_CALLS = {
    "WorkerResponse(results, extracted=...)": (
        lambda s: s.WorkerResponse({"is_bad": True}, extracted=[s.ExtractedPayload(b"x")]),
        lambda r: r.results == {"is_bad": True} and r.extracted[0].content == b"x",
    ),
    "DispatcherResponse() then meta[...] =": (
        lambda s: _with_meta(s.DispatcherResponse()),
        lambda r: r.meta == {"example_key": "Useful metadata info"} and r.plugin_names == [],
    ),
    "DispatcherResponse(plugin_names=, meta=)": (
        lambda s: s.DispatcherResponse(plugin_names=["yara", "exif"], meta={"hit": "exe_file"}),
        lambda r: r.plugin_names == ["yara", "exif"] and r.meta == {"hit": "exe_file"},
    ),
    "ArchiverResponse({'path': ...})": (
        lambda s: s.ArchiverResponse({"path": "/tmp/x"}),
        lambda r: r.results == {"path": "/tmp/x"} and r.errors == [],
    ),
    "DecoratorResponse(results=, errors=['a string'])": (
        lambda s: s.DecoratorResponse(results={"k": "v"}, errors=["This plugin failed"]),
        lambda r: r.results == {"k": "v"} and r.errors == ["This plugin failed"],
    ),
    "PayloadMeta(dispatch_to='yara')": (
        lambda s: s.PayloadMeta(dispatch_to="yara"),
        lambda r: r.dispatch_to == ["yara"] and r.should_scan and r.should_archive,
    ),
    "PayloadMeta(should_scan=False)": (
        lambda s: s.PayloadMeta(should_scan=False),
        lambda r: r.should_scan is False and r.extra_data == {},
    ),
    "ExtractedPayload(content=, payload_meta=)": (
        lambda s: s.ExtractedPayload(
            content=b"data", payload_meta=s.PayloadMeta(should_scan=False)
        ),
        lambda r: r.content == b"data" and r.payload_meta.should_scan is False,
    ),
    "Payload(bytes, PayloadMeta(extra_data=))": (
        lambda s: s.Payload(b"MZ..", s.PayloadMeta(extra_data={"filename": "bad.exe"})),
        lambda r: (
            r.results.size == 4 and r.results.payload_meta.extra_data["filename"] == "bad.exe"
        ),
    ),
    "Request(payloads=[payload], request_meta=RequestMeta())": (
        lambda s: s.Request(payloads=[s.Payload(b"content to scan")], request_meta=s.RequestMeta()),
        lambda r: len(r.payloads) == 1 and r.request_meta.archive_payloads and r.errors == [],
    ),
    "RequestMeta(source=, extra_data=)": (
        lambda s: s.RequestMeta(source="my_mail", extra_data={"server": "mail-server-01"}),
        lambda r: r.source == "my_mail" and r.extra_data == {"server": "mail-server-01"},
    ),
    "Error(error=, plugin_name=, payload_id=)": (
        lambda s: s.Error(error="message", plugin_name="p", payload_id="id"),
        lambda r: (r.error, r.plugin_name, r.payload_id) == ("message", "p", "id"),
    ),
}


def _with_meta(response: Any) -> Any:
    response.meta["example_key"] = "Useful metadata info"
    return response


@pytest.mark.parametrize("call", sorted(DOCUMENTED_CALLS))
def test_documented_v3_constructor_calls_build_what_v3_built(call: str) -> None:
    import stoq

    build, check = DOCUMENTED_CALLS[call]
    assert check(build(stoq))


def _plugin_config(name: str, **options: str) -> StoqConfigParser:
    config = StoqConfigParser()
    config.read_dict(
        {"Core": {"Name": name}, "Documentation": {"Version": "3.0.1"}, "options": options}
    )
    return config


def test_a_v3_plugin_constructed_directly_gets_its_name_log_and_config() -> None:
    # v3 plugin authors' own unit tests build their plugin from a config, without a Stoq.
    from stoq.plugins import WorkerPlugin

    class ExampleWorker(WorkerPlugin):
        async def scan(self, payload: Any, request: Any) -> None:
            return None

    config = _plugin_config("example", useful="true")
    plugin = ExampleWorker(config)
    assert plugin.plugin_name == "example"
    assert plugin.config is config
    assert isinstance(plugin.log, logging.Logger) and plugin.log.name == "stoq.example"
    assert plugin.__version__ == "3.0.1"


def test_a_v3_worker_reads_required_workers_from_its_options() -> None:
    from stoq.plugins import WorkerPlugin

    plugin = WorkerPlugin(_plugin_config("a", required_workers="hash, exif"))
    assert plugin.required_workers == {"hash", "exif"}


def test_v3_helpers_hash_like_hashlib() -> None:
    from stoq.helpers import get_md5, get_sha1, get_sha256, get_sha512

    digests = [f(b"abc") for f in (get_md5, get_sha1, get_sha256, get_sha512)]
    assert digests[0] == "900150983cd24fb0d6963f7d28e17f72"
    assert digests[2] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert [len(d) for d in digests] == [32, 40, 64, 128]


def test_v3_helpers_dumps_writes_bytes_and_sets_as_json() -> None:
    import json

    from stoq.helpers import dumps

    assert json.loads(dumps({"raw": b"MZ", "tags": {"a"}})) == {"raw": "MZ", "tags": ["a"]}
