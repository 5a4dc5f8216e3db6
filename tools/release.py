"""Release checks and builds for every distribution of this monorepo (see RELEASING.md).

    python tools/release.py check                    # versions, core ranges, entry points,
                                                     # licenses, URLs, changelog, descriptions
    python tools/release.py build                    # every package
    python tools/release.py build stoq-plugin-yara   # one plugin (and the core it needs)

``build`` runs ``check``, builds each package's sdist and wheel into ``dist/`` (replacing that
package's earlier files there), checks what they hold (``artifact_problems``: the LICENSE, the
metadata, a long description fit for the package index, a core sdist without the plugins),
runs ``twine check`` on them, installs the wheels into a fresh
virtual environment in the temporary directory (outside the repository, so nothing of the
checkout is importable), and runs a smoke test per plugin with that environment's ``stoq``.
``nox -s build`` runs it in a session that has build, hatchling and twine; the tests in
tests/test_release.py import it for the checks.

Standard library only, plus ``packaging`` (which ``build`` brings).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import tomllib
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
CORE = "stoq-core"
ENTRY_POINT_GROUP = "stoq.plugins"
LICENSE = "Apache-2.0"
CHANGELOG = "CHANGELOG.md"

BUILD_TIMEOUT = 600
INSTALL_TIMEOUT = 900
SMOKE_TIMEOUT = 180


class ReleaseError(Exception):
    """A check failed or a step of the build did not work; the message says which."""


@dataclasses.dataclass(frozen=True)
class Package:
    """One distribution of the repository, read from its pyproject.toml."""

    name: str  #: the distribution's name, e.g. stoq-plugin-yara
    path: Path  #: its project directory
    version: Optional[str]  #: None when it declares none of its own
    requires: tuple[str, ...]  #: its dependencies, as written
    entry_points: dict[str, str]  #: its ``stoq.plugins`` entry points
    #: its whole ``[project]`` table, for the publishing checks
    project: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def is_core(self) -> bool:
        return canonicalize_name(self.name) == CORE

    @property
    def file_stem(self) -> str:
        """How wheels and sdists spell the name: ``stoq_plugin_yara``."""
        return canonicalize_name(self.name).replace("-", "_")

    def core_requirement(self) -> Optional[Requirement]:
        """The ``stoq-core`` requirement of a plugin; None when it has none."""
        for text in self.requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if canonicalize_name(requirement.name) == CORE:
                return requirement
        return None


def read_package(path: Path) -> Package:
    """The package whose ``pyproject.toml`` is in ``path``."""
    with open(path / "pyproject.toml", "rb") as handle:
        pyproject = tomllib.load(handle)
    project = pyproject.get("project", {})
    version = project.get("version")
    if version is None and "version" in project.get("dynamic", []):
        version = _hatch_version(path, pyproject)
    return Package(
        name=project.get("name", path.name),
        path=path,
        version=version,
        requires=tuple(project.get("dependencies", [])),
        entry_points=dict(project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})),
        project=project,
    )


def _hatch_version(path: Path, pyproject: dict[str, Any]) -> Optional[str]:
    """A dynamic version that hatch reads from a file of this package (``__version__ = ...``)."""
    source = pyproject.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
    if not source:
        return None
    file = (path / source).resolve()
    if not file.is_relative_to(path.resolve()) or not file.is_file():
        return None
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", file.read_text(), re.M)
    return match.group(1) if match else None


def discover(root: Path = ROOT) -> list[Package]:
    """The core (the repository root) and every ``packages/stoq-plugin-*`` with a pyproject."""
    plugins = sorted(
        path
        for path in (root / "packages").glob("stoq-plugin-*")
        if (path / "pyproject.toml").is_file()
    )
    return [read_package(root), *(read_package(path) for path in plugins)]


def check(packages: Sequence[Package]) -> list[str]:
    """Every reason the packages cannot be released together; empty when they can.

    - each package has a valid version of its own;
    - each plugin requires a stoq-core range that includes the core's current version;
    - no entry-point name in ``stoq.plugins`` is claimed by two packages;
    - the core claims no plugin name.
    """
    problems: list[str] = []
    core = next((p for p in packages if p.is_core), None)
    core_version: Optional[Version] = None
    if core is None:
        problems.append(f"no {CORE} package found")
    for package in packages:
        if package.version is None:
            problems.append(f"{package.name}: declares no version of its own")
            continue
        try:
            version = Version(package.version)
        except InvalidVersion:
            problems.append(f"{package.name}: version {package.version!r} is not PEP 440")
            continue
        if package.is_core:
            core_version = version
    claims: dict[str, list[str]] = {}
    for package in packages:
        for name in package.entry_points:
            claims.setdefault(name, []).append(package.name)
        if package.is_core:
            if package.entry_points:
                problems.append(f"{package.name}: the core declares plugins in {ENTRY_POINT_GROUP}")
            continue
        requirement = package.core_requirement()
        if requirement is None:
            problems.append(f"{package.name}: does not require {CORE}")
        elif core_version is not None and not requirement.specifier.contains(
            core_version, prereleases=True
        ):
            problems.append(
                f"{package.name}: requires {requirement}, which excludes {CORE} {core_version}"
            )
        if not package.entry_points:
            problems.append(f"{package.name}: declares no entry point in {ENTRY_POINT_GROUP}")
    for name, owners in sorted(claims.items()):
        if len(owners) > 1:
            problems.append(f"plugin name {name!r} is claimed by {' and '.join(owners)}")
    return problems


def repository_url(packages: Sequence[Package]) -> Optional[str]:
    """The repository's URL: the core's ``[project.urls] Repository``, the one place it is set."""
    core = next((p for p in packages if p.is_core), None)
    url = core.project.get("urls", {}).get("Repository") if core else None
    return url.rstrip("/") if isinstance(url, str) and url else None


def expected_urls(package: Package, repository: str) -> dict[str, str]:
    """The ``[project.urls]`` entries every package must have, all under ``repository``."""
    home = repository if package.is_core else f"{repository}/tree/main/packages/{package.path.name}"
    return {
        "Homepage": home,
        "Repository": repository,
        "Issues": f"{repository}/issues",
        "Changelog": f"{repository}/blob/main/{CHANGELOG}",
    }


# A Markdown link or image whose target is not an absolute http(s) URL: on the package index
# it would point nowhere (it is relative to the repository, which the index does not serve).
_RELATIVE_LINK = re.compile(r"\]\((?!https?://)([^)\s]*)\)")
# Text that installs from a folder of a clone, which a reader of the index does not have.
_CLONE_INSTALL = re.compile(r"\./packages/")


def description_problems(name: str, text: str) -> list[str]:
    """Why ``text``, a long description, would be wrong on the package index."""
    problems = [
        f"{name}: its long description links to {target!r}, which is relative to the repository"
        for target in _RELATIVE_LINK.findall(text)
    ]
    if _CLONE_INSTALL.search(text):
        problems.append(
            f"{name}: its long description installs from ./packages/, a folder of a clone"
        )
    return problems


def metadata_problems(root: Path, packages: Sequence[Package]) -> list[str]:
    """Every reason a package's publishing metadata is not ready; empty when all are.

    - each declares ``license = "Apache-2.0"`` and ``license-files = ["LICENSE"]``, and its
      LICENSE is the repository's;
    - each has authors, and ``[project.urls]`` under the core's Repository URL;
    - CHANGELOG.md has a ``## NAME VERSION`` section for each package's current version;
    - no long description has a relative link or installs from ``./packages/``.
    """
    problems: list[str] = []
    repository = repository_url(packages)
    if repository is None:
        problems.append(f"{CORE}: no Repository in [project.urls] (the one place it is set)")
    root_license = root / "LICENSE"
    license_text = root_license.read_text() if root_license.is_file() else None
    if license_text is None:
        problems.append("the repository has no LICENSE file")
    changelog_file = root / CHANGELOG
    changelog = changelog_file.read_text() if changelog_file.is_file() else ""
    for package in packages:
        project = package.project
        name = package.name
        if project.get("license") != LICENSE:
            problems.append(f"{name}: license is {project.get('license')!r}, not {LICENSE!r}")
        if project.get("license-files") != ["LICENSE"]:
            problems.append(f'{name}: license-files is not ["LICENSE"]')
        own = package.path / "LICENSE"
        if license_text is not None and (not own.is_file() or own.read_text() != license_text):
            problems.append(f"{name}: {own} is missing or differs from the repository's LICENSE")
        if not project.get("authors"):
            problems.append(f"{name}: declares no authors")
        if repository is not None:
            urls = project.get("urls", {})
            for key, url in expected_urls(package, repository).items():
                if urls.get(key) != url:
                    problems.append(
                        f"{name}: [project.urls] {key} is {urls.get(key)!r}, not {url!r}"
                    )
        if package.version is not None:
            heading = re.compile(
                rf"^## {re.escape(name)} {re.escape(package.version)}(?: |$)", re.M
            )
            if not heading.search(changelog):
                problems.append(f"{name}: {CHANGELOG} has no '## {name} {package.version}' section")
        readme = project.get("readme")
        if isinstance(readme, str) and (package.path / readme).is_file():
            problems += description_problems(name, (package.path / readme).read_text())
        else:
            problems.append(f"{name}: its readme {readme!r} is not a file")
    return problems


def artifact_problems(package: Package, files: Sequence[Path], license_text: str) -> list[str]:
    """Why a package's built wheel and sdist are not fit to publish; empty when they are.

    Each holds the LICENSE; the wheel's metadata has the license expression, authors and URLs,
    and a long description fit for the package index; the core's sdist holds only the core
    (no ``packages/``, whose plugins are distributions of their own).
    """
    problems: list[str] = []
    name = package.name
    for path in files:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                names = wheel.namelist()
                info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
                metadata = wheel.read(f"{info}/METADATA").decode()
                licensed = f"{info}/licenses/LICENSE" in names and (
                    wheel.read(f"{info}/licenses/LICENSE").decode() == license_text
                )
            headers, _, description = metadata.partition("\n\n")
            fields = [line.split(": ", 1)[0] for line in headers.splitlines()]
            if not licensed:
                problems.append(f"{path.name}: no {info}/licenses/LICENSE, or not the repository's")
            if f"License-Expression: {LICENSE}" not in headers.splitlines():
                problems.append(f"{path.name}: no License-Expression: {LICENSE}")
            for field in ("Author", "Project-URL"):
                if field not in fields and f"{field}-email" not in fields:
                    problems.append(f"{path.name}: no {field} in its metadata")
            problems += description_problems(path.name, description)
        else:
            members = sdist_members(path)
            if members.get("LICENSE") != license_text.encode():
                problems.append(f"{path.name}: no LICENSE, or not the repository's")
            strays = sorted({m for m in members if m.startswith("packages/")})
            if package.is_core and strays:
                problems.append(f"{path.name}: holds {len(strays)} files of packages/ (plugins)")
    if not files:
        problems.append(f"{name}: nothing was built")
    return problems


def sdist_members(path: Path) -> dict[str, bytes]:
    """An sdist's files by their path under its top folder (``LICENSE``, ``src/...``)."""
    with tarfile.open(path) as sdist:
        members: dict[str, bytes] = {}
        for member in sdist.getmembers():
            handle = sdist.extractfile(member) if member.isfile() else None
            if handle is not None and "/" in member.name:
                members[member.name.split("/", 1)[1]] = handle.read()
        return members


def select(packages: Sequence[Package], wanted: Sequence[str]) -> list[Package]:
    """The packages named (by distribution or folder name), the core always among them."""
    if not wanted:
        return list(packages)
    by_name: dict[str, Package] = {}
    for package in packages:
        by_name[canonicalize_name(package.name)] = package
        by_name[canonicalize_name(package.path.name)] = package
    chosen: dict[str, Package] = {p.name: p for p in packages if p.is_core}
    for name in wanted:
        found = by_name.get(canonicalize_name(name))
        if found is None:
            known = ", ".join(p.name for p in packages)
            raise ReleaseError(f"no package named {name!r} (packages: {known})")
        chosen[found.name] = found
    return sorted(chosen.values(), key=lambda p: (not p.is_core, p.name))


# -- running things -------------------------------------------------------------------------


def _env() -> dict[str, str]:
    # Nothing of this checkout or of the caller's environment leaks into the built venv.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "STOQ_HOME", "STOQ_DEBUG")
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(
    args: Sequence[Any],
    *,
    cwd: Path,
    timeout: int,
    env: Optional[dict[str, str]] = None,
    strict: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within ``timeout``; with ``strict``, raise if it fails."""
    words = [str(a) for a in args]
    print("+", " ".join(words), flush=True)
    try:
        done = subprocess.run(
            words,
            cwd=cwd,
            env=env or _env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"timed out after {timeout} s: {' '.join(words)}") from None
    if strict and done.returncode != 0:
        raise ReleaseError(
            f"exit {done.returncode}: {' '.join(words)}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done


def build_package(package: Package, dist: Path) -> list[Path]:
    """The package's sdist and wheel, built into ``dist`` (its earlier files there removed)."""
    for old in dist.glob(f"{package.file_stem}-*"):
        old.unlink()
    # Without isolation when hatchling is here (offline, fast); else build fetches it.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    run(
        [sys.executable, "-m", "build", *isolation, "--outdir", dist, package.path],
        cwd=package.path,
        timeout=BUILD_TIMEOUT,
    )
    built = sorted(dist.glob(f"{package.file_stem}-{package.version}*"))
    kinds = {path.suffix for path in built}
    if kinds != {".whl", ".gz"}:
        raise ReleaseError(f"{package.name}: expected a wheel and an sdist, got {built}")
    return built


def twine_check(files: Sequence[Path], cwd: Path) -> None:
    if importlib.util.find_spec("twine") is None:
        raise ReleaseError("twine is not installed here: pip install twine (nox -s build has it)")
    run([sys.executable, "-m", "twine", "check", "--strict", *files], cwd=cwd, timeout=300)


# -- smoke tests ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Venv:
    """The fresh environment the wheels are installed into."""

    path: Path
    work: Path  #: an empty working directory, and $STOQ_HOME under it

    @property
    def stoq(self) -> Path:
        return self.path / "bin" / "stoq"

    def env(self) -> dict[str, str]:
        return {**_env(), "STOQ_HOME": str(self.work / "home")}

    def scan(self, content: bytes, *args: str) -> dict[str, Any]:
        sample = self.work / "sample.bin"
        sample.write_bytes(content)
        done = run(
            [self.stoq, "scan", sample, "--compact", *args],
            cwd=self.work,
            timeout=SMOKE_TIMEOUT,
            env=self.env(),
            strict=False,
        )
        # Exit 1 means a response holds errors: the check below shows them.
        if done.returncode not in (0, 1):
            raise ReleaseError(f"stoq scan exited {done.returncode}: {done.stderr[-2000:]}")
        if not done.stdout.strip():
            return {}
        response: dict[str, Any] = json.loads(done.stdout)
        return response


def _zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _expect(condition: bool, plugin: str, what: str, seen: Any) -> None:
    if not condition:
        raise ReleaseError(f"smoke test of {plugin}: {what}; got {json.dumps(seen)[:2000]}")


def _smoke_hash(venv: Venv) -> str:
    response = venv.scan(b"hello", "-s", "hash")
    _expect(response.get("errors") == [], "hash", "no errors expected", response)
    sha256 = response["results"][0]["workers"].get("hash", {}).get("sha256")
    expected = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    _expect(sha256 == expected, "hash", "the sha256 of b'hello'", response["results"][0])
    return "scan -s hash: the sha256 of b'hello'"


def _smoke_yara(venv: Venv) -> str:
    response = venv.scan(b"MZ and no PE header", "-s", "yara")
    _expect(response.get("errors") == [], "yara", "no errors expected", response)
    matches = response["results"][0]["workers"].get("yara", {}).get("matches", [])
    rules = [match.get("rule") for match in matches]
    _expect("dos_executable" in rules, "yara", "the default rule dos_executable", matches)
    return "scan -s yara: the default rules match dos_executable"


def _smoke_decompress(venv: Venv) -> str:
    response = venv.scan(_zip_of({"inner.txt": b"inside"}), "-s", "decompress")
    _expect(response.get("errors") == [], "decompress", "no errors expected", response)
    results = response["results"]
    names = [r["payload_meta"]["extra_data"].get("filename") for r in results[1:]]
    _expect(names == ["inner.txt"], "decompress", "inner.txt extracted from the zip", results)
    return "scan -s decompress: a zip's member extracted"


def _smoke_filedir(venv: Venv) -> str:
    out = venv.work / "results"
    response = venv.scan(
        b"saved by filedir", "-C", "filedir", "--plugin-opts", f"filedir:results_dir={out}"
    )
    _expect(response == {}, "filedir", "stdout empty: the connector took the response", response)
    saved = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
    _expect(len(saved) == 1, "filedir", f"one result file under {out}", [str(p) for p in saved])
    result = json.loads(saved[0].read_text())
    size = result["results"][0]["size"]
    _expect(size == len(b"saved by filedir"), "filedir", "the saved response", result)
    return f"scan -C filedir: the response saved to {saved[0].name}"


def _smoke_load(name: str) -> Callable[[Venv], str]:
    def smoke(venv: Venv) -> str:
        done = run(
            [venv.stoq, "plugin", "check", name],
            cwd=venv.work,
            timeout=SMOKE_TIMEOUT,
            env=venv.env(),
            strict=False,
        )
        line = done.stdout.strip()
        _expect(done.returncode == 0 and line.startswith(f"{name}: ok"), name, "it loads", line)
        return f"plugin check: {line}"

    return smoke


#: What each plugin is made to do; any other plugin is loaded with ``stoq plugin check``.
#: redis needs a server to scan anything, so it is only loaded.
SMOKES: dict[str, Callable[[Venv], str]] = {
    "hash": _smoke_hash,
    "yara": _smoke_yara,
    "decompress": _smoke_decompress,
    "filedir": _smoke_filedir,
}


def make_venv(wheels: Sequence[Path], parent: Path) -> Venv:
    """A fresh venv under ``parent`` with ``wheels`` installed (dependencies from the index)."""
    path = parent / "venv"
    run([sys.executable, "-m", "venv", path], cwd=parent, timeout=300)
    python = path / "bin" / "python"
    run(
        [python, "-m", "pip", "install", "--quiet", *wheels],
        cwd=parent,
        timeout=INSTALL_TIMEOUT,
    )
    work = parent / "work"
    work.mkdir()
    return Venv(path, work)


def smoke(packages: Sequence[Package], venv: Venv) -> list[str]:
    """Run each plugin's smoke test in ``venv``; returns one line per plugin."""
    done = run([venv.stoq, "--version"], cwd=venv.work, timeout=SMOKE_TIMEOUT, env=venv.env())
    lines = [done.stdout.splitlines()[0]]
    for package in packages:
        for name in sorted(package.entry_points):
            test = SMOKES.get(name, _smoke_load(name))
            lines.append(f"{package.name} {package.version} [{name}] {test(venv)}")
    return lines


def build(root: Path, wanted: Sequence[str], dist: Optional[Path] = None) -> list[str]:
    """``check``, then build, twine-check, install and smoke-test the chosen packages."""
    packages = discover(root)
    problems = check(packages) + metadata_problems(root, packages)
    if problems:
        raise ReleaseError("release checks failed:\n  " + "\n  ".join(problems))
    chosen = select(packages, wanted)
    dist = dist or root / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    built = {package.name: build_package(package, dist) for package in chosen}
    license_text = (root / "LICENSE").read_text()
    problems = [
        problem
        for package in chosen
        for problem in artifact_problems(package, built[package.name], license_text)
    ]
    if problems:
        raise ReleaseError("the built files are not fit to publish:\n  " + "\n  ".join(problems))
    files = [path for paths in built.values() for path in paths]
    twine_check(files, root)
    wheels = [path for path in files if path.suffix == ".whl"]
    scratch = Path(tempfile.mkdtemp(prefix="stoq-release-"))
    try:
        venv = make_venv(wheels, scratch)
        lines = smoke(chosen, venv)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    shown = [path.relative_to(root) if path.is_relative_to(root) else path for path in files]
    return [*(f"built {path}" for path in shown), *lines]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/release.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="version, core range and entry-point checks")
    build_parser = commands.add_parser("build", help="build, twine check, install, smoke test")
    build_parser.add_argument("packages", nargs="*", help="e.g. stoq-plugin-yara [default: all]")
    build_parser.add_argument("--dist", type=Path, help="output directory [default: dist/]")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            packages = discover(ROOT)
            problems = check(packages) + metadata_problems(ROOT, packages)
            for problem in problems:
                print(f"release check failed: {problem}", file=sys.stderr)
            if problems:
                return 1
            for package in packages:
                print(f"{package.name} {package.version}: ok")
            return 0
        for line in build(ROOT, args.packages, args.dist):
            print(line)
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
