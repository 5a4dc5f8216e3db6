"""A v3 program (data/v3_program.py, the v3 "Framework" examples) runs unchanged on stoq_core.

The program runs once, as its own process with this Python, from a directory laid out as the v3
docs assume (plugins in ``$CWD/plugins``); each test checks one step of what it printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
SAMPLE = b"MZ header|payload one|payload two"


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("v3-program")
    shutil.copytree(DATA / "plugins", workdir / "plugins")
    (workdir / "bad.exe").write_bytes(SAMPLE)
    incoming = workdir / "incoming"
    incoming.mkdir()
    (incoming / "a.bin").write_bytes(b"first|file")
    (incoming / "b.bin").write_bytes(b"second file")
    completed = subprocess.run(
        [sys.executable, str(DATA / "v3_program.py"), "results", "run-results", "incoming"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    printed: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return printed


def test_an_individual_scan_with_always_dispatch_and_request_meta(summary: dict[str, Any]) -> None:
    response = summary["individual"]
    assert response["request_meta"]["extra_data"] == {"filename": "bad.exe"}
    root = response["results"][0]
    assert root["size"] == len(SAMPLE)
    assert root["workers"]["carve"]["parts"] == 3
    # always_dispatch reaches the extracted payloads too.
    assert [r["plugins_run"]["workers"] for r in response["results"]] == [["carve"]] * 4


def test_load_plugin_returns_the_v3_plugin_object(summary: dict[str, Any]) -> None:
    assert summary["load_plugin"] == {"plugin_name": "carve", "class": "CarveWorker"}


def test_scanning_raw_text_with_add_start_dispatch(summary: dict[str, Any]) -> None:
    [root] = summary["raw_bytes"]["results"]
    assert root["size"] == len(b"raw bytes")
    assert root["workers"]["carve"]["parts"] == 1


def test_scan_request_keeps_the_payload_meta_and_starts_only_the_root(
    summary: dict[str, Any],
) -> None:
    root, *extracted = summary["scan_request"]["results"]
    assert root["payload_meta"]["extra_data"]["filename"] == "bad.exe"
    assert root["payload_meta"]["extra_data"]["source_dir"]
    assert root["plugins_run"]["workers"] == ["carve"]
    # add_start_dispatch never applies to extracted payloads.
    assert len(extracted) == 3 and all(r["plugins_run"]["workers"] == [] for r in extracted)


def test_a_connector_save_called_directly_writes_the_response(summary: dict[str, Any]) -> None:
    assert summary["saved"] == [f"{summary['scan_request']['scan_id']}.json"]


def test_split_gives_one_response_per_worker_result(summary: dict[str, Any]) -> None:
    assert summary["split"] == [["carve"]]


def test_reconstruct_all_subresponses_roots_a_response_at_each_payload(
    summary: dict[str, Any],
) -> None:
    original = summary["scan_request"]
    subresponses = summary["subresponses"]
    assert [len(s["results"]) for s in subresponses] == [4, 1, 1, 1]
    assert [s["results"][0]["payload_id"] for s in subresponses] == [
        r["payload_id"] for r in original["results"]
    ]
    assert {s["scan_id"] for s in subresponses} == {original["scan_id"]}


def test_run_with_a_provider_scans_every_file_and_saves_through_the_connector(
    summary: dict[str, Any],
) -> None:
    saved = {r["results"][0]["payload_meta"]["extra_data"]["filename"]: r for r in summary["run"]}
    assert sorted(saved) == ["a.bin", "b.bin"]
    # route dispatched a.bin to carve; report (always_dispatch) required carve anyway.
    first = saved["a.bin"]["results"][0]
    assert first["workers"]["report"] == {"carved_parts": 2, "required": ["carve"]}
    assert saved["a.bin"]["decorators"]["stamp"]["payloads"] == 3
    assert saved["b.bin"]["results"][0]["workers"]["carve"]["parts"] == 1
