"""The dispatcher half: ``-R yara`` routes payloads to the workers its rules name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from stoq_core import Stoq

ROUTES = """
rule route_probe : routing
{
    meta:
        plugin = " Probe ,MARKER "
        note = "sent on"
    strings:
        $marker = "route me"
    condition:
        $marker
}

rule keep_out_of_archive
{
    meta:
        save = "FALSE"
    strings:
        $secret = "do not keep"
    condition:
        $secret
}

rule keep_in_archive
{
    meta:
        save = "True"
    strings:
        $kept = "keep me"
    condition:
        $kept
}

rule carve
{
    meta:
        plugin = "carver"
    strings:
        $carve = "carve me"
    condition:
        $carve
}
"""

pytestmark = pytest.mark.usefixtures("test_workers")


@pytest.fixture
def stoq(make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]) -> Stoq:
    return make_stoq({"dispatch_rules": write_rules("routes.yar", ROUTES)}, dispatchers=["yara"])


def test_plugin_meta_dispatches_to_each_named_worker_trimmed_and_lower_cased(stoq: Stoq) -> None:
    response = asyncio.run(stoq.scan(b"please route me"))

    assert response.errors == []
    assert sorted(response.results[0].plugins_run["workers"]) == ["marker", "probe"]


def test_the_match_is_kept_in_dispatch_meta_under_the_rule_name(stoq: Stoq) -> None:
    response = asyncio.run(stoq.scan(b"please route me"))

    assert response.results[0].workers["probe"]["dispatch_meta"] == {
        "route_probe": {
            "rule": "route_probe",
            "namespace": "routes",
            "tags": ["routing"],
            "meta": {"plugin": " Probe ,MARKER ", "note": "sent on"},
        }
    }


def test_save_false_keeps_the_payload_out_of_the_archivers(stoq: Stoq) -> None:
    response = asyncio.run(stoq.scan(b"do not keep this"))

    assert response.results[0].payload_meta.should_archive is False


def test_save_true_leaves_the_payload_archivable(stoq: Stoq) -> None:
    response = asyncio.run(stoq.scan(b"keep me"))

    assert response.results[0].payload_meta.should_archive is True


def test_no_match_dispatches_nothing(stoq: Stoq) -> None:
    response = asyncio.run(stoq.scan(b"unremarkable"))

    assert response.results[0].plugins_run["workers"] == []
    assert response.errors == []


def test_a_payload_is_matched_once_however_many_rounds_the_scan_has(stoq: Stoq) -> None:
    response = asyncio.run(stoq.scan(b"carve me"))

    # Round 1 carves a child; rounds 2 and 3 ask about both payloads again.
    assert len(response.results) == 2
    assert response.results[0].plugins_run["workers"] == ["carver"]
    assert stoq.load_plugin("yara").dispatch_scans == 2


def test_empty_dispatch_rules_disables_the_dispatcher(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    routes = write_rules("routes.yar", ROUTES)
    stoq = make_stoq({"worker_rules": routes, "dispatch_rules": ""}, dispatchers=["yara"])

    response = asyncio.run(stoq.scan(b"please route me"))

    assert response.results[0].plugins_run["workers"] == []
    assert response.errors == []
    assert stoq.load_plugin("yara").dispatch_scans == 0


def test_a_dispatcher_timeout_is_reported_once(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    slow = write_rules(
        "slow.yar",
        # Slow on the 1000-byte root only, so the carved child does not time out as well.
        "rule slow { condition: filesize > 100 and for all i in (0..filesize) : "
        "(for all j in (0..1000000) : (uint8(i) + j >= 0)) }",
    )
    stoq = make_stoq(
        {"dispatch_rules": slow, "timeout": 1}, dispatchers=["yara"], always_dispatch=["carver"]
    )

    response = asyncio.run(stoq.scan(b"a" * 1000))

    # stoQ's core applies the same option to the call; whichever limit fires first reports.
    timeouts = [e for e in response.errors if "timed out after 1" in e.error]
    assert [(e.plugin_name, e.payload_id) for e in timeouts] == [
        ("yara", response.results[0].payload_id)
    ]
    assert stoq.load_plugin("yara").dispatch_scans == 2  # the root once, the carved child once
