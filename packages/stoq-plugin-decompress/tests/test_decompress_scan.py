"""The plugin in a full scan: extracted payloads join the request and are scanned in turn."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from decompress_helpers import tar_of, zip_of

from stoq_core import PayloadMeta, Stoq, StoqResponse


def scan(tmp_path: Path, content: bytes, filename: str, **options: object) -> StoqResponse:
    stoq = Stoq(
        always_dispatch=["hash", "decompress"],
        log_dir=None,
        base_dir=str(tmp_path),
        plugin_opts={"decompress": options} if options else None,
    )
    return asyncio.run(stoq.scan(content, PayloadMeta(extra_data={"filename": filename})))


@pytest.fixture
def nested() -> bytes:
    """level1.zip holds level2.zip, which holds level3.zip, which holds leaf.txt."""
    level3 = zip_of({"leaf.txt": b"the leaf\n"})
    level2 = zip_of({"level3.zip": level3, "note2.txt": b"second level\n"})
    return zip_of({"level2.zip": level2})


def test_a_zip_of_zips_three_levels_deep_gives_one_result_per_member(
    tmp_path: Path, nested: bytes
) -> None:
    response = scan(tmp_path, nested, "level1.zip")
    assert response.errors == []
    names = [r.payload_meta.extra_data["filename"] for r in response.results]
    assert names == ["level1.zip", "level2.zip", "level3.zip", "note2.txt", "leaf.txt"]


def test_each_member_names_its_parent_and_extractor(tmp_path: Path, nested: bytes) -> None:
    response = scan(tmp_path, nested, "level1.zip")
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


def test_every_level_is_hashed_and_only_archives_get_decompress_results(
    tmp_path: Path, nested: bytes
) -> None:
    response = scan(tmp_path, nested, "level1.zip")
    by_name = {r.payload_meta.extra_data["filename"]: r for r in response.results}
    assert (
        by_name["leaf.txt"].workers["hash"]["sha256"] == hashlib.sha256(b"the leaf\n").hexdigest()
    )
    assert set(by_name["leaf.txt"].workers) == {"hash"}
    [member] = by_name["level3.zip"].workers["decompress"]["members"]
    assert (member["filename"], member["size"]) == ("leaf.txt", 9)
    assert by_name["leaf.txt"].plugins_run["workers"] == ["hash", "decompress"]


def test_a_limit_error_names_the_plugin_and_the_archive(tmp_path: Path) -> None:
    archive = tar_of({f"f{index}": b"%d" % index for index in range(3)}, "gz")
    response = scan(tmp_path, archive, "many.tgz", maximum_count=1)
    [error] = response.errors
    assert error.plugin_name == "decompress"
    assert error.payload_id == response.results[0].payload_id
    assert (
        error.error == "maximum_count (1 members) exceeded: extraction stopped before member 'f1'"
    )
    assert [r.payload_meta.extra_data["filename"] for r in response.results] == ["many.tgz", "f0"]


def test_the_json_holds_the_decompress_results(tmp_path: Path) -> None:
    response = scan(tmp_path, zip_of({"a.txt": b"a"}), "a.zip")
    results = json.loads(str(response))["results"][0]["workers"]["decompress"]
    assert results["archive_type"] == "zip"
    assert [m["filename"] for m in results["members"]] == ["a.txt"]
