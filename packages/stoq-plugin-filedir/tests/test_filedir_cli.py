"""``stoq run -P filedir`` as a user runs it: the installed ``stoq`` in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def stoq(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``stoq`` with a home of its own under ``tmp_path``."""
    beside = Path(sys.executable).parent / "stoq"
    executable = str(beside) if beside.is_file() else shutil.which("stoq")
    if executable is None:
        pytest.fail("the stoq console script is not installed: pip install -e ../..")
    env = {**os.environ, "STOQ_HOME": str(tmp_path / "home")}
    env.pop("STOQ_DEBUG", None)
    return subprocess.run(
        [executable, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_run_without_source_dir_is_a_usage_error(tmp_path: Path) -> None:
    done = stoq(tmp_path, "run", "-P", "filedir")

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("stoq: error: ")
    assert line.endswith(
        "source_dir is not set: name the directory to ingest, "
        "e.g. --plugin-opts filedir:source_dir=/path/to/files"
    )


def test_run_with_a_missing_source_dir_is_a_usage_error(tmp_path: Path) -> None:
    done = stoq(tmp_path, "run", "-P", "filedir", "--plugin-opts", "filedir:source_dir=nowhere")

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("stoq: error: ")
    assert line.endswith(f"source_dir {tmp_path / 'nowhere'}: no such directory")


def test_run_reports_a_file_over_max_payload_size_and_scans_the_others(
    tmp_path: Path, source: Path
) -> None:
    (source / "big.bin").write_bytes(b"B" * 64)
    (source / "small.txt").write_bytes(b"small")

    done = stoq(
        tmp_path,
        "run",
        "-P",
        "filedir",
        "--plugin-opts",
        f"filedir:source_dir={source}",
        "filedir:max_payload_size=32",
    )

    assert done.returncode == 1, done.stderr
    responses = [json.loads(line) for line in done.stdout.splitlines()]
    errors = {
        r["results"][0]["payload_meta"]["extra_data"]["filename"]: [e["error"] for e in r["errors"]]
        for r in responses
    }
    assert errors == {
        "big.bin": [
            f"max_payload_size (32 bytes) exceeded: {source / 'big.bin'} is 64 bytes; not read"
        ],
        "small.txt": [],
    }
    assert "Traceback" not in done.stderr
