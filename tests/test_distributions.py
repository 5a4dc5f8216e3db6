"""Every distribution in the repository builds a wheel that works once installed from it.

The core and every ``packages/stoq-plugin-*`` folder (found, not listed, so new plugins are
covered) are built into wheels, installed together into one fresh virtual environment, and each
plugin is loaded there through its entry point and made to scan something, in a subprocess that
sees nothing of this checkout. This is what ``pip install stoq-plugin-x`` gives a user.

Slow (a venv and a pip install): ``pytest -m "not slow"`` leaves it out.
"""

from __future__ import annotations

import configparser
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    path.name
    for path in (ROOT / "packages").glob("stoq-plugin-*")
    if (path / "pyproject.toml").is_file()
)

# The fixture builds and installs everything once for the module; the timeout covers that too.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

BUILD_TIMEOUT = 300
VENV_TIMEOUT = 120
INSTALL_TIMEOUT = 600
SMOKE_TIMEOUT = 120


def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@dataclass(frozen=True)
class Smoke:
    """What to scan with a plugin named in ``always_dispatch``, and what its response must hold."""

    content: bytes
    check: Callable[[dict[str, Any]], bool]


# One entry per plugin name; a plugin without one is only loaded (the generic fallback).
SMOKES = {
    "hash": Smoke(
        b"hello",
        lambda response: (
            response["results"][0]["workers"]["hash"]
            == {
                "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                "md5": "5d41402abc4b2a76b9719d911017c592",
                "sha1": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
            }
        ),
    ),
    "decompress": Smoke(
        _zip_of({"inner.txt": b"inside"}),
        lambda response: (
            response["results"][0]["workers"]["decompress"]["archive_type"] == "zip"
            and [r["payload_meta"]["extra_data"]["filename"] for r in response["results"][1:]]
            == ["inner.txt"]
        ),
    ),
    "smtp": Smoke(
        b"From: a@example.com\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\n%PDF\r\n--b--\r\n',
        lambda response: (
            response["results"][0]["workers"]["smtp"]["subject"] == "hi"
            and [r["payload_meta"]["extra_data"]["filename"] for r in response["results"][1:]]
            == ["a.pdf"]
        ),
    ),
}

LOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import stoq_core
    name, base_dir = sys.argv[1:3]
    plugin = stoq_core.Stoq(log_dir=None, base_dir=base_dir).load_plugin(name)
    print(stoq_core.__file__)
    print(type(plugin).__name__)
    """
)


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: Version
    requires: tuple[Requirement, ...]
    plugins: tuple[str, ...]  # entry-point names in the stoq.plugins group


@dataclass(frozen=True)
class Installed:
    python: Path
    venv: Path
    core: Wheel
    plugins: dict[str, Wheel]  # by package folder name
    workdir: Path


def _run(
    args: list[Any], timeout: int, cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command bounded by ``timeout``, isolated from this checkout and this interpreter's
    environment, and fail the test with its output if it fails."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra_env or {})
    try:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout}s: {' '.join(map(str, args))}")
    if result.returncode != 0:
        pytest.fail(
            f"exit {result.returncode}: {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def _build_wheel(source: Path, outdir: Path) -> Wheel:
    before = set(outdir.glob("*.whl"))
    # Without isolation when hatchling is here already (fast, offline); else build fetches it.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    _run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", outdir, source],
        BUILD_TIMEOUT,
        outdir,
    )
    [built] = set(outdir.glob("*.whl")) - before
    return _read_wheel(built)


def _read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        dist_info = next(
            n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA")
        )
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        try:
            entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        except KeyError:
            entry_points = ""
    fields = [
        line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line
    ]
    groups = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    groups.optionxform = str  # type: ignore[assignment,method-assign]  # keep names as written
    groups.read_string(entry_points)
    plugins = tuple(groups["stoq.plugins"]) if groups.has_section("stoq.plugins") else ()
    return Wheel(
        path=path,
        name=canonicalize_name(next(value for key, value in fields if key == "Name")),
        version=Version(next(value for key, value in fields if key == "Version")),
        requires=tuple(Requirement(value) for key, value in fields if key == "Requires-Dist"),
        plugins=plugins,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The core's and every plugin's wheel, installed into one fresh venv (dependencies from the
    package index)."""
    base = tmp_path_factory.mktemp("distributions")
    wheels = base / "wheels"
    wheels.mkdir()
    core = _build_wheel(ROOT, wheels)
    plugins = {package: _build_wheel(ROOT / "packages" / package, wheels) for package in PACKAGES}
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv], VENV_TIMEOUT, base)
    python = venv / "bin" / "python"
    wheel_files = [core.path, *(wheel.path for wheel in plugins.values())]
    _run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *wheel_files],
        INSTALL_TIMEOUT,
        base,
    )
    workdir = base / "work"  # an empty cwd, so nothing of the checkout is importable
    workdir.mkdir()
    return Installed(python, venv, core, plugins, workdir)


def test_the_core_wheel_declares_no_plugin(installed: Installed) -> None:
    assert installed.core.name == "stoq-core"
    assert installed.core.plugins == ()


@pytest.mark.parametrize("package", PACKAGES)
def test_each_plugin_requires_a_core_range_that_includes_this_core(
    installed: Installed, package: str
) -> None:
    wheel = installed.plugins[package]
    [core_requirement] = [r for r in wheel.requires if canonicalize_name(r.name) == "stoq-core"]
    assert core_requirement.specifier.contains(installed.core.version, prereleases=True), (
        f"{package} requires {core_requirement}, which excludes this core ({installed.core.version})"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_each_plugin_declares_a_stoq_plugins_entry_point(
    installed: Installed, package: str
) -> None:
    assert installed.plugins[package].plugins, (
        f"{package} declares no entry point in 'stoq.plugins'"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_each_plugin_works_from_its_installed_wheel(installed: Installed, package: str) -> None:
    for name in installed.plugins[package].plugins:
        smoke = SMOKES.get(name)
        if smoke is None:
            result = _run(
                [installed.python, "-c", LOAD_SCRIPT, name, installed.workdir],
                SMOKE_TIMEOUT,
                installed.workdir,
            )
            core_file, _ = result.stdout.splitlines()[-2:]
        else:
            # What a user runs: the installed console script, in a directory of its own.
            sample = installed.workdir / f"{name}.sample"
            sample.write_bytes(smoke.content)
            result = _run(
                [installed.venv / "bin" / "stoq", "scan", sample, "-a", name, "--compact"],
                SMOKE_TIMEOUT,
                installed.workdir,
                {"STOQ_HOME": str(installed.workdir / "home")},
            )
            response = json.loads(result.stdout)
            assert response["errors"] == [], f"{name}: {response['errors']}"
            assert smoke.check(response), f"{name}: unexpected response {result.stdout[:2000]}"
            core_file = _run(
                [installed.python, "-c", "import stoq_core; print(stoq_core.__file__)"],
                SMOKE_TIMEOUT,
                installed.workdir,
            ).stdout.strip()
        # The plugin ran against the installed core wheel, not this checkout's source.
        assert Path(core_file).resolve().is_relative_to(installed.venv.resolve())
