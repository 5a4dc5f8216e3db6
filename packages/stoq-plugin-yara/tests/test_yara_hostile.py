"""yara against hostile settings and payloads."""

from __future__ import annotations

from collections.abc import Callable

from stoq_core import Stoq
from stoq_core.testing import call_hook, make_payload, scan_sync

GREETING = 'rule greeting { strings: $hello = "hello" condition: $hello }'
ROUTE = 'rule route { meta: plugin = "nothing" strings: $hello = "hello" condition: $hello }'


def test_a_timeout_beyond_what_yara_can_count_still_scans(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    # yara takes whole seconds as a C int: 3e9 seconds once failed every scan with
    # "OverflowError: signed integer is greater than maximum".
    stoq = make_stoq(
        {"worker_rules": write_rules("greeting.yar", GREETING), "timeout": "3e9"},
        always_dispatch=["yara"],
    )

    response = scan_sync(stoq, b"hello")

    assert response.errors == []
    assert [m["rule"] for m in response.results[0].workers["yara"]["matches"]] == ["greeting"]


def test_a_timeout_beyond_what_yara_can_count_still_dispatches(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq({"dispatch_rules": write_rules("route.yar", ROUTE), "timeout": "3e9"})

    outcome = call_hook(stoq, "yara", "get_dispatches", make_payload(b"hello"))

    assert outcome.errors == []
    assert outcome.value.plugin_names == ["nothing"]
