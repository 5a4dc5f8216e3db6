"""stoq_core.testing: the fixtures plugin authors opt into."""

from __future__ import annotations

import pytest

from stoq_core import Error, WorkerResponse, hookimpl
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


# -- what a plugin test sees of errors, names and descriptions (issue 15, item 12) ----------


def test_call_hook_gives_the_errors_a_response_carries_as_the_scan_records_them(
    stoq_with, install_plugins
):
    install_plugins({"errs": "fake_plugin_identity:ReturnsErrors"})
    stoq = stoq_with("errs")
    payload = make_payload(b"abc")

    outcome = call_hook(stoq, "errs", "scan", payload)
    scanned = scan_sync(stoq, make_payload(b"abc"), start=["errs"])

    assert outcome.value.results == {"size": 3}
    assert all(type(error) is Error for error in outcome.errors)
    assert [e.to_dict() for e in outcome.errors] == [
        {
            "error": "truncated header",
            "plugin_name": "errs",
            "payload_id": payload.results.payload_id,
        },
        {"error": "bad checksum", "plugin_name": None, "payload_id": "elsewhere"},
    ]
    scan_payload_id = scanned.results[0].payload_id
    assert [(e.error, e.plugin_name, e.payload_id) for e in scanned.errors] == [
        ("truncated header", "errs", scan_payload_id),
        ("bad checksum", None, "elsewhere"),
    ]


def test_call_hook_records_a_response_of_the_wrong_type_as_the_scan_does(
    stoq_with, install_plugins
):
    install_plugins({"dicty": "fake_plugin_identity:ReturnsADict"})
    stoq = stoq_with("dicty")

    outcome = call_hook(stoq, "dicty", "scan", make_payload(b"abc"))
    scanned = scan_sync(stoq, b"abc", start=["dicty"])

    assert [e.error for e in outcome.errors] == [e.error for e in scanned.errors]
    assert outcome.errors[0].error == "returned dict, expected WorkerResponse or None"


def test_call_hook_of_a_hook_returning_no_response_records_no_error(stoq_with):
    from fakes_all_hooks import AllHooks

    stoq = stoq_with("all", plugin=AllHooks)
    outcome = call_hook(stoq, "all", "save", scan_sync(stoq, b"x"))
    assert outcome.errors == []


@pytest.mark.parametrize(
    "target",
    [
        "fake_plugin_identity:PlainNamed",
        "fake_plugin_identity:V3Named",
        "fake_plugin_identity:V3NamedBeforeSuper",
    ],
)
def test_plugin_name_is_the_registered_name_inside_init(stoq_with, install_plugins, target):
    install_plugins({"who_am_i": target})
    stoq = stoq_with("who_am_i")

    plugin = stoq.load_plugin("who_am_i")

    assert plugin.name_at_init == "who_am_i"
    assert plugin.plugin_name == "who_am_i"
    response = scan_sync(stoq, b"x", start=["who_am_i"])
    assert response.results[0].workers["who_am_i"] == {"name_at_init": "who_am_i"}


def test_plugin_name_is_set_inside_init_of_a_class_given_to_stoq_with(stoq_with):
    from fake_plugin_identity import PlainNamed

    assert stoq_with("given", plugin=PlainNamed).load_plugin("given").name_at_init == "given"


def test_a_plugins_description_attribute_is_its_description_in_the_listing(
    stoq_with, install_plugins
):
    install_plugins(
        {"described": "fake_plugin_identity:PlainNamed", "plain": "fake_plugin_identity:V3Named"},
        dist="stoq-plugin-identity",
    )
    infos = stoq_with().list_plugins()

    assert infos["described"].description == "reports the name it had in __init__"
    assert infos["plain"].description == "stoq-plugin-identity for tests"
