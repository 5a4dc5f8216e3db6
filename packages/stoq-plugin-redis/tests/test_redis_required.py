"""Without ``redis-server`` the Redis tests skip and say why; ``STOQ_REQUIRE_REDIS=1`` fails them.

A developer's ``nox`` passes on a machine without Redis, and CI (.ci/run, which sets the
variable) cannot pass by skipping them. Each case runs one Redis test in a child pytest whose
PATH holds only this interpreter's directory, where there is no ``redis-server``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ONE_REDIS_TEST = "test_redis_client.py::test_a_small_payload_travels_in_its_message"


def _run_without_redis_server(require: str | None) -> subprocess.CompletedProcess[str]:
    path = os.path.dirname(sys.executable)
    if shutil.which("redis-server", path=path) is not None:
        pytest.skip(f"{path} holds a redis-server: cannot hide it from the child")
    env = {k: v for k, v in os.environ.items() if k != "STOQ_REQUIRE_REDIS"}
    env["PATH"] = path
    if require is not None:
        env["STOQ_REQUIRE_REDIS"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", ONE_REDIS_TEST],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_without_redis_server_a_redis_test_is_skipped_with_the_reason_in_the_summary() -> None:
    done = _run_without_redis_server(require=None)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 skipped" in done.stdout
    assert "SKIPPED" in done.stdout
    assert "redis-server is not on PATH" in done.stdout


@pytest.mark.parametrize("require", ["", "0"])
def test_an_empty_or_zero_require_variable_still_skips(require: str) -> None:
    done = _run_without_redis_server(require=require)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 skipped" in done.stdout


def test_with_stoq_require_redis_a_missing_redis_server_fails_the_test() -> None:
    done = _run_without_redis_server(require="1")

    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 error" in done.stdout or "1 failed" in done.stdout
    assert "redis-server is not on PATH" in done.stdout
    assert "STOQ_REQUIRE_REDIS is set" in done.stdout
