"""After the rounds: destination archivers, decorators, connectors, and the response's JSON."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid

from core_helpers import errors_of, scan
from fakes import SAVED, STORE

from stoq_core import (
    ArchiverResponse,
    Error,
    Payload,
    PayloadMeta,
    Request,
    RequestMeta,
    StoqResponse,
    WorkerResponse,
)

PAYLOAD_RESULT_KEYS = [
    "size",
    "payload_id",
    "payload_meta",
    "plugins_run",
    "extracted_from",
    "extracted_by",
    "workers",
    "archivers",
]


def test_destination_archivers_save_every_payload_that_should_be_archived(make_stoq):
    stoq = make_stoq(
        dest_archivers=["archiver", "archiver2"],
        always_dispatch=["extractor"],
        plugin_opts={
            "extractor": {
                "extract": {"root": ["keep", {"content": "skip", "should_archive": False}]}
            }
        },
    )
    _, results = scan(stoq)
    root = results[b"root"]
    assert root.plugins_run["archivers"] == ["archiver", "archiver2"]
    assert STORE[root.archivers["archiver"]["key"]] == b"root"
    assert results[b"keep"].plugins_run["archivers"] == ["archiver", "archiver2"]
    assert results[b"skip"].plugins_run["archivers"] == []
    assert results[b"skip"].archivers == {}


def test_archive_payloads_false_skips_the_archivers(make_stoq):
    stoq = make_stoq(dest_archivers=["archiver"])
    _, results = scan(stoq, request_meta=RequestMeta(archive_payloads=False))
    assert results[b"root"].plugins_run["archivers"] == []


def test_a_failing_archiver_is_recorded_as_run_with_an_error(make_stoq):
    stoq = make_stoq(
        dest_archivers=["archiver", "archiver2"], plugin_opts={"archiver": {"fail": True}}
    )
    response, results = scan(stoq)
    assert results[b"root"].plugins_run["archivers"] == ["archiver", "archiver2"]
    assert list(results[b"root"].archivers) == ["archiver2"]
    [error] = errors_of(response, "archiver")
    assert "OSError: disk full" in error


def test_decorators_add_results_under_their_name(make_stoq):
    stoq = make_stoq(
        decorators=["decorator", "decorator2"],
        always_dispatch=["extractor"],
        plugin_opts={
            "extractor": {"extract": {"root": ["child"]}},
            "decorator2": {"errors": ["odd"]},
        },
    )
    response, _ = scan(stoq)
    assert response.decorators == {"decorator": {"payloads": 2}, "decorator2": {"payloads": 2}}
    assert [(e.error, e.plugin_name) for e in response.errors] == [("odd", "decorator2")]


def test_a_failing_decorator_adds_an_error(make_stoq):
    stoq = make_stoq(
        decorators=["decorator", "decorator2"], plugin_opts={"decorator": {"fail": True}}
    )
    response, _ = scan(stoq)
    assert list(response.decorators) == ["decorator2"]
    assert "KeyError" in errors_of(response, "decorator")[0]


def test_connectors_save_each_response(make_stoq):
    stoq = make_stoq(connectors=["connector", "connector2"])
    response, _ = scan(stoq)
    assert SAVED["connector"] == [response]
    assert SAVED["connector2"] == [response]


def test_a_failing_connector_is_recorded_in_the_response(make_stoq):
    """v3 bug: a failing connector was only logged."""
    stoq = make_stoq(
        connectors=["connector", "connector2"], plugin_opts={"connector": {"fail": True}}
    )
    response, _ = scan(stoq)
    [error] = errors_of(response, "connector")
    assert "ConnectionError: results store unreachable" in error
    assert SAVED["connector2"] == [response]


def test_the_json_has_v3s_fields_in_v3s_order(make_stoq):
    stoq = make_stoq(always_dispatch=["worker"])
    response, _ = scan(
        stoq, start=["no_such"], request_meta=RequestMeta(source="mail", extra_data={"k": 1})
    )
    data = json.loads(str(response))
    assert list(data) == ["results", "request_meta", "errors", "time", "decorators", "scan_id"]
    [result] = data["results"]
    assert list(result) == PAYLOAD_RESULT_KEYS
    assert list(result["payload_meta"]) == [
        "should_archive",
        "should_scan",
        "extra_data",
        "dispatch_to",
    ]
    assert list(result["plugins_run"]) == ["workers", "archivers"]
    assert data["request_meta"] == {
        "archive_payloads": True,
        "source": "mail",
        "extra_data": {"k": 1},
    }
    assert list(data["errors"][0]) == ["error", "plugin_name", "payload_id"]
    datetime.datetime.fromisoformat(data["time"])
    assert uuid.UUID(data["scan_id"]).version == 4
    assert uuid.UUID(result["payload_id"]).version == 4


def test_bytes_sets_and_datetimes_in_results_become_text(tmp_path):
    payload = Payload(b"x")
    when = datetime.datetime(2026, 11, 27, 12, 0, 0)
    payload.results.workers["w"] = {
        "raw": b"MZ\x90\x00",
        "tags": {"a"},
        "when": when,
        b"key": "bytes key",
    }
    response = StoqResponse(Request([payload]))
    worker = json.loads(str(response))["results"][0]["workers"]["w"]
    assert worker == {
        "raw": "MZ\\x90\x00",
        "tags": ["a"],
        "when": str(when),
        "key": "bytes key",
    }


def test_an_unserialisable_result_never_crashes_str():
    payload = Payload(b"x")
    payload.results.workers["w"] = {"obj": object(), "cycle": []}
    payload.results.workers["w"]["cycle"].append(payload.results.workers["w"]["cycle"])
    text = str(StoqResponse(Request([payload])))
    assert "object object at" in text


def test_split_gives_one_response_per_payload_and_worker(make_stoq):
    stoq = make_stoq(
        always_dispatch=["extractor", "worker"],
        plugin_opts={"extractor": {"extract": {"root": ["child"]}}},
    )
    response, _ = scan(stoq)
    pieces = response.split()
    assert len(pieces) == 4  # two payloads x two workers
    for piece in pieces:
        assert list(piece) == ["results", "request_meta", "errors", "time", "decorators", "scan_id"]
        [result] = piece["results"]
        assert len(result["workers"]) == 1
        assert piece["scan_id"] == response.scan_id
    assert {
        (p["results"][0]["payload_id"], next(iter(p["results"][0]["workers"]))) for p in pieces
    } == {(r.payload_id, w) for r in response.results for w in r.workers}


def test_reconstruct_all_subresponses_roots_a_response_at_each_payload(make_stoq):
    stoq = make_stoq(
        always_dispatch=["extractor"],
        decorators=["decorator"],
        plugin_opts={"extractor": {"extract": {"root": ["a", "b"], "a": ["a1"]}}},
    )
    response, results = scan(stoq)

    async def collect() -> list[StoqResponse]:
        return [r async for r in stoq.reconstruct_all_subresponses(response)]

    subs = asyncio.run(collect())
    ids = {content: r.payload_id for content, r in results.items()}
    assert [[r.payload_id for r in sub.results] for sub in subs] == [
        [ids[b"root"], ids[b"a"], ids[b"b"], ids[b"a1"]],
        [ids[b"a"], ids[b"a1"]],
        [ids[b"b"]],
        [ids[b"a1"]],
    ]
    assert all(sub.scan_id == response.scan_id and sub.time == response.time for sub in subs)
    # The decorators ran again on each, seeing only that sub-tree.
    assert [sub.decorators["decorator"]["payloads"] for sub in subs] == [4, 2, 1, 1]


def test_data_classes_keep_v3_constructor_defaults():
    meta = PayloadMeta()
    assert (meta.should_archive, meta.should_scan, meta.extra_data, meta.dispatch_to) == (
        True,
        True,
        {},
        [],
    )
    assert PayloadMeta(dispatch_to="yara").dispatch_to == ["yara"]
    request_meta = RequestMeta()
    assert (request_meta.archive_payloads, request_meta.source, request_meta.extra_data) == (
        True,
        None,
        {},
    )
    error = Error("boom")
    assert (error.error, error.plugin_name, error.payload_id) == ("boom", None, None)
    response = WorkerResponse()
    assert (response.results, response.extracted, response.errors, response.dispatch_to) == (
        None,
        [],
        [],
        [],
    )
    assert ArchiverResponse({"path": "/x"}).results == {"path": "/x"}
    payload = Payload(b"abc", payload_id="fixed", extracted_by="w", extracted_from="parent")
    assert (payload.results.payload_id, payload.results.size) == ("fixed", 3)
    assert (payload.results.extracted_by, payload.results.extracted_from) == (["w"], ["parent"])
    assert payload.dispatch_meta == {}
    request = Request()
    assert (request.payloads, request.errors) == ([], [])
    assert isinstance(request.request_meta, RequestMeta)


def test_payload_digest_is_computed_once_and_shared():
    payload = Payload(b"abc")
    assert payload.digest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    payload.known_digests()["sha256"] = "cached"
    assert payload.digest("sha256") == "cached"


def test_the_repr_of_a_request_or_response_counts_payloads_instead_of_listing_them():
    # asyncio formats the repr of a task's result (asyncio.run does, restoring SIGINT's
    # handler), so a repr that walked 10,000 results would be paid by every such scan.
    class Loud(PayloadMeta):
        def __repr__(self):
            raise AssertionError("a payload's metadata was formatted")

    request = Request([Payload(b"%d" % i, Loud()) for i in range(10_000)])
    request.errors.append(Error("boom"))
    response = StoqResponse(request)

    assert repr(request).startswith("<Request 10000 payloads, 1 error, RequestMeta(")
    assert repr(response) == "<StoqResponse scan_id=None, 10000 results, 1 error>"
    response.scan_id = "abc"
    assert repr(response) == "<StoqResponse scan_id='abc', 10000 results, 1 error>"


def test_asyncio_run_returning_a_response_does_not_format_its_results(make_stoq):
    formatted = []

    class Counted(PayloadMeta):
        def __repr__(self):  # reprlib, which asyncio uses, would swallow a raise
            formatted.append(self)
            return "Counted()"

    stoq = make_stoq()
    response = asyncio.run(stoq.scan(b"content", Counted()))
    assert len(response.results) == 1
    assert formatted == []
