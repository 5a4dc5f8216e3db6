"""Hostile archives through the installed ``stoq``: each stops at a limit, in bounded memory.

The bombs are made here, at test time. Each scan runs as its own process, started by a small
wrapper that reports the scan's peak RSS, so the figure is that scan's alone.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("stoq_plugin_decompress")
pytest.importorskip("stoq_plugin_hash")

MIB = 1 << 20
RSS_LIMIT_MIB = 256

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
