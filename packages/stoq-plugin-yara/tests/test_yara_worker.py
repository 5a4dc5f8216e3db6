"""The worker half: what ``-a yara`` puts in ``workers['yara']``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from stoq_core import Payload, Request, Stoq
from stoq_core.testing import scan_sync

GREETING = """
rule greeting : friendly test
{
    meta:
        author = "tests"
        score = 5
    strings:
        $hello = "hello"
        $world = "world"
    condition:
        all of them
}
"""


def worker_result(stoq: Stoq, content: bytes) -> Any:
    response = scan_sync(stoq, content)
    assert response.errors == []
    return response.results[0].workers["yara"]


def test_worker_reports_rule_namespace_tags_meta_and_strings(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq(
        {"worker_rules": write_rules("greeting.yar", GREETING)}, always_dispatch=["yara"]
    )

    result = worker_result(stoq, b"hello world, hello")

    assert result == {
        "matches": [
            {
                "rule": "greeting",
                "namespace": "greeting",
                "tags": ["friendly", "test"],
                "meta": {"author": "tests", "score": 5},
                "strings": [
                    [0, "$hello", b"hello"],
                    [13, "$hello", b"hello"],
                    [6, "$world", b"world"],
                ],
            }
        ]
    }


def test_matched_bytes_are_text_in_the_json(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq(
        {"worker_rules": write_rules("greeting.yar", GREETING)}, always_dispatch=["yara"]
    )

    response = scan_sync(stoq, b"hello world")

    match = json.loads(str(response))["results"][0]["workers"]["yara"]["matches"][0]
    assert match["strings"] == [[0, "$hello", "hello"], [6, "$world", "world"]]


def test_no_match_gives_an_empty_match_list(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq(
        {"worker_rules": write_rules("greeting.yar", GREETING)}, always_dispatch=["yara"]
    )

    assert worker_result(stoq, b"nothing to see") == {"matches": []}


def test_strings_limit_caps_the_strings_of_one_match_across_identifiers(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    rules = write_rules("ab.yar", 'rule ab { strings: $a = "a" $b = "b" condition: all of them }')
    stoq = make_stoq({"worker_rules": rules, "strings_limit": 3}, always_dispatch=["yara"])

    result = worker_result(stoq, b"aabb")

    assert result["matches"][0]["strings"] == [[0, "$a", b"a"], [1, "$a", b"a"], [2, "$b", b"b"]]


def test_strings_limit_defaults_to_100(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    rules = write_rules("a.yar", 'rule a { strings: $a = "a" condition: $a }')
    stoq = make_stoq({"worker_rules": rules}, always_dispatch=["yara"])

    result = worker_result(stoq, b"a" * 150)

    assert len(result["matches"][0]["strings"]) == 100


def test_externals_are_visible_to_the_rules(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    rules = write_rules("ext.yar", 'rule from_mail { condition: source == "mail" }')
    from_mail = make_stoq(
        {"worker_rules": rules, "externals": {"source": "mail"}}, always_dispatch=["yara"]
    )
    from_web = make_stoq(
        {"worker_rules": rules, "externals": '{"source": "web"}'}, always_dispatch=["yara"]
    )

    assert [m["rule"] for m in worker_result(from_mail, b"x")["matches"]] == ["from_mail"]
    assert worker_result(from_web, b"x")["matches"] == []


# Far more work than a second allows: only a timeout ends it in reasonable time.
SLOW = (
    "rule slow { condition: for all i in (0..filesize) : "
    "(for all j in (0..1000000) : (uint8(i) + j >= 0)) }"
)


def test_the_timeout_option_is_passed_to_yara(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq({"worker_rules": write_rules("slow.yar", SLOW), "timeout": 1})
    # Called directly, so that only yara's own limit can end the match.
    worker = stoq.load_plugin("yara")

    response = asyncio.run(worker.scan(Payload(b"a" * 1000), Request()))

    assert response.results is None
    assert [e.error for e in response.errors] == [
        "YARA matching timed out after 1 seconds (option timeout)"
    ]


def test_a_timeout_in_a_scan_is_an_error_and_the_scan_goes_on(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq(
        {"worker_rules": write_rules("slow.yar", SLOW), "timeout": 1}, always_dispatch=["yara"]
    )

    response = scan_sync(stoq, b"a" * 1000)

    assert "yara" not in response.results[0].workers
    assert response.results[0].plugins_run["workers"] == ["yara"]
    assert [e.plugin_name for e in response.errors] == ["yara"]
    # stoQ's core applies the same option to the call; whichever limit fires first reports.
    assert "timed out after 1" in response.errors[0].error


def test_a_fractional_timeout_is_accepted(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    rules = write_rules("greeting.yar", GREETING)
    stoq = make_stoq({"worker_rules": rules, "timeout": "2.5"}, always_dispatch=["yara"])

    assert [m["rule"] for m in worker_result(stoq, b"hello world")["matches"]] == ["greeting"]


def test_empty_worker_rules_disables_the_worker_with_an_error(
    make_stoq: Callable[..., Stoq],
) -> None:
    stoq = make_stoq({"worker_rules": ""}, always_dispatch=["yara"])

    response = scan_sync(stoq, b"MZ")

    assert "yara" not in response.results[0].workers
    assert len(response.errors) == 1
    assert "worker_rules is empty" in response.errors[0].error


def test_rules_are_compiled_once_when_the_plugin_is_built(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    path = write_rules("greeting.yar", GREETING)
    stoq = make_stoq({"worker_rules": path}, always_dispatch=["yara"])
    with open(path, "w") as rules:
        rules.write("this is no longer a rule")

    result = worker_result(stoq, b"hello world")

    assert [m["rule"] for m in result["matches"]] == ["greeting"]


def test_concurrent_scans_share_the_compiled_rules(
    make_stoq: Callable[..., Stoq], write_rules: Callable[..., str]
) -> None:
    stoq = make_stoq(
        {"worker_rules": write_rules("greeting.yar", GREETING)}, always_dispatch=["yara"]
    )
    rules = stoq.load_plugin("yara").worker_rules

    async def scan_many() -> list[Any]:
        return await asyncio.gather(*(stoq.scan(b"hello world %d" % n) for n in range(8)))

    responses = asyncio.run(scan_many())

    assert all(r.results[0].workers["yara"]["matches"][0]["rule"] == "greeting" for r in responses)
    assert stoq.load_plugin("yara").worker_rules is rules
