"""``stoq install``: v3 plugin directories are copied to $STOQ_HOME/plugins, the rest go to pip.

pip installs into the environment stoq runs in, so those tests run the CLI (``python -m
stoq_cli``) with a throwaway virtual environment's interpreter, never this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli_support import Done, StoqRunner, write_legacy_plugin

WHEEL_MODULE = """\
from stoq_core import WorkerResponse, hookimpl


class Wheeled:
    def __init__(self, config):
        pass

    @hookimpl
    async def scan(self, payload, request):
        return WorkerResponse({"from_wheel": True})
"""


def build_wheel(directory: Path, version: str) -> Path:
    """A minimal wheel of ``stoq-plugin-wheeltest`` declaring the ``wheeltest`` plugin."""
    info = f"stoq_plugin_wheeltest-{version}.dist-info"
    files = {
        "wheeltest_plugin.py": WHEEL_MODULE,
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: stoq-plugin-wheeltest\nVersion: {version}\n"
            "Summary: a plugin from a wheel\n"
        ),
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": "[stoq.plugins]\nwheeltest = wheeltest_plugin:Wheeled\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"stoq_plugin_wheeltest-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


class Venv:
    """A throwaway environment whose interpreter sees this one's packages (stoq, click, pip)."""

    def __init__(self, root: Path, stoq: StoqRunner) -> None:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120
        )
        self.python = root / "bin" / "python"
        self.site = Path(
            subprocess.run(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                capture_output=True, text=True, check=True, timeout=60,
            ).stdout.strip()
        )  # fmt: skip
        # This interpreter's path (stoq_core, click, rich, pip...) after the venv's own site.
        self.env = {**stoq.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.cwd = stoq.cwd

    def stoq(self, *args: str) -> Done:
        done = subprocess.run(
            [str(self.python), "-m", "stoq_cli", *args],
            stdin=subprocess.DEVNULL, capture_output=True, env=self.env, cwd=self.cwd, timeout=300,
        )  # fmt: skip
        return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def venv(tmp_path: Path, stoq: StoqRunner) -> Venv:
    return Venv(tmp_path / "venv", stoq)


# -- v3 plugin directories -------------------------------------------------------------------


def test_a_v3_plugin_directory_is_copied_to_stoq_home_and_scans(
    stoq: StoqRunner, tmp_path: Path, sample: Path
) -> None:
    source = write_legacy_plugin(tmp_path / "downloads")

    done = stoq("install", str(source))

    assert done.code == 0, done.err
    target = stoq.home / "plugins" / "echo3"
    assert done.out == f"installed plugin echo3 3.0.1 in {target}\n"
    assert (target / "echo3.stoq").is_file()
    scanned = stoq("scan", str(sample), "-s", "echo3")
    assert scanned.json()["results"][0]["workers"]["echo3"] == {"legacy": "3.0.1"}


def test_installing_a_v3_directory_twice_needs_upgrade(stoq: StoqRunner, tmp_path: Path) -> None:
    source = write_legacy_plugin(tmp_path / "downloads")
    assert stoq("install", str(source)).code == 0

    done = stoq("install", str(source))

    assert done.code == 2
    assert done.err.startswith("stoq: error: ")
    assert "already exists; add --upgrade to replace it" in done.err


def test_upgrade_replaces_a_v3_directory(stoq: StoqRunner, tmp_path: Path) -> None:
    assert stoq("install", str(write_legacy_plugin(tmp_path / "old"))).code == 0
    (stoq.home / "plugins" / "echo3" / "stale.txt").write_text("from the old copy")

    done = stoq("install", "--upgrade", str(write_legacy_plugin(tmp_path / "new", version="3.1")))

    assert done.code == 0, done.err
    assert "installed plugin echo3 3.1 in" in done.out
    assert not (stoq.home / "plugins" / "echo3" / "stale.txt").exists()


def test_a_missing_path_is_an_input_error(stoq: StoqRunner, tmp_path: Path) -> None:
    missing = tmp_path / "dist" / "nothing.whl"

    done = stoq("install", str(missing))

    assert (done.code, done.out) == (2, "")
    assert done.err == f"stoq: error: {missing}: no such file or directory\n"


def test_install_needs_a_spec(stoq: StoqRunner) -> None:
    done = stoq("install")

    assert done.code == 2
    assert done.err.startswith("stoq: error: Missing argument 'SPEC...'")


# -- distributions through pip ---------------------------------------------------------------


def test_a_wheel_is_installed_with_pip_and_its_plugins_listed(venv: Venv, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist", "1.0")

    done = venv.stoq("install", str(wheel))

    assert done.code == 0, done.err
    # (Lines for other plugins would be another process installing into this environment.)
    assert "installed plugin wheeltest 1.0 from stoq-plugin-wheeltest" in done.out.splitlines()
    assert all(
        line.startswith(("installed plugin", "updated plugin")) for line in done.out.splitlines()
    )
    assert "Successfully installed stoq-plugin-wheeltest-1.0" in done.err  # pip's own words
    assert (venv.site / "wheeltest_plugin.py").is_file()


def test_upgrade_installs_a_newer_distribution_and_says_what_changed(
    venv: Venv, tmp_path: Path
) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path / "old", "1.0")) as archive:
        archive.extractall(venv.site)  # version 1.0, installed as pip would have
    newer = build_wheel(tmp_path / "new", "2.0")

    done = venv.stoq("install", "--upgrade", str(newer))

    assert done.code == 0, done.err
    expected = "updated plugin wheeltest 2.0 from stoq-plugin-wheeltest (was 1.0)"
    assert expected in done.out.splitlines()


def test_a_failing_pip_exits_1(venv: Venv) -> None:
    done = venv.stoq("install", "stoq-plugin-that-does-not-exist-anywhere")

    assert (done.code, done.out) == (1, "")
    assert done.err.splitlines()[-1].startswith("stoq: error: pip install failed (exit 1)")
