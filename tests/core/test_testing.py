"""stoq_core.testing: the fixtures plugin authors opt into."""

from __future__ import annotations

import pytest

from stoq_core import WorkerResponse, hookimpl
from stoq_core.testing import call_hook, make_payload, make_request, scan_sync


class Shouter:
    def __init__(self, config):
        self.suffix = config.get("options", "suffix", fallback="!")

    @hookimpl
    async def scan(self, payload, request):
        if payload.content == b"boom":
            raise ValueError("no shouting")
        return WorkerResponse({"loud": payload.content.upper().decode() + self.suffix})


def test_stoq_with_loads_an_installed_plugin_from_its_entry_point(stoq_with, install_plugins):
    install_plugins({"shout": "fakes:Worker"})
    stoq = stoq_with("shout")
    assert set(stoq.plugins.loaded) == {"shout"}
    assert type(stoq.load_plugin("shout")).__name__ == "Worker"


def test_stoq_with_registers_a_class_with_its_options(stoq_with):
    stoq = stoq_with("shout", options={"suffix": "?!"}, plugin=Shouter)
    response = scan_sync(stoq, b"hey", start=["shout"])
    assert response.results[0].workers == {"shout": {"loud": "HEY?!"}}


def test_call_hook_returns_the_value_and_the_errors(stoq_with):
    stoq = stoq_with("shout", plugin=Shouter)
    ok = call_hook(stoq, "shout", "scan", make_payload(b"hi", filename="a.txt"))
    assert ok.value.results == {"loud": "HI!"} and ok.errors == []
    failed = call_hook(stoq, "shout", "scan", make_payload(b"boom"))
    assert failed.value is None
    assert [e.error for e in failed.errors] == ["scan failed: ValueError: no shouting"]


def test_payload_and_request_builders_fill_metadata():
    payload = make_payload(b"x", filename="a.exe", source_dir="/in", should_archive=False)
    assert payload.results.payload_meta.extra_data == {"filename": "a.exe", "source_dir": "/in"}
    assert payload.results.payload_meta.should_archive is False
    request = make_request(payload, source="mail", server="mx1")
    assert request.payloads == [payload]
    assert (request.request_meta.source, request.request_meta.extra_data) == (
        "mail",
        {"server": "mx1"},
    )


@pytest.mark.parametrize(
    "hook", ["scan", "get_dispatches", "archive", "get", "decorate", "save", "ingest"]
)
def test_every_hook_is_reachable_through_call_hook(stoq_with, hook):
    """Meta-test: call_hook drives each hookspec by name (a plugin implementing all seven)."""
    from fakes_all_hooks import AllHooks

    stoq = stoq_with("all", plugin=AllHooks)
    args = {
        "scan": (make_payload(),),
        "get_dispatches": (make_payload(),),
        "archive": (make_payload(),),
        "get": (__import__("stoq_core").ArchiverResponse({"k": 1}),),
        "decorate": (scan_sync(stoq, b"x"),),
        "save": (scan_sync(stoq, b"x"),),
        "ingest": (None,),
    }[hook]
    outcome = call_hook(stoq, "all", hook, *args)
    assert outcome.errors == []
    assert stoq.load_plugin("all").called == [hook]
