"""Hostile archives through the installed ``stoq``: each stops at a limit, in bounded memory.

The bombs are made here, at test time. Each scan runs as its own process, started by a small
wrapper that reports the scan's peak RSS, so the figure is that scan's alone.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

pytest.importorskip("stoq_plugin_decompress")
pytest.importorskip("stoq_plugin_hash")

MIB = 1 << 20
RSS_LIMIT_MIB = 256
MAX_EXTRACTED_BYTES = 1 << 30  # the core's default

_WRAPPER = (
    "import json, resource, subprocess, sys;"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
    "print(json.dumps({'rc': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr,"
    " 'rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
)


def scan_measured(path: Path, home: Path) -> tuple[dict, float]:
    """``stoq scan PATH -a hash -a decompress``: the response and the scan's peak RSS in MiB."""
    stoq = Path(sys.executable).with_name("stoq")
    command = [str(stoq) if stoq.exists() else shutil.which("stoq") or "stoq"]
    command += ["scan", str(path), "-a", "hash", "-a", "decompress", "--compact"]
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command],
        capture_output=True,
        text=True,
        timeout=240,
        env={"STOQ_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    outcome = json.loads(done.stdout)
    assert outcome["rc"] == 1, outcome["stderr"][-2000:]  # the scan ran; its errors say why
    return json.loads(outcome["stdout"]), outcome["rss_mib"]


def zeros_into(writable: io.RawIOBase | io.BufferedIOBase | gzip.GzipFile, size: int) -> None:
    block = bytes(MIB)
    for _ in range(size // MIB):
        writable.write(block)


def errors(response: dict) -> str:
    return " | ".join(e["error"] for e in response["errors"])


def test_a_zip_bomb_stops_at_the_member_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            zeros_into(member, 1024 * MIB)  # 1 GiB inflated, about 1 MiB on disk

    response, rss = scan_measured(bomb, tmp_path / "home")

    assert "maximum_size" in errors(response) or "maximum_ratio" in errors(response)
    assert rss < RSS_LIMIT_MIB


def test_a_nested_zip_bomb_stops_in_bounded_memory(tmp_path: Path) -> None:
    """42.zip's shape: zips of zips, each leaf a large run of zeros, each copy slightly different."""
    leaf = io.BytesIO()
    with zipfile.ZipFile(leaf, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            zeros_into(member, 256 * MIB)
    level = leaf.getvalue()
    for depth in range(3):
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as archive:
            for copy in range(16):
                archive.writestr(f"d{depth}-{copy}.zip", level)
        level = outer.getvalue()
    bomb = tmp_path / "nested.zip"
    bomb.write_bytes(level)  # 16**3 leaves of 256 MiB: a terabyte, nominally

    response, rss = scan_measured(bomb, tmp_path / "home")

    assert "maximum_" in errors(response) or "max_" in errors(response)
    assert rss < RSS_LIMIT_MIB


def test_a_gzip_of_ten_gigabytes_stops_at_the_limit(tmp_path: Path) -> None:
    member = io.BytesIO()
    with gzip.GzipFile(fileobj=member, mode="wb", compresslevel=9) as stream:
        zeros_into(stream, 100 * MIB)
    bomb = tmp_path / "ten-gigabytes.gz"
    with open(bomb, "wb") as out:
        for _ in range(100):  # gzip members concatenate: 100 x 100 MiB inflated
            out.write(member.getvalue())

    response, rss = scan_measured(bomb, tmp_path / "home")

    assert "maximum_size" in errors(response) or "maximum_ratio" in errors(response)
    assert rss < RSS_LIMIT_MIB


def deflated_alone(data: bytes) -> bytes:
    """``data`` as raw deflate that refers to nothing before it (a full flush): copies of it
    can follow one another in a stream, each inflating to ``data`` again."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


LAST_BLOCK = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # ends a stream


def zip_of_deflated(members: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A zip of members already deflated: name -> (raw deflate, CRC-32, inflated size)."""
    out = io.BytesIO()
    central = []
    for name, (data, crc, size) in members.items():
        raw_name = name.encode()
        fields = struct.pack(
            "<HHHHHIIIHH", 20, 0, 8, 0, 0x21, crc, len(data), size, len(raw_name), 0
        )
        offset = out.tell()
        out.write(b"PK\x03\x04" + fields + raw_name + data)
        central.append(
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHII", 0, 0, 0, 0, offset)
            + raw_name
        )
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    out.write(
        b"PK\x05\x06"
        + struct.pack("<HHHHIIH", 0, 0, len(central), len(central), len(directory), start, 0)
    )
    return out.getvalue()


def zip_of_bombs(count: int, members: int = 10, member_mib: int = 45) -> bytes:
    """A zip of ``count`` different zip bombs, each of ``members`` different members of
    ``member_mib`` MiB: 450 MiB a bomb, compressed 85 to 1.

    Each bomb is within the plugin's own limits (50 MB a member, 500 MB an archive, a ratio of
    100), so only the request's ``max_extracted_bytes`` stops them. The 1 MiB block is deflated
    once and repeated; each member ends with its own few bytes, so none is merged with another.
    """
    block = random.Random(12).randbytes(10 * 1024) + bytes(MIB - 10 * 1024)
    body = deflated_alone(block) * member_mib
    body_crc = 0
    for _ in range(member_mib):
        body_crc = zlib.crc32(block, body_crc)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as archive:
        for bomb in range(count):
            inner = {}
            for member in range(members):
                tail = f"bomb {bomb} member {member}".encode()
                data = body + deflated_alone(tail) + LAST_BLOCK
                size = member_mib * MIB + len(tail)
                inner[f"b{bomb}m{member}.bin"] = (data, zlib.crc32(tail, body_crc), size)
            archive.writestr(f"bomb{bomb}.zip", zip_of_deflated(inner))
    return outer.getvalue()


@pytest.mark.parametrize("count", [8, 16])
def test_zip_bombs_inflated_at_once_stay_within_max_extracted_bytes(
    tmp_path: Path, count: int
) -> None:
    """#12: inflated at once, in full, 8 such bombs peaked at 3,780 MiB and 16 at 7,485 MiB."""
    bombs = tmp_path / f"{count}-bombs.zip"
    bombs.write_bytes(zip_of_bombs(count))

    response, rss = scan_measured(bombs, tmp_path / "home")

    stopped = [e for e in response["errors"] if "extraction stopped at member" in e["error"]]
    assert stopped, errors(response)
    assert all(
        e["plugin_name"] == "decompress"
        and e["error"].startswith(f"max_extracted_bytes ({MAX_EXTRACTED_BYTES} bytes) exceeded")
        for e in stopped
    )
    members = [
        r
        for r in response["results"]
        if r["payload_meta"]["extra_data"]["filename"].endswith(".bin")
    ]
    assert members  # what was whole before the stop is kept, and scanned
    assert all("hash" in r["workers"] for r in members)
    assert sum(r["size"] for r in response["results"][1:]) <= MAX_EXTRACTED_BYTES
    assert rss < MAX_EXTRACTED_BYTES / MIB + RSS_LIMIT_MIB
