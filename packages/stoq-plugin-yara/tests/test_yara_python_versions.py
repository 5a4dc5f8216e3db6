"""The plugin works with yara-python 4.2 as well as 4.3 and later.

4.3 changed ``match.strings`` from ``(offset, identifier, data)`` tuples to ``StringMatch``
objects. v3's yara plugin reads only the tuples, so a migrating user may pin yara-python 4.2;
this plugin must then work too. The slow test runs this whole test folder under yara-python
4.2.3, installed into a folder of its own (a pip build: it needs the network and a C compiler).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from stoq_plugin_yara.plugin import matched_strings

TESTS = Path(__file__).parent

#: The last 4.2 release: the newest yara-python whose match.strings are tuples.
YARA_42 = "4.2.3"


def test_the_tuples_of_yara_python_4_2_become_the_same_strings() -> None:
    match = SimpleNamespace(strings=[(0, "$hello", b"hello"), (6, "$world", b"world")])

    assert list(matched_strings(match)) == [[0, "$hello", b"hello"], [6, "$world", b"world"]]


def test_the_string_matches_of_yara_python_4_3_become_one_entry_per_instance() -> None:
    def instance(offset: int, data: bytes) -> SimpleNamespace:
        return SimpleNamespace(offset=offset, matched_data=data)

    hello = SimpleNamespace(identifier="$hello", instances=[instance(0, b"hi"), instance(9, b"hi")])
    match = SimpleNamespace(strings=[hello])

    assert list(matched_strings(match)) == [[0, "$hello", b"hi"], [9, "$hello", b"hi"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_test_passes_under_yara_python_4_2(tmp_path: Path) -> None:
    site = tmp_path / "yara42"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
    install = subprocess.run(
        [*pip, f"yara-python=={YARA_42}"], capture_output=True, text=True, timeout=600
    )
    failure = f"pip could not install yara-python {YARA_42}:\n{install.stderr[-3000:]}"
    assert install.returncode == 0, failure
    # First on the path, so this yara shadows the installed one; everything else is shared.
    path = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    version = subprocess.run(
        [sys.executable, "-c", "import yara; print(yara.__version__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert version.stdout.strip() == YARA_42, version.stderr

    child = ["-m", "not slow", "-p", "no:cacheprovider", "-v", "--basetemp", str(tmp_path / "t")]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", str(TESTS), *child],
        capture_output=True,
        text=True,
        env=env,
        cwd=TESTS.parent,
        timeout=600,
    )

    report = tests.stdout[-6000:]
    assert tests.returncode == 0, report
    # The v3-style plugin's tests ran for real (under 4.3 and later they are expected to fail).
    v3_results = re.findall(r"test_yara_v3_plugin\.py::\w+ (\w+)", tests.stdout)
    assert v3_results and set(v3_results) == {"PASSED"}, report
