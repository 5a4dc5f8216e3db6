"""Each limit stops a bomb built at test time, says which limit, and keeps memory bounded.

Peak memory is measured with tracemalloc (which sees every thread): it must stay near the limit,
far below what the bomb would inflate to.
"""

from __future__ import annotations

import asyncio
import io
import re
import tarfile
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from decompress_helpers import (
    MIB,
    error_texts,
    extracted,
    load,
    run,
    sevenzip_of,
    tar_of,
    zeros_gzip,
    zeros_tar,
    zeros_zip,
    zip_of,
)

from stoq_core import PayloadMeta, Stoq, WorkerResponse

# Bombs run under a timeout: a limit that failed to stop one would otherwise inflate for minutes.
pytestmark = pytest.mark.timeout(60)

NO_RATIO = {"maximum_ratio": 1e9}  # to test the other limits alone


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """200 MB of zeros in about 200 KB."""
    return zeros_gzip(200 * MIB)


def traced(plugin: Any, content: bytes) -> tuple[WorkerResponse, int]:
    """The plugin's response and the peak of memory allocated while it ran."""
    tracemalloc.start()
    try:
        response = run(plugin, content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response is not None
    return response, peak


def test_maximum_size_stops_a_gzip_bomb(tmp_path: Path, gzip_bomb: bytes) -> None:
    plugin = load(tmp_path, maximum_size=8 * MIB, **NO_RATIO)
    response, peak = traced(plugin, gzip_bomb)
    assert error_texts(response) == [
        f"maximum_size ({8 * MIB} bytes) exceeded by member 'decompressed'; extraction stopped"
    ]
    assert response.extracted == []
    assert response.results["truncated"] is True
    assert peak < 3 * 8 * MIB


def test_maximum_size_has_a_default_of_50_mb(tmp_path: Path, gzip_bomb: bytes) -> None:
    response, peak = traced(load(tmp_path, **NO_RATIO), gzip_bomb)
    assert error_texts(response) == [
        "maximum_size (50000000 bytes) exceeded by member 'decompressed'; extraction stopped"
    ]
    assert peak < 100 * MIB


def test_maximum_ratio_stops_a_gzip_bomb_first_by_default(tmp_path: Path, gzip_bomb: bytes) -> None:
    response, peak = traced(load(tmp_path), gzip_bomb)
    [error] = error_texts(response)
    assert error.startswith("maximum_ratio (100) exceeded at member 'decompressed': ")
    assert f"from an archive of {len(gzip_bomb)} bytes" in error
    assert peak < 3 * 100 * len(gzip_bomb)


def test_maximum_ratio_ignores_small_compressible_members(tmp_path: Path) -> None:
    response = run(load(tmp_path), zip_of({"spaces.txt": b" " * 500_000}))
    assert response is not None
    assert response.errors == []
    assert extracted(response) == {"spaces.txt": b" " * 500_000}


def test_maximum_total_keeps_the_members_before_the_stop(tmp_path: Path) -> None:
    bomb = zeros_zip(count=6, size=8 * MIB)
    plugin = load(tmp_path, maximum_total=20 * MIB, **NO_RATIO)
    response, peak = traced(plugin, bomb)
    assert error_texts(response) == [
        f"maximum_total ({20 * MIB} bytes) exceeded at member 'm2'; extraction stopped"
    ]
    assert extracted(response) == {"m0": bytes(8 * MIB), "m1": bytes(8 * MIB)}
    assert [m["filename"] for m in response.results["members"]] == ["m0", "m1"]
    assert peak < 2 * 20 * MIB


def test_maximum_count_keeps_the_first_members(tmp_path: Path) -> None:
    archive = zip_of({f"f{index}": b"%d" % index for index in range(10)})
    response = run(load(tmp_path, maximum_count=3), archive)
    assert response is not None
    assert error_texts(response) == [
        "maximum_count (3 members) exceeded: extraction stopped before member 'f3'"
    ]
    assert extracted(response) == {"f0": b"0", "f1": b"1", "f2": b"2"}
    assert response.results["truncated"] is True


def test_maximum_count_stops_a_tar_archive(tmp_path: Path) -> None:
    archive = tar_of({f"f{index}": b"x" for index in range(5)}, "gz")
    response = run(load(tmp_path, maximum_count=2), archive)
    assert response is not None
    assert error_texts(response) == [
        "maximum_count (2 members) exceeded: extraction stopped before member 'f2'"
    ]


def test_a_bzip2_zip_member_is_inflated_in_bounded_chunks(tmp_path: Path) -> None:
    # zipfile itself would inflate a whole read's worth of bzip2 at once, without bound.
    bomb = zeros_zip(count=1, size=64 * MIB, method=zipfile.ZIP_BZIP2)
    plugin = load(tmp_path, maximum_size=4 * MIB, **NO_RATIO)
    response, peak = traced(plugin, bomb)
    assert error_texts(response) == [
        f"maximum_size ({4 * MIB} bytes) exceeded by member 'm0'; extraction stopped"
    ]
    assert peak < 4 * 4 * MIB


def test_maximum_size_stops_a_tar_gz_bomb(tmp_path: Path) -> None:
    bomb = zeros_tar(64 * MIB)
    plugin = load(tmp_path, maximum_size=4 * MIB, **NO_RATIO)
    response, peak = traced(plugin, bomb)
    assert error_texts(response) == [
        f"maximum_size ({4 * MIB} bytes) exceeded by member 'big'; extraction stopped"
    ]
    assert peak < 4 * 4 * MIB


def test_tar_data_skipped_without_reading_is_limited_too(tmp_path: Path) -> None:
    # A member of an unknown type is skipped by seeking, which inflates all of it.
    bomb = zeros_tar(64 * MIB, member_type=b"Z")
    plugin = load(tmp_path, maximum_size=4 * MIB, **NO_RATIO)
    response = run(plugin, bomb)
    assert response is not None
    [error] = error_texts(response)
    assert re.fullmatch(
        rf"maximum_size \({4 * MIB} bytes\) exceeded by \d+ bytes of data the tar archive "
        r"skips; extraction stopped",
        error,
    )


def test_a_7z_member_declaring_more_than_maximum_size_is_refused_before_inflating(
    tmp_path: Path,
) -> None:
    archive = sevenzip_of({"small": b"s", "big": bytes(40 * MIB)})
    plugin = load(tmp_path, maximum_size=4 * MIB)
    response, peak = traced(plugin, archive)
    assert error_texts(response) == [
        f"maximum_size ({4 * MIB} bytes) exceeded by member 'big' (its header declares "
        f"{40 * MIB} bytes); extraction stopped"
    ]
    assert extracted(response) == {"small": b"s"}
    assert peak < 24 * MIB  # py7zr's own buffers take 16 MiB


def test_maximum_count_stops_a_7z_archive(tmp_path: Path) -> None:
    archive = sevenzip_of({f"f{index}": b"%d" % index for index in range(6)})
    response = run(load(tmp_path, maximum_count=2), archive)
    assert response is not None
    assert error_texts(response) == [
        "maximum_count (2 members) exceeded: extraction stopped before member 'f2'"
    ]
    assert extracted(response) == {"f0": b"0", "f1": b"1"}


@pytest.fixture
def traced_memory() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def test_a_nested_zip_bomb_never_inflates_past_the_limits(
    tmp_path: Path, traced_memory: None
) -> None:
    # Two different inner bombs (identical ones would be de-duplicated), 128 MiB of zeros each.
    inner = [zeros_zip(count=8, size=16 * MIB), zeros_zip(count=9, size=16 * MIB)]
    outer = zip_of({"inner0.zip": inner[0], "inner1.zip": inner[1]})
    stoq = Stoq(always_dispatch=["decompress"], log_dir=None, base_dir=str(tmp_path))
    tracemalloc.reset_peak()
    response = asyncio.run(stoq.scan(outer, PayloadMeta(extra_data={"filename": "outer.zip"})))
    peak = tracemalloc.get_traced_memory()[1]
    inner_ids = {r.payload_id for r in response.results[1:]}
    ratio_errors = [
        e for e in response.errors if e.error.startswith("maximum_ratio (100) exceeded")
    ]
    assert {e.payload_id for e in ratio_errors} == inner_ids
    assert {e.plugin_name for e in ratio_errors} == {"decompress"}
    assert len(response.results) == 3
    assert peak < 64 * MIB


def test_a_member_in_tar_named_with_a_huge_pax_header_is_limited(tmp_path: Path) -> None:
    # tarfile reads a pax header whole, whatever size it declares.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "z" * (6 * MIB)}
        archive.addfile(info, io.BytesIO(b""))
    response = run(load(tmp_path, maximum_size=2 * MIB, **NO_RATIO), buffer.getvalue())
    assert response is not None
    [error] = error_texts(response)
    assert error.startswith(f"maximum_size ({2 * MIB} bytes) exceeded by a tar header or record")


def test_a_directory_entry_with_data_is_limited_when_walking_local_headers(
    tmp_path: Path,
) -> None:
    # A directory's data was inflated whole, without any limit, when the central directory
    # was missing and the members were found from their local headers.
    archive = zeros_zip(count=1, size=64 * MIB)
    name_at = 30  # the first local header's name
    assert archive[name_at : name_at + 2] == b"m0"
    cut = archive[:name_at] + b"d/" + archive[name_at + 2 : archive.rindex(b"PK\x01\x02")]
    plugin = load(tmp_path, maximum_size=4 * MIB, **NO_RATIO)
    response, peak = traced(plugin, cut)
    assert error_texts(response) == [
        f"maximum_size ({4 * MIB} bytes) exceeded by member 'd/'; extraction stopped"
    ]
    assert peak < 4 * 4 * MIB
