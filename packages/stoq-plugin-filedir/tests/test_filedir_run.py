"""The whole loop: filedir as provider and connector around ``Stoq.run``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stoq_core import Stoq


@pytest.mark.usefixtures("echo_worker")
def test_run_writes_one_result_file_per_input_file(
    make_stoq: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    inputs = {"a.txt": b"alpha", "b.txt": b"bravo", "c.bin": b"\x00charlie"}
    for name, content in inputs.items():
        (source / name).write_bytes(content)
    results = tmp_path / "results"
    stoq = make_stoq(
        {"source_dir": str(source), "results_dir": str(results)},
        providers=["filedir"],
        connectors=["filedir"],
        always_dispatch=["echo"],
    )

    asyncio.run(asyncio.wait_for(stoq.run(), 30))

    written = [json.loads(path.read_text()) for path in sorted(results.iterdir())]
    assert sorted(r["scan_id"] for r in written) == sorted(p.name for p in results.iterdir())
    seen = {
        r["results"][0]["payload_meta"]["extra_data"]["filename"]: r["results"][0]["workers"][
            "echo"
        ]
        for r in written
    }
    assert seen == {
        "a.txt": {"content": "alpha"},
        "b.txt": {"content": "bravo"},
        "c.bin": {"content": "\x00charlie"},
    }


@pytest.mark.usefixtures("echo_worker")
def test_run_with_watch_ends_after_watch_limit_files(
    make_stoq: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    (source / "first.txt").write_text("first")
    results = tmp_path / "results"
    stoq = make_stoq(
        {"source_dir": str(source), "results_dir": str(results), "watch": True, "watch_limit": 2},
        providers=["filedir"],
        connectors=["filedir"],
        always_dispatch=["echo"],
    )

    async def run_and_drop_a_file() -> None:
        running = asyncio.ensure_future(stoq.run())
        await asyncio.sleep(0.2)
        (source / "second.txt").write_text("second")
        await asyncio.wait_for(running, 10)

    asyncio.run(run_and_drop_a_file())

    assert len(list(results.iterdir())) == 2


@pytest.mark.usefixtures("echo_worker")
def test_run_saves_a_result_holding_the_error_for_a_file_over_max_payload_size(
    make_stoq: Callable[..., Stoq], source: Path, tmp_path: Path
) -> None:
    (source / "big.bin").write_bytes(b"B" * 64)
    (source / "small.txt").write_bytes(b"small")
    results = tmp_path / "results"
    stoq = make_stoq(
        {"source_dir": str(source), "results_dir": str(results), "max_payload_size": 32},
        providers=["filedir"],
        connectors=["filedir"],
        always_dispatch=["echo"],
    )

    stats = asyncio.run(asyncio.wait_for(stoq.run(), 30))

    written = {}
    for path in results.iterdir():
        response = json.loads(path.read_text())
        written[response["results"][0]["payload_meta"]["extra_data"]["filename"]] = response
    assert (stats.scanned, stats.with_errors, sorted(written)) == (2, 1, ["big.bin", "small.txt"])
    assert written["small.txt"]["results"][0]["workers"] == {"echo": {"content": "small"}}
    assert written["big.bin"]["results"][0]["workers"] == {}
    assert [e["error"] for e in written["big.bin"]["errors"]] == [
        f"max_payload_size (32 bytes) exceeded: {source / 'big.bin'} is 64 bytes; not read"
    ]
