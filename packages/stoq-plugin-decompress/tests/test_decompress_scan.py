"""The plugin in a full scan: extracted payloads join the request and are scanned in turn."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from decompress_helpers import tar_of, zip_of

from stoq_core import Stoq, StoqResponse
from stoq_core.testing import make_payload, scan_sync

Scan = Callable[..., StoqResponse]


@pytest.fixture
def scan(stoq_with: Callable[..., Stoq]) -> Scan:
    """``scan(content, filename, **options)``: decompress every payload of one scan.

    decompress alone (no hash): this package's tests must pass with only the core installed.
    """

    def run(content: bytes, filename: str, **options: object) -> StoqResponse:
        stoq = stoq_with("decompress", options=options, always_dispatch=["decompress"])
        return scan_sync(stoq, make_payload(content, filename=filename))

    return run


@pytest.fixture
def nested() -> bytes:
    """level1.zip holds level2.zip, which holds level3.zip, which holds leaf.txt."""
    level3 = zip_of({"leaf.txt": b"the leaf\n"})
    level2 = zip_of({"level3.zip": level3, "note2.txt": b"second level\n"})
    return zip_of({"level2.zip": level2})


def test_a_zip_of_zips_three_levels_deep_gives_one_result_per_member(
    scan: Scan, nested: bytes
) -> None:
    response = scan(nested, "level1.zip")
    assert response.errors == []
    names = [r.payload_meta.extra_data["filename"] for r in response.results]
    assert names == ["level1.zip", "level2.zip", "level3.zip", "note2.txt", "leaf.txt"]


def test_each_member_names_its_parent_and_extractor(scan: Scan, nested: bytes) -> None:
    response = scan(nested, "level1.zip")
    by_name = {r.payload_meta.extra_data["filename"]: r for r in response.results}
    parents = {
        "level2.zip": "level1.zip",
        "level3.zip": "level2.zip",
        "note2.txt": "level2.zip",
        "leaf.txt": "level3.zip",
    }
    for child, parent in parents.items():
        assert by_name[child].extracted_from == [by_name[parent].payload_id]
        assert by_name[child].extracted_by == ["decompress"]
    assert by_name["level1.zip"].extracted_from == []


def test_every_level_is_scanned_and_only_archives_get_decompress_results(
    scan: Scan, nested: bytes
) -> None:
    response = scan(nested, "level1.zip")
    by_name = {r.payload_meta.extra_data["filename"]: r for r in response.results}
    assert by_name["leaf.txt"].size == len(b"the leaf\n")
    assert by_name["leaf.txt"].plugins_run["workers"] == ["decompress"]
    assert by_name["leaf.txt"].workers == {}
    [member] = by_name["level3.zip"].workers["decompress"]["members"]
    assert (member["filename"], member["size"]) == ("leaf.txt", 9)


def test_a_limit_error_names_the_plugin_and_the_archive(scan: Scan) -> None:
    archive = tar_of({f"f{index}": b"%d" % index for index in range(3)}, "gz")
    response = scan(archive, "many.tgz", maximum_count=1)
    [error] = response.errors
    assert error.plugin_name == "decompress"
    assert error.payload_id == response.results[0].payload_id
    assert (
        error.error == "maximum_count (1 members) exceeded: extraction stopped before member 'f1'"
    )
    assert [r.payload_meta.extra_data["filename"] for r in response.results] == ["many.tgz", "f0"]


def test_the_json_holds_the_decompress_results(scan: Scan) -> None:
    response = scan(zip_of({"a.txt": b"a"}), "a.zip")
    results = json.loads(str(response))["results"][0]["workers"]["decompress"]
    assert results["archive_type"] == "zip"
    assert [m["filename"] for m in results["members"]] == ["a.txt"]
