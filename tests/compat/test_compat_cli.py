"""v3 plugin directories through the installed ``stoq`` command (``--plugin-dir``, $STOQ_HOME/plugins).

Each test runs the console script as a user would, with ``STOQ_HOME`` set to the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _stoq_command() -> str | None:
    # The script installed beside this interpreter, so the CLI runs on the code under test.
    beside = Path(sys.executable).parent / "stoq"
    return str(beside) if beside.is_file() else shutil.which("stoq")


def _cli_is_built() -> bool:
    command = _stoq_command()
    if command is None:
        return False
    try:
        done = subprocess.run([command, "--help"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(
    not _cli_is_built(), reason="stoq CLI not built: running `stoq --help` fails"
)


def _stoq(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = _stoq_command()
    assert command is not None
    return subprocess.run(
        [command, *args],
        cwd=home,
        env={**os.environ, "STOQ_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _response(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    response: dict[str, Any] = json.loads(done.stdout)
    return response


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(b"MZ|one|two")
    return path


def test_scan_runs_a_worker_from_a_plugin_dir(
    tmp_path: Path, plugins_dir: Path, sample: Path
) -> None:
    response = _response(
        _stoq(tmp_path, "scan", str(sample), "--plugin-dir", str(plugins_dir), "-a", "carve")
    )
    root = response["results"][0]
    assert root["workers"]["carve"]["parts"] == 3
    assert len(response["results"]) == 4


def test_scan_finds_v3_plugins_in_stoq_home_plugins(
    tmp_path: Path, plugins_dir: Path, sample: Path
) -> None:
    shutil.copytree(plugins_dir, tmp_path / "plugins")
    response = _response(_stoq(tmp_path, "scan", str(sample), "-a", "report"))
    assert response["results"][0]["workers"]["report"]["carved_parts"] == 3


def test_a_plugin_dir_option_beats_stoq_home_plugins(
    tmp_path: Path, data_dir: Path, sample: Path
) -> None:
    shutil.copytree(data_dir / "first", tmp_path / "plugins")
    second = str(data_dir / "second")
    response = _response(_stoq(tmp_path, "scan", str(sample), "--plugin-dir", second, "-a", "echo"))
    assert response["results"][0]["workers"]["echo"] == {"from": "second"}


def test_the_later_plugin_dir_option_wins_a_name(
    tmp_path: Path, data_dir: Path, sample: Path
) -> None:
    first, second = str(data_dir / "first"), str(data_dir / "second")
    response = _response(
        _stoq(
            tmp_path,
            "scan",
            str(sample),
            "--plugin-dir",
            second,
            "--plugin-dir",
            first,
            "-a",
            "echo",
        )
    )
    assert response["results"][0]["workers"]["echo"] == {"from": "first"}


def test_a_too_new_plugin_warns_on_stderr_and_still_scans(
    tmp_path: Path, broken_dir: Path, sample: Path
) -> None:
    done = _stoq(tmp_path, "scan", str(sample), "--plugin-dir", str(broken_dir), "-a", "too_new")
    assert _response(done)["results"][0]["workers"]["too_new"] == {"loaded": True}
    assert "too_new" in done.stderr and "99.0.0" in done.stderr


def test_naming_a_plugin_with_two_classes_fails_with_a_message_not_a_traceback(
    tmp_path: Path, broken_dir: Path, sample: Path
) -> None:
    done = _stoq(
        tmp_path, "scan", str(sample), "--plugin-dir", str(broken_dir), "-a", "two_classes"
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert any("two_classes" in line and "exactly one" in line for line in done.stderr.splitlines())
