"""The JSON text is v3's: ``str()`` of every data class, UTF-8 text, datetimes, bytes, merging.

Each test states one behaviour v3 users see when they print an object or read the output.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stoq
import stoq.helpers
import stoq_core.helpers
from stoq.helpers import dumps, merge_dicts

# -- str() of the data classes -------------------------------------------------------------

# Each class as a v3 program builds it, and the keys its JSON holds, in v3's order.
FIELDS: dict[str, tuple[Callable[[], Any], list[str]]] = {
    "Error": (
        lambda: stoq.Error("it broke", "worker", "id-1"),
        ["error", "plugin_name", "payload_id"],
    ),
    "PayloadMeta": (
        lambda: stoq.PayloadMeta(extra_data={"filename": "a.exe"}),
        ["should_archive", "should_scan", "extra_data", "dispatch_to"],
    ),
    "RequestMeta": (
        lambda: stoq.RequestMeta(source="mail"),
        ["archive_payloads", "source", "extra_data"],
    ),
    "PayloadResults": (
        lambda: stoq.Payload(b"abc").results,
        [
            "size",
            "payload_id",
            "payload_meta",
            "plugins_run",
            "extracted_from",
            "extracted_by",
            "workers",
            "archivers",
        ],
    ),
    "Payload": (lambda: stoq.Payload(b"abc"), ["content", "dispatch_meta", "results"]),
    "Request": (
        lambda: stoq.Request([stoq.Payload(b"abc")], errors=[stoq.Error("e")]),
        ["payloads", "request_meta", "errors"],
    ),
    "ExtractedPayload": (lambda: stoq.ExtractedPayload(b"x"), ["content", "payload_meta"]),
    "WorkerResponse": (
        lambda: stoq.WorkerResponse({"k": 1}, extracted=[stoq.ExtractedPayload(b"x")]),
        ["results", "extracted", "errors", "dispatch_to"],
    ),
    "DispatcherResponse": (
        lambda: stoq.DispatcherResponse(["hash"], meta={"rule": "mz"}),
        ["plugin_names", "meta", "errors"],
    ),
    "ArchiverResponse": (lambda: stoq.ArchiverResponse({"path": "/x"}), ["results", "errors"]),
    "DecoratorResponse": (lambda: stoq.DecoratorResponse({"tag": 1}), ["results", "errors"]),
    "StoqResponse": (
        lambda: stoq.StoqResponse(stoq.Request([stoq.Payload(b"abc")])),
        ["results", "request_meta", "errors", "time", "decorators", "scan_id"],
    ),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_str_of_each_data_class_is_its_json_with_v3s_fields_in_order(name: str) -> None:
    build, fields = FIELDS[name]
    assert list(json.loads(str(build()))) == fields


def test_str_of_a_payload_writes_its_content_as_text_and_its_results_nested() -> None:
    payload = stoq.Payload(b"MZ\x90", stoq.PayloadMeta(extra_data={"filename": "a.exe"}))
    printed = json.loads(str(payload))
    assert printed["content"] == "MZ\\x90"
    assert printed["results"]["payload_meta"]["extra_data"] == {"filename": "a.exe"}
    assert printed["results"]["payload_id"] == payload.results.payload_id


def test_str_of_a_request_holds_its_payloads_and_errors_as_objects() -> None:
    request = stoq.Request([stoq.Payload(b"one")], errors=[stoq.Error("bad", "w"), "a bare string"])
    printed = json.loads(str(request))
    assert [p["content"] for p in printed["payloads"]] == ["one"]
    assert printed["errors"] == [
        {"error": "bad", "plugin_name": "w", "payload_id": None},
        "a bare string",
    ]


def test_str_of_a_worker_response_writes_extracted_payloads_with_their_meta() -> None:
    response = stoq.WorkerResponse(
        extracted=[stoq.ExtractedPayload(b"inner", stoq.PayloadMeta(should_scan=False))]
    )
    [extracted] = json.loads(str(response))["extracted"]
    assert extracted["content"] == "inner" and extracted["payload_meta"]["should_scan"] is False


def test_str_of_a_worker_response_leaves_an_extracted_iterator_unread() -> None:
    children = iter([stoq.ExtractedPayload(b"a"), stoq.ExtractedPayload(b"b")])
    response = stoq.WorkerResponse(extracted=children)
    str(response)
    assert [child.content for child in response.extracted] == [b"a", b"b"]


@pytest.mark.parametrize("time", [[], 1.5, {"at": "noon"}, "yesterday"])
def test_a_response_time_given_as_any_value_is_written_as_given(time: Any) -> None:
    response = stoq.StoqResponse(stoq.Request(), time)
    assert json.loads(str(response))["time"] == time


def test_a_response_made_without_a_time_writes_now_in_iso_8601() -> None:
    before = datetime.datetime.now()
    written = json.loads(str(stoq.StoqResponse(stoq.Request())))["time"]
    assert "T" in written
    assert datetime.datetime.fromisoformat(written) >= before.replace(microsecond=0)


def test_dumps_of_a_data_class_writes_the_same_json_as_str() -> None:
    meta = stoq.RequestMeta(extra_data={"a": 1})
    assert json.loads(dumps({"meta": meta}))["meta"] == json.loads(str(meta))


# -- the JSON text -------------------------------------------------------------------------


def test_non_ascii_text_is_written_as_itself_not_escaped() -> None:
    assert dumps({"name": "Jürgen 猫"}, compactly=True) == '{"name": "Jürgen 猫"}'


def test_utf8_bytes_are_written_as_the_text_they_encode() -> None:
    assert dumps({"raw": "Grüße".encode()}, compactly=True) == '{"raw": "Grüße"}'


def test_a_lone_surrogate_is_escaped_so_the_json_encodes_to_utf8() -> None:
    # What os.listdir gives for a file name that is not UTF-8 (surrogateescape).
    name = os.fsdecode(b"caf\xe9.bin")
    text = dumps({"filename": name, "city": "Zürich"}, compactly=True)
    assert text == '{"filename": "caf\\udce9.bin", "city": "Zürich"}'
    assert json.loads(text.encode("utf-8")) == {"filename": name, "city": "Zürich"}


def test_non_ascii_text_beside_a_value_strict_json_cannot_hold_stays_unescaped() -> None:
    text = dumps({"café": float("nan"), 1: "ü"}, compactly=True)
    assert text == '{"café": "NaN", "1": "ü"}'


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (datetime.datetime(2020, 1, 2, 3, 4, 5), "2020-01-02 03:04:05"),
        (datetime.datetime(2020, 1, 2, 3, 4, 5, 600), "2020-01-02 03:04:05.000600"),
        (
            datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            "2020-01-02 03:04:05+00:00",
        ),
        (datetime.date(2020, 1, 2), "2020-01-02"),
        (datetime.time(3, 4, 5), "03:04:05"),
    ],
)
def test_datetimes_in_results_are_written_as_str_of_the_value(value: Any, written: str) -> None:
    assert json.loads(dumps({"when": value}))["when"] == written


def test_a_datetime_in_a_workers_results_is_written_as_str_in_the_response() -> None:
    payload = stoq.Payload(b"x")
    payload.results.workers["w"] = {"seen": datetime.datetime(2020, 1, 2, 3, 4, 5)}
    response = json.loads(str(stoq.StoqResponse(stoq.Request([payload]))))
    assert response["results"][0]["workers"]["w"] == {"seen": "2020-01-02 03:04:05"}


def test_empty_bytes_are_written_as_an_empty_string() -> None:
    assert dumps({"raw": b"", "buffer": bytearray()}, compactly=True) == '{"raw": "", "buffer": ""}'


def test_dumps_compactly_and_indented_give_the_same_data() -> None:
    data = {"a": [1, "é"], "b": {"c": None}}
    assert json.loads(dumps(data)) == json.loads(dumps(data, compactly=True)) == data
    assert "\n" in dumps(data) and "\n" not in dumps(data, indent=None)


# -- merge_dicts ---------------------------------------------------------------------------


def test_merge_dicts_extends_the_lists_of_a_defaultdict_as_v3_did() -> None:
    seen: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
    seen["hosts"].append("a.example")
    more = {"hosts": ["b.example"], "urls": ["http://c.example/"]}
    merged = merge_dicts(seen, more)
    assert merged is seen
    assert merged == {"hosts": ["a.example", "b.example"], "urls": ["http://c.example/"]}
    assert merged["urls"] is not more["urls"]


def test_merge_dicts_adds_keys_a_plain_dict_lacks_instead_of_raising() -> None:
    assert merge_dicts({"a": [1]}, {"a": [2], "b": [3]}) == {"a": [1, 2], "b": [3]}


def test_merge_dicts_merges_nested_dicts_and_replaces_other_values() -> None:
    left = {"meta": {"tags": ["x"], "score": 1}, "name": "old"}
    merge_dicts(left, {"meta": {"tags": ["y"], "score": 5}, "name": "new"})
    assert left == {"meta": {"tags": ["x", "y"], "score": 5}, "name": "new"}


def test_v3s_merge_dicts_is_the_core_helper() -> None:
    assert stoq.helpers.merge_dicts is stoq_core.helpers.merge_dicts


# -- on the command line -------------------------------------------------------------------

WORKER = """
import datetime

from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class Texts(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({
            "name": "Jürgen 猫",
            "seen": datetime.datetime(2020, 1, 2, 3, 4, 5),
            "empty": b"",
            "odd": b"caf\\xe9".decode("utf-8", "surrogateescape"),
        })
"""


@pytest.fixture
def texts_plugin(tmp_path: Path, write_plugin: Callable[..., Path]) -> Iterator[Path]:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "texts", WORKER)
    yield plugins


def _stoq_command() -> str:
    beside = Path(sys.executable).parent / "stoq"
    found = str(beside) if beside.is_file() else shutil.which("stoq")
    if found is None:
        pytest.fail("the stoq console script is not installed: pip install -e .")
    return found


def test_stoq_scan_writes_results_as_utf8_json_like_v3(tmp_path: Path, texts_plugin: Path) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"x")
    env = {**os.environ, "STOQ_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [_stoq_command(), "scan", str(sample), "--plugin-dir", str(texts_plugin), "-a", "texts"],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert "Jürgen 猫".encode() in done.stdout  # as UTF-8, not \u escapes
    assert b'"2020-01-02 03:04:05"' in done.stdout
    assert b'"odd": "caf\\udce9"' in done.stdout
    results = json.loads(done.stdout.decode("utf-8"))["results"][0]["workers"]["texts"]
    assert results["empty"] == ""
