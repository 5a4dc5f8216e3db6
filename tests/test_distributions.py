"""Every distribution in the repository builds a wheel that works once installed from it.

The core and every ``packages/stoq-plugin-*`` folder (found, not listed, so new plugins are
covered) are built into wheels, installed together into one fresh virtual environment, and each
plugin is loaded there through its entry point and made to scan something, in a subprocess that
sees nothing of this checkout. This is what ``pip install stoq-plugin-x`` gives a user.

Each is built as a user of the package index gets it: the sdist, then the wheel from the
sdist (so a file the sdist lacks breaks the wheel). What the files hold is checked too: the
LICENSE, the license, author and URL metadata, a long description fit for the index, and a
core sdist without the plugins (issue 15).

Slow (a venv and a pip install): ``pytest -m "not slow"`` leaves it out.
"""

from __future__ import annotations

import configparser
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomllib
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


def _load_release() -> ModuleType:
    # tools/release.py's checks of built files, the ones nox -s build makes before an upload.
    spec = importlib.util.spec_from_file_location("stoq_release_tool", ROOT / "tools/release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


release = _load_release()
LICENSE = (ROOT / "LICENSE").read_text()
with open(ROOT / "pyproject.toml", "rb") as _handle:
    REPOSITORY = tomllib.load(_handle)["project"]["urls"]["Repository"]


@dataclass(frozen=True)
class Wheel:
    path: Path
    sdist: Path  # the sdist the wheel was built from
    source: Path  # the project folder
    metadata: str  # the wheel's METADATA, long description included
    licenses: dict[str, str]  # the wheel's .dist-info/licenses/ files by name
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
    before = set(outdir.iterdir())
    # Without isolation when hatchling is here already (fast, offline); else build fetches it.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    # No --wheel: the sdist first, then the wheel from it, as pip builds from an sdist.
    _run(
        [sys.executable, "-m", "build", *isolation, "--outdir", outdir, source],
        BUILD_TIMEOUT,
        outdir,
    )
    new = set(outdir.iterdir()) - before
    [built] = [path for path in new if path.suffix == ".whl"]
    [sdist] = [path for path in new if path.name.endswith(".tar.gz")]
    return _read_wheel(built, sdist, source)


def _read_wheel(path: Path, sdist: Path, source: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        dist_info = next(
            n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA")
        )
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        try:
            entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        except KeyError:
            entry_points = ""
        prefix = f"{dist_info}/licenses/"
        licenses = {
            name.removeprefix(prefix): archive.read(name).decode()
            for name in archive.namelist()
            if name.startswith(prefix)
        }
    fields = [
        line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line
    ]
    groups = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    groups.optionxform = str  # type: ignore[assignment,method-assign]  # keep names as written
    groups.read_string(entry_points)
    plugins = tuple(groups["stoq.plugins"]) if groups.has_section("stoq.plugins") else ()
    return Wheel(
        path=path,
        sdist=sdist,
        source=source,
        metadata=metadata,
        licenses=licenses,
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


# -- what a published file holds (issue 15) --------------------------------------------------


DISTRIBUTIONS = ["stoq-core", *PACKAGES]


def _built(installed: Installed, distribution: str) -> Wheel:
    return installed.core if distribution == "stoq-core" else installed.plugins[distribution]


def _sdist_files(sdist: Path) -> dict[str, bytes]:
    with tarfile.open(sdist) as archive:
        return {
            member.name.split("/", 1)[1]: handle.read()
            for member in archive.getmembers()
            if member.isfile() and (handle := archive.extractfile(member)) is not None
        }


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_each_wheel_and_sdist_holds_the_repositorys_license(
    installed: Installed, distribution: str
) -> None:
    built = _built(installed, distribution)

    assert built.licenses == {"LICENSE": LICENSE}
    assert _sdist_files(built.sdist)["LICENSE"].decode() == LICENSE
    headers = built.metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_each_distribution_names_its_authors_and_the_repositorys_urls(
    installed: Installed, distribution: str
) -> None:
    headers = _built(installed, distribution).metadata.split("\n\n", 1)[0].splitlines()
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1)
        for line in headers
        if line.startswith("Project-URL: ")
    )

    assert any(line.startswith("Author: ") for line in headers)
    assert urls["Repository"] == REPOSITORY
    assert urls["Changelog"] == f"{REPOSITORY}/blob/main/CHANGELOG.md"
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert urls["Homepage"].startswith(REPOSITORY)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_each_long_description_has_no_relative_link_nor_an_install_from_a_clone(
    installed: Installed, distribution: str
) -> None:
    description = _built(installed, distribution).metadata.split("\n\n", 1)[1]

    # Every link is absolute: the package index serves none of the repository's files.
    links = re.findall(r"\]\(([^)\s]*)\)", description)
    assert [link for link in links if not link.startswith(("https://", "http://"))] == []
    assert "./packages/" not in description
    assert description.strip()


def test_the_core_sdist_holds_the_core_and_none_of_the_plugins(installed: Installed) -> None:
    files = _sdist_files(installed.core.sdist)
    tops = {name.split("/", 1)[0] for name in files}

    assert not [name for name in files if name.startswith("packages/")]
    assert {"src", "tests", "pyproject.toml", "LICENSE", "CHANGELOG.md"} <= tops
    assert "src/stoq_core/__init__.py" in files


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_release_tool_finds_each_built_distribution_fit_to_publish(
    installed: Installed, distribution: str
) -> None:
    built = _built(installed, distribution)
    [package] = [p for p in release.discover(ROOT) if p.path == built.source]

    assert release.artifact_problems(package, [built.path, built.sdist], LICENSE) == []
