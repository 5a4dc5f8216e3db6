"""Every format charges what it inflates to the request's ``max_extracted_bytes`` as it goes.

The plugin's own limits bound one archive; the request's budget bounds every extraction of a
request together, while they run, so archives extracted at once cannot add up past it (#12).
Memory is measured with tracemalloc, which sees every thread.
"""

from __future__ import annotations

import asyncio
import io
import lzma
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from decompress_helpers import (
    MIB,
    bzip2_of,
    extracted,
    gzip_of,
    load,
    lzma_of,
    run,
    sevenzip_of,
    tar_of,
    xz_of,
    zeros_zip,
    zip_of,
)

from stoq_core import PayloadMeta, Stoq, StoqResponse

pytestmark = pytest.mark.timeout(120)

NO_PLUGIN_LIMITS = {"maximum_ratio": 1e9, "maximum_size": 10**10, "maximum_total": 10**10}
MEMBER = 4 * MIB
BUDGET = 10 * MIB


def _member(index: int, size: int = MEMBER) -> bytes:
    # Different members (the engine merges identical payloads), compressible ones.
    return (b"member %d " % index).ljust(size, b"\x00")


MEMBERS = {f"m{index}": _member(index) for index in range(3)}
ONE = {"m0": _member(0, 3 * MEMBER)}

# (archive, the members kept within BUDGET): three members of 4 MiB stop at the third; a single
# stream of 12 MiB keeps nothing; py7zr's working copy of a member is charged too (see below).
ARCHIVES: dict[str, tuple[Callable[[], bytes], list[str]]] = {
    "zip-stored": (lambda: zip_of(MEMBERS, zipfile.ZIP_STORED), ["m0", "m1"]),
    "zip-deflate": (lambda: zip_of(MEMBERS), ["m0", "m1"]),
    "zip-bzip2": (lambda: zip_of(MEMBERS, zipfile.ZIP_BZIP2), ["m0", "m1"]),
    "zip-lzma": (lambda: zip_of(MEMBERS, zipfile.ZIP_LZMA), ["m0", "m1"]),
    "tar": (lambda: tar_of(MEMBERS), ["m0", "m1"]),
    "tar.gz": (lambda: tar_of(MEMBERS, "gz"), ["m0", "m1"]),
    "tar.bz2": (lambda: tar_of(MEMBERS, "bz2"), ["m0", "m1"]),
    "tar.xz": (lambda: tar_of(MEMBERS, "xz"), ["m0", "m1"]),
    "7z": (lambda: sevenzip_of(MEMBERS), ["m0"]),
    "gzip": (lambda: gzip_of(ONE["m0"]), []),
    "bzip2": (lambda: bzip2_of(ONE["m0"]), []),
    "xz": (lambda: xz_of(ONE["m0"]), []),
    "lzma": (lambda: lzma_of(ONE["m0"]), []),
}


def scan(stoq: Stoq, content: bytes, filename: str = "archive") -> StoqResponse:
    responses: list[StoqResponse] = []

    async def run_scan() -> None:
        # Kept out of the coroutine's return value: asyncio.run takes its repr.
        responses.append(await stoq.scan(content, PayloadMeta(extra_data={"filename": filename})))

    asyncio.run(run_scan())
    return responses[0]


@pytest.fixture
def traced_memory() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


@pytest.mark.parametrize("kind", ARCHIVES)
def test_every_format_stops_at_max_extracted_bytes_and_keeps_the_members_before(
    kind: str, stoq_with: Callable[..., Stoq]
) -> None:
    build, kept = ARCHIVES[kind]
    stoq = stoq_with(
        "decompress",
        options=NO_PLUGIN_LIMITS,
        always_dispatch=["decompress"],
        max_extracted_bytes=BUDGET,
    )
    response = scan(stoq, build())
    root = response.results[0]
    [error] = response.errors
    assert error.plugin_name == "decompress"
    assert error.payload_id == root.payload_id
    assert error.error.startswith(f"max_extracted_bytes ({BUDGET} bytes) exceeded")
    assert "; extraction stopped at member '" in error.error
    assert root.workers["decompress"]["truncated"] is True
    assert [m["filename"] for m in root.workers["decompress"]["members"]] == kept
    assert [r.payload_meta.extra_data["filename"] for r in response.results[1:]] == kept


def test_a_7z_member_is_charged_twice_while_py7zr_inflates_it(
    stoq_with: Callable[..., Stoq],
) -> None:
    # py7zr holds a block as large as the member beside the copy written out: 6 MiB costs 12.
    stoq = stoq_with(
        "decompress",
        options=NO_PLUGIN_LIMITS,
        always_dispatch=["decompress"],
        max_extracted_bytes=BUDGET,
    )
    content = _member(0, 6 * MIB)
    assert scan(stoq, gzip_of(content)).errors == []
    [error] = scan(stoq, sevenzip_of({"m0": content})).errors
    assert error.error.startswith(f"max_extracted_bytes ({BUDGET} bytes) exceeded")


def test_bombs_extracted_at_once_share_the_request_budget(
    stoq_with: Callable[..., Stoq], traced_memory: None
) -> None:
    # Four different bombs of 32 MiB, each within the plugin's limits, extracted in one round
    # (each in its own thread): together they hold no more than the request's 40 MiB.
    bombs = {f"bomb{index}.zip": zeros_zip(count=4 + index, size=8 * MIB) for index in range(4)}
    stoq = stoq_with(
        "decompress",
        options=NO_PLUGIN_LIMITS,
        always_dispatch=["decompress"],
        max_extracted_bytes=40 * MIB,
    )
    outer = zip_of(bombs)
    tracemalloc.reset_peak()
    response = scan(stoq, outer, "bombs.zip")
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < 64 * MIB  # each bomb inflated whole: 176 MiB
    stopped = [e for e in response.errors if "extraction stopped at member" in e.error]
    assert stopped
    assert all(e.error.startswith(f"max_extracted_bytes ({40 * MIB} bytes)") for e in stopped)
    assert sum(r.size for r in response.results[1:]) <= 40 * MIB
    assert any(r.size == 8 * MIB for r in response.results)  # whole members are kept


def _single(kind: str, content: bytes) -> bytes:
    # xz and lzma at preset 0 (a 256 KiB dictionary), so the decoder's own memory stays small.
    if kind == "xz":
        return lzma.compress(content, preset=0)
    if kind == "lzma":
        return lzma.compress(content, format=lzma.FORMAT_ALONE, preset=0)
    return {"gzip": gzip_of, "bzip2": bzip2_of}[kind](content)


HELD_ONCE: dict[str, Callable[[bytes], bytes]] = {
    "zip-stored": lambda c: zip_of({"m": c}, zipfile.ZIP_STORED),
    "zip-deflate": lambda c: zip_of({"m": c}),
    "zip-bzip2": lambda c: zip_of({"m": c}, zipfile.ZIP_BZIP2),
    "zip-lzma": lambda c: zip_of({"m": c}, zipfile.ZIP_LZMA),
    "tar": lambda c: tar_of({"m": c}),
    "tar.gz": lambda c: tar_of({"m": c}, "gz"),
    "gzip": lambda c: _single("gzip", c),
    "bzip2": lambda c: _single("bzip2", c),
    "xz": lambda c: _single("xz", c),
    "lzma": lambda c: _single("lzma", c),
}


@pytest.mark.parametrize("kind", HELD_ONCE)
def test_a_member_is_held_once_while_it_is_read(kind: str, tmp_path: Any) -> None:
    size = 32 * MIB
    archive = HELD_ONCE[kind](bytes(size))
    plugin = load(tmp_path, **NO_PLUGIN_LIMITS)
    tracemalloc.start()
    try:
        response = run(plugin, archive)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response is not None
    assert [len(content) for content in extracted(response).values()] == [size]
    # One copy, a chunk in flight and the buffer's headroom; chunks joined at the end took 2x.
    assert peak < 1.5 * size


def test_a_huge_tar_header_is_charged_while_tarfile_holds_it(
    stoq_with: Callable[..., Stoq],
) -> None:
    # tarfile reads a pax header whole: 6 MiB held at once, beyond a 4 MiB budget.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "z" * (6 * MIB)}
        archive.addfile(info, io.BytesIO(b""))
    stoq = stoq_with(
        "decompress",
        options=NO_PLUGIN_LIMITS,
        always_dispatch=["decompress"],
        max_extracted_bytes=4 * MIB,
    )
    [error] = scan(stoq, buffer.getvalue()).errors
    assert error.error.startswith(f"max_extracted_bytes ({4 * MIB} bytes) exceeded")
    assert error.error.endswith("; extraction stopped in its headers")
