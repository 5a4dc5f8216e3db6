"""The release checks (RELEASING.md): fast, nothing is built.

Every distribution has its own version; every plugin's declared stoq-core range includes the
core's current version; no two packages claim one plugin name; every package has its nox
session, and the default ``nox`` runs them all. ``tools/release.py`` (what ``nox -s build`` runs)
makes the same checks before it builds; its own failure cases are tested on made-up packages.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import stoq_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = sorted(
    path
    for path in (ROOT / "packages").glob("stoq-plugin-*")
    if (path / "pyproject.toml").is_file()
)


def _load_release() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stoq_release_tool", ROOT / "tools" / "release.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


release = _load_release()


def _pyproject(directory: Path) -> dict[str, Any]:
    with open(directory / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def _core_requirement(directory: Path) -> Requirement:
    requirements = [Requirement(text) for text in _pyproject(directory)["project"]["dependencies"]]
    [core] = [r for r in requirements if canonicalize_name(r.name) == "stoq-core"]
    return core


# -- the repository as it is -----------------------------------------------------------------


def test_the_repository_passes_every_release_check() -> None:
    assert release.check(release.discover(ROOT)) == []


def test_the_release_tool_reads_the_cores_version_from_the_core() -> None:
    [core] = [p for p in release.discover(ROOT) if p.is_core]

    assert core.version == stoq_core.__version__


@pytest.mark.parametrize("directory", PACKAGE_DIRS, ids=lambda p: p.name)
def test_each_plugin_requires_a_core_range_that_includes_the_core(directory: Path) -> None:
    requirement = _core_requirement(directory)

    assert requirement.specifier.contains(Version(stoq_core.__version__), prereleases=True), (
        f"{directory.name} requires {requirement}, which excludes stoq-core {stoq_core.__version__}"
    )


@pytest.mark.parametrize("directory", PACKAGE_DIRS, ids=lambda p: p.name)
def test_each_plugin_declares_its_own_static_version(directory: Path) -> None:
    project = _pyproject(directory)["project"]

    assert "version" not in project.get("dynamic", [])
    assert Version(project["version"])  # PEP 440


def test_no_two_packages_claim_the_same_plugin_name() -> None:
    claims: dict[str, list[str]] = {}
    for directory in PACKAGE_DIRS:
        project = _pyproject(directory)["project"]
        for name in project.get("entry-points", {}).get("stoq.plugins", {}):
            claims.setdefault(name, []).append(project["name"])

    assert {name: owners for name, owners in claims.items() if len(owners) > 1} == {}
    assert claims, "no package declares a stoq.plugins entry point"


def test_each_distribution_name_is_its_folder_name() -> None:
    names = [_pyproject(directory)["project"]["name"] for directory in PACKAGE_DIRS]

    assert names == [directory.name for directory in PACKAGE_DIRS]


def _nox(*args: str) -> str:
    # Inside a nox session nox itself is not installed, but the nox that started it is on PATH.
    if importlib.util.find_spec("nox") is not None:
        command = [sys.executable, "-m", "nox"]
    elif shutil.which("nox") is not None:
        command = [str(shutil.which("nox"))]
    else:
        pytest.skip("nox is not installed")
    done = subprocess.run(
        [*command, "-f", str(ROOT / "noxfile.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_package_has_a_nox_session_that_plain_nox_runs() -> None:
    # "* name" marks the sessions a plain `nox` (the README's test command) runs.
    selected = set(re.findall(r"^\* (\S+)", _nox("-l"), re.M))

    for directory in PACKAGE_DIRS:
        assert f"package({directory.name})" in selected
    assert "tests" in selected


def test_the_build_session_exists_and_runs_only_when_named() -> None:
    # "- name" marks a session that runs only when named (nox -s name).
    listed = {name: mark for mark, name in re.findall(r"^([*-]) (\S+)", _nox("-l"), re.M)}

    assert listed.get("build") == "-"


# -- what the checks catch, on made-up repositories ------------------------------------------


def _write_project(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(text)


CORE_PYPROJECT = """
[project]
name = "stoq-core"
dynamic = ["version"]
[tool.hatch.version]
path = "src/stoq_core/__init__.py"
"""


def _plugin(
    name: str,
    version: str | None = "1.0.0",
    core: str | None = "stoq-core>=4,<5",
    plugins: tuple[str, ...] = ("x",),
) -> str:
    lines = ["[project]", f'name = "{name}"']
    if version is not None:
        lines.append(f'version = "{version}"')
    lines.append(f"dependencies = {json.dumps([core] if core else [])}")
    if plugins:
        lines.append('[project.entry-points."stoq.plugins"]')
        lines += [f'{plugin} = "{name.replace("-", "_")}:Plugin"' for plugin in plugins]
    return "\n".join(lines) + "\n"


@pytest.fixture
def repo(tmp_path: Path) -> Callable[..., list[str]]:
    """``repo(plugin_pyproject, ...)``: a made-up repository's release problems."""

    def make(*plugins: str, core_version: str = "4.2.0") -> list[str]:
        _write_project(tmp_path, CORE_PYPROJECT)
        init = tmp_path / "src" / "stoq_core" / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(f'__version__ = "{core_version}"\n')
        for index, text in enumerate(plugins):
            _write_project(tmp_path / "packages" / f"stoq-plugin-p{index}", text)
        problems: list[str] = release.check(release.discover(tmp_path))
        return problems

    return make


def test_a_made_up_repository_that_is_consistent_passes(repo: Callable[..., list[str]]) -> None:
    assert (
        repo(_plugin("stoq-plugin-a", plugins=("a",)), _plugin("stoq-plugin-b", plugins=("b",)))
        == []
    )


def test_a_core_range_that_excludes_the_core_fails_the_check(
    repo: Callable[..., list[str]],
) -> None:
    problems = repo(_plugin("stoq-plugin-a", core="stoq-core>=3,<4"), core_version="4.2.0")

    assert problems == ["stoq-plugin-a: requires stoq-core<4,>=3, which excludes stoq-core 4.2.0"]


def test_a_plugin_that_does_not_require_the_core_fails_the_check(
    repo: Callable[..., list[str]],
) -> None:
    assert repo(_plugin("stoq-plugin-a", core=None)) == [
        "stoq-plugin-a: does not require stoq-core"
    ]


def test_two_packages_claiming_one_plugin_name_fail_the_check(
    repo: Callable[..., list[str]],
) -> None:
    problems = repo(
        _plugin("stoq-plugin-a", plugins=("same",)), _plugin("stoq-plugin-b", plugins=("same",))
    )

    assert problems == ["plugin name 'same' is claimed by stoq-plugin-a and stoq-plugin-b"]


def test_a_package_without_a_version_of_its_own_fails_the_check(
    repo: Callable[..., list[str]],
) -> None:
    assert repo(_plugin("stoq-plugin-a", version=None)) == [
        "stoq-plugin-a: declares no version of its own"
    ]


def test_a_version_that_is_not_pep_440_fails_the_check(repo: Callable[..., list[str]]) -> None:
    assert repo(_plugin("stoq-plugin-a", version="one")) == [
        "stoq-plugin-a: version 'one' is not PEP 440"
    ]


def test_a_plugin_package_without_an_entry_point_fails_the_check(
    repo: Callable[..., list[str]],
) -> None:
    assert repo(_plugin("stoq-plugin-a", plugins=())) == [
        "stoq-plugin-a: declares no entry point in stoq.plugins"
    ]


# -- choosing what to build ------------------------------------------------------------------


def test_building_one_package_builds_the_core_with_it() -> None:
    chosen = release.select(release.discover(ROOT), ["stoq-plugin-hash"])

    assert [p.name for p in chosen] == ["stoq-core", "stoq-plugin-hash"]


def test_an_unknown_package_name_is_refused_listing_the_packages() -> None:
    with pytest.raises(release.ReleaseError, match="no package named 'stoq-plugin-nope'") as info:
        release.select(release.discover(ROOT), ["stoq-plugin-nope"])

    assert "stoq-plugin-hash" in str(info.value)


def test_the_build_command_stops_before_building_on_an_unknown_package(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = release.main(["build", "stoq-plugin-nope", "--dist", str(tmp_path / "dist")])

    assert code == 1
    assert "no package named 'stoq-plugin-nope'" in capsys.readouterr().err
    assert not (tmp_path / "dist").exists()


# -- what publishing needs: license, URLs, authors, changelog, long descriptions (issue 15) ----


def test_every_package_passes_the_publishing_checks() -> None:
    assert release.metadata_problems(ROOT, release.discover(ROOT)) == []


def test_the_repository_url_is_the_one_the_cores_pyproject_sets() -> None:
    repository = _pyproject(ROOT)["project"]["urls"]["Repository"]

    assert release.repository_url(release.discover(ROOT)) == repository
    # The plugin scaffold links to it too.
    template = ROOT / "src" / "stoq_cli" / "templates" / "plugin" / "README.md.tmpl"
    assert f"[stoQ]({repository})" in template.read_text()


@pytest.mark.parametrize("directory", PACKAGE_DIRS, ids=lambda p: p.name)
def test_each_plugin_folder_holds_the_repositorys_license(directory: Path) -> None:
    assert (directory / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()


def test_the_license_is_apache_2_0_in_full() -> None:
    text = (ROOT / "LICENSE").read_text()

    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_ci_requires_the_redis_tests_that_a_plain_nox_may_skip() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    conftest = (ROOT / "packages" / "stoq-plugin-redis" / "tests" / "conftest.py").read_text()

    assert 'REQUIRE_REDIS = "STOQ_REQUIRE_REDIS"' in conftest
    assert "\nexport STOQ_REQUIRE_REDIS=1\n" in ci
    assert "apt-get install -y -qq redis-server" in ci


def test_the_noxfile_never_installs_system_packages() -> None:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    commands = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("run", "run_always", "run_install")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]

    assert "pytest" in commands  # the walk finds the session's commands
    assert not {"apt-get", "apt", "sudo", "brew", "dnf", "yum", "systemctl"} & set(commands)


_LICENSE_TEXT = "Apache License, Version 2.0, in full\n"
_REPOSITORY = "https://example.org/stoq"


@pytest.fixture
def publishable(tmp_path: Path) -> Path:
    """A made-up repository, a core and one plugin, that passes the publishing checks."""

    def write(directory: Path, name: str, home: str, version_line: str) -> None:
        urls = {
            "Homepage": home,
            "Repository": _REPOSITORY,
            "Issues": f"{_REPOSITORY}/issues",
            "Changelog": f"{_REPOSITORY}/blob/main/CHANGELOG.md",
        }
        _write_project(
            directory,
            f'[project]\nname = "{name}"\n{version_line}\nreadme = "README.md"\n'
            'license = "Apache-2.0"\nlicense-files = ["LICENSE"]\n'
            'authors = [{ name = "someone" }]\ndependencies = ["stoq-core>=4,<5"]\n'
            "[project.urls]\n" + "".join(f'{k} = "{v}"\n' for k, v in urls.items()),
        )
        (directory / "LICENSE").write_text(_LICENSE_TEXT)
        (directory / "README.md").write_text(f"# {name}\n\nSee [the docs]({_REPOSITORY}).\n")

    write(tmp_path, "stoq-core", _REPOSITORY, 'version = "4.2.0"')
    plugin = tmp_path / "packages" / "stoq-plugin-a"
    write(
        plugin,
        "stoq-plugin-a",
        f"{_REPOSITORY}/tree/main/packages/stoq-plugin-a",
        'version = "1.0.0"',
    )
    (tmp_path / "CHANGELOG.md").write_text(
        "# Changes\n\n## stoq-core 4.2.0 (unreleased)\n\n## stoq-plugin-a 1.0.0 (2027-01-02)\n"
    )
    return tmp_path


def _publishing_problems(root: Path) -> list[str]:
    problems: list[str] = release.metadata_problems(root, release.discover(root))
    return problems


def test_a_made_up_publishable_repository_passes(publishable: Path) -> None:
    assert _publishing_problems(publishable) == []


def test_a_relative_link_in_a_long_description_fails_the_check(publishable: Path) -> None:
    readme = publishable / "packages" / "stoq-plugin-a" / "README.md"
    readme.write_text("One [stoQ](../../README.md) plugin.\n")

    assert _publishing_problems(publishable) == [
        "stoq-plugin-a: its long description links to '../../README.md', which is relative "
        "to the repository"
    ]


def test_installing_from_a_clones_folder_in_a_long_description_fails_the_check(
    publishable: Path,
) -> None:
    (publishable / "README.md").write_text("    pip install ./packages/stoq-plugin-a\n")

    assert _publishing_problems(publishable) == [
        "stoq-core: its long description installs from ./packages/, a folder of a clone"
    ]


def test_a_plugins_license_that_differs_from_the_repositorys_fails_the_check(
    publishable: Path,
) -> None:
    (publishable / "packages" / "stoq-plugin-a" / "LICENSE").write_text("MIT\n")

    [problem] = _publishing_problems(publishable)
    assert problem.startswith("stoq-plugin-a: ")
    assert problem.endswith("is missing or differs from the repository's LICENSE")


def test_a_version_without_a_changelog_section_fails_the_check(publishable: Path) -> None:
    (publishable / "CHANGELOG.md").write_text("# Changes\n\n## stoq-core 4.2.0\n")

    assert _publishing_problems(publishable) == [
        "stoq-plugin-a: CHANGELOG.md has no '## stoq-plugin-a 1.0.0' section"
    ]


def test_a_plugin_url_outside_the_cores_repository_fails_the_check(publishable: Path) -> None:
    pyproject = publishable / "packages" / "stoq-plugin-a" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(_REPOSITORY, "https://example.org/fork"))

    problems = _publishing_problems(publishable)

    assert (
        "stoq-plugin-a: [project.urls] Repository is 'https://example.org/fork', not "
        f"'{_REPOSITORY}'" in problems
    )


def _sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(f"{path.name.removesuffix('.tar.gz')}/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def test_a_core_sdist_holding_plugin_folders_is_not_fit_to_publish(
    publishable: Path, tmp_path: Path
) -> None:
    [core, _] = release.discover(publishable)
    sdist = _sdist(
        tmp_path / "stoq_core-4.2.0.tar.gz",
        {"LICENSE": _LICENSE_TEXT.encode(), "packages/stoq-plugin-a/src/a.py": b""},
    )

    assert release.artifact_problems(core, [sdist], _LICENSE_TEXT) == [
        "stoq_core-4.2.0.tar.gz: holds 1 files of packages/ (plugins)"
    ]


def test_an_sdist_without_the_license_is_not_fit_to_publish(
    publishable: Path, tmp_path: Path
) -> None:
    [_, plugin] = release.discover(publishable)
    sdist = _sdist(tmp_path / "stoq_plugin_a-1.0.0.tar.gz", {"src/a.py": b""})

    assert release.artifact_problems(plugin, [sdist], _LICENSE_TEXT) == [
        "stoq_plugin_a-1.0.0.tar.gz: no LICENSE, or not the repository's"
    ]
