"""``stoq install``: v3 plugin directories are copied to $STOQ_HOME/plugins, the rest go to pip.

pip installs into the environment stoq runs in, so those tests run the CLI (``python -m
stoq_cli``) with a throwaway virtual environment's interpreter, never this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

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


def write_wheel(
    directory: Path, dist: str, version: str, files: dict[str, str], entry_points: str = ""
) -> Path:
    """A minimal pure-Python wheel of ``dist`` holding ``files``, as a build backend makes it."""
    stem = dist.replace("-", "_")
    info = f"{stem}-{version}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    if entry_points:
        files[f"{info}/entry_points.txt"] = entry_points
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def build_wheel(directory: Path, version: str) -> Path:
    """A minimal wheel of ``stoq-plugin-wheeltest`` declaring the ``wheeltest`` plugin."""
    return write_wheel(
        directory,
        "stoq-plugin-wheeltest",
        version,
        {"wheeltest_plugin.py": WHEEL_MODULE},
        "[stoq.plugins]\nwheeltest = wheeltest_plugin:Wheeled\n",
    )


def write_v3_source(
    parent: Path,
    outer: str,
    inner: str,
    requirements: str | None = None,
    imports: str = "",
    result: str = "{}",
    version: str = "3.0.0",
) -> Path:
    """A v3 plugin source folder as stoq-plugins-public lays one out, ``parent/outer``.

    ``outer`` holds setup.py, README.md, tests/ and (unless ``None``) requirements.txt; the
    inner folder ``inner`` holds the .stoq file and the module, which ``import``s ``imports``
    and returns ``result`` (a Python expression) as its worker result.
    """
    source = parent / outer
    (source / inner).mkdir(parents=True)
    (source / "tests").mkdir()
    (source / "tests" / "__init__.py").write_text("")
    (source / "README.md").write_text(f"# {inner}\n")
    # Run, this would install a top-level package named `inner`: v3's way to copy it.
    (source / "setup.py").write_text(
        "from setuptools import setup, find_packages\n\n"
        f"setup(name={outer!r}, version={version!r}, packages=find_packages(exclude=['tests']),"
        " include_package_data=True)\n"
    )
    if requirements is not None:
        (source / "requirements.txt").write_text(requirements)
    (source / inner / "__init__.py").write_text("")
    (source / inner / f"{inner}.stoq").write_text(
        f"[Core]\nName = {inner}\nModule = {inner}\n\n"
        f"[Documentation]\nAuthor = tests\nVersion = {version}\nDescription = a v3 worker\n"
    )
    (source / inner / f"{inner}.py").write_text(
        (f"import {imports}\n" if imports else "")
        + "from stoq.data_classes import WorkerResponse\n"
        "from stoq.plugins import WorkerPlugin\n\n\n"
        "class Worker(WorkerPlugin):\n"
        "    async def scan(self, payload, request):\n"
        f"        return WorkerResponse({result})\n"
    )
    return source


class Venv:
    """A throwaway environment whose interpreter sees this one's packages (stoq, click, pip)."""

    def __init__(self, root: Path, stoq: StoqRunner) -> None:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120
        )
        self.root = root
        self.python = root / "bin" / "python"
        self.site = Path(
            subprocess.run(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                capture_output=True, text=True, check=True, timeout=60,
            ).stdout.strip()
        )  # fmt: skip
        # This interpreter's path (stoq_core, click, rich, pip...) after the venv's own site.
        self.env = {**stoq.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.env.pop("PIP_DRY_RUN", None)  # here pip installs for real
        self.cwd = stoq.cwd

    def stoq(self, *args: str, stdin: bytes = b"") -> Done:
        done = subprocess.run(
            [str(self.python), "-m", "stoq_cli", *args],
            input=stdin, capture_output=True, env=self.env, cwd=self.cwd, timeout=300,
        )  # fmt: skip
        return Done(done.returncode, done.stdout.decode(), done.stderr.decode())

    def plugins(self) -> dict[str, Any]:
        """``stoq list --json`` by plugin name."""
        done = self.stoq("list", "--json")
        assert done.code == 0, done.err
        return {plugin["name"]: plugin for plugin in done.json()}


@pytest.fixture
def stoq(stoq: StoqRunner) -> StoqRunner:
    """The installed ``stoq``, whose pip only pretends: nothing reaches this environment."""
    stoq.env["PIP_DRY_RUN"] = "1"
    return stoq


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


# -- v3 plugin source folders (setup.py, requirements.txt, inner folder) ----------------------


def test_a_v3_source_folder_gets_its_requirements_from_the_registry_and_scans(
    venv: Venv, tmp_path: Path, sample: Path
) -> None:
    # termcolor: tiny, pure Python, without dependencies, and not in the test environment.
    assert not (venv.site / "termcolor").exists()
    venv.env.pop("PIP_NO_INDEX")
    source = write_v3_source(
        tmp_path / "src", "stoq-colors", "colors", "termcolor>=2\n",
        imports="termcolor", result="{'red': termcolor.COLORS['red']}",
    )  # fmt: skip
    home = Path(venv.env["STOQ_HOME"])

    done = venv.stoq("install", str(source))

    assert done.code == 0, done.err
    assert done.out.splitlines() == [
        f"installed requirements from {source / 'requirements.txt'} with pip into {venv.root}",
        f"installed plugin colors 3.0.0 in {home / 'plugins' / 'colors'}",
    ]
    assert (venv.site / "termcolor").is_dir()
    # The outer folder is not a distribution: nothing of it is pip-installed or copied.
    assert not [p.name for p in venv.site.iterdir() if p.name.startswith(("stoq_colors", "colors"))]
    assert sorted(p.name for p in (home / "plugins").iterdir()) == ["colors"]
    assert sorted(p.name for p in (home / "plugins" / "colors").iterdir()) == [
        "__init__.py", "colors.py", "colors.stoq",
    ]  # fmt: skip
    scanned = venv.stoq("scan", str(sample), "-s", "colors")
    assert scanned.code == 0, scanned.err
    assert scanned.json()["results"][0]["workers"]["colors"] == {"red": 31}


def test_the_inner_folder_installs_with_the_requirements_of_its_source_folder(
    venv: Venv, tmp_path: Path, sample: Path
) -> None:
    source = write_v3_source(
        tmp_path / "src", "yara", "yarascan", "# a local wheel, by a path relative to here\n"
        "./wheels/stoq_test_helper-1.0-py3-none-any.whl\n",
        imports="stoq_test_helper", result="{'helper': stoq_test_helper.ANSWER}",
    )  # fmt: skip
    write_wheel(
        source / "wheels", "stoq-test-helper", "1.0", {"stoq_test_helper.py": "ANSWER = 42\n"}
    )
    home = Path(venv.env["STOQ_HOME"])

    done = venv.stoq("install", str(source / "yarascan"))

    assert done.code == 0, done.err
    assert done.out.splitlines() == [
        f"installed requirements from {source / 'requirements.txt'} with pip into {venv.root}",
        f"installed plugin yarascan 3.0.0 in {home / 'plugins' / 'yarascan'}",
    ]
    assert (venv.site / "stoq_test_helper.py").is_file()
    scanned = venv.stoq("scan", str(sample), "-s", "yarascan")
    assert scanned.json()["results"][0]["workers"]["yarascan"] == {"helper": 42}


def test_a_v3_source_folder_without_requirements_copies_only_its_plugin_folder(
    stoq: StoqRunner, tmp_path: Path, sample: Path
) -> None:
    source = write_v3_source(tmp_path / "src", "hash3", "hash3", result="{'v3': True}")

    done = stoq("install", str(source))

    assert done.code == 0, done.err
    target = stoq.home / "plugins" / "hash3"
    assert done.out == f"installed plugin hash3 3.0.0 in {target}\n"
    assert sorted(p.name for p in target.iterdir()) == ["__init__.py", "hash3.py", "hash3.stoq"]
    scanned = stoq("scan", str(sample), "-s", "hash3")
    assert scanned.json()["results"][0]["workers"]["hash3"] == {"v3": True}


def test_installing_a_v3_source_folder_again_needs_upgrade(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    source = write_v3_source(tmp_path / "src", "hash3", "hash3", requirements="")
    assert stoq("install", str(source)).code == 0

    again = stoq("install", str(source))
    inner = stoq("install", str(source / "hash3"))

    target = stoq.home / "plugins" / "hash3"
    for done in (again, inner):
        assert (done.code, done.out) == (2, "")
        assert done.err == f"stoq: error: {target} already exists; add --upgrade to replace it\n"


def test_upgrade_replaces_the_copy_of_a_v3_source_folder(
    stoq: StoqRunner, tmp_path: Path, sample: Path
) -> None:
    old = write_v3_source(tmp_path / "old", "hash3", "hash3", result="{'version': 1}")
    assert stoq("install", str(old)).code == 0
    (stoq.home / "plugins" / "hash3" / "stale.txt").write_text("from the old copy")
    new = write_v3_source(
        tmp_path / "new", "hash3", "hash3", version="3.1.0", result="{'version': 2}"
    )

    done = stoq("install", "--upgrade", str(new))

    assert done.code == 0, done.err
    assert done.out == f"installed plugin hash3 3.1.0 in {stoq.home / 'plugins' / 'hash3'}\n"
    assert sorted(p.name for p in (stoq.home / "plugins").iterdir()) == ["hash3"]
    assert not (stoq.home / "plugins" / "hash3" / "stale.txt").exists()
    scanned = stoq("scan", str(sample), "-s", "hash3")
    assert scanned.json()["results"][0]["workers"]["hash3"] == {"version": 2}


def test_a_requirement_pip_cannot_install_exits_1_and_copies_nothing(
    venv: Venv, tmp_path: Path
) -> None:
    source = write_v3_source(
        tmp_path / "src", "broken", "broken", "stoq-test-requirement-found-nowhere\n"
    )

    done = venv.stoq("install", str(source))

    assert (done.code, done.out) == (1, "")
    requirements = source / "requirements.txt"
    assert done.err.splitlines()[-1] == (
        f"stoq: error: pip install -r {requirements} failed (exit 1); its output is above; "
        "no plugin was copied"
    )
    assert not (Path(venv.env["STOQ_HOME"]) / "plugins" / "broken").exists()


def test_copied_plugin_files_are_writable_by_their_owner_only(
    stoq: StoqRunner, tmp_path: Path, sample: Path
) -> None:
    source = write_v3_source(tmp_path / "src", "hash3", "hash3", result="{'v3': True}")
    for path in [source, *source.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # as unpacked under umask 0
    stoq.env.pop("STOQ_ALLOW_UNSAFE_PLUGIN_DIRS", None)

    done = stoq("install", str(source))

    assert done.code == 0, done.err
    plugins = stoq.home / "plugins"
    for path in [plugins, *plugins.rglob("*")]:
        assert path.stat().st_mode & 0o022 == 0, path
    # Readable and runnable as before: only the write bits of group and others went.
    assert (plugins / "hash3" / "hash3.py").stat().st_mode & 0o777 == 0o644
    scanned = stoq("scan", str(sample), "-s", "hash3")
    assert scanned.json()["results"][0]["workers"]["hash3"] == {"v3": True}


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


def write_project(root: Path, version: str = "1.0", answer: str = "first") -> Path:
    """A source project of ``stoq-plugin-devtest`` (hatchling, src layout), plugin ``devtest``."""
    package = root / "src" / "devtest_plugin"
    package.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "stoq-plugin-devtest"\nversion = "{version}"\n\n'
        '[project.entry-points."stoq.plugins"]\ndevtest = "devtest_plugin:Dev"\n\n'
        # A .pth of src/ for -e: hatchling's other editable mode needs `editables`, not here.
        '[tool.hatch.build.targets.wheel]\npackages = ["src/devtest_plugin"]\n'
        'dev-mode-dirs = ["src"]\n'
    )
    (package / "__init__.py").write_text(
        WHEEL_MODULE.replace("Wheeled", "Dev").replace(
            '{"from_wheel": True}', repr({"answer": answer})
        )
    )
    return root


# -- pip's options, editable installs, and what stoq says pip did -----------------------------


def test_install_e_runs_the_plugin_from_its_source(
    venv: Venv, tmp_path: Path, sample: Path
) -> None:
    project = write_project(tmp_path / "devtest")

    done = venv.stoq("install", "-e", str(project), "--no-build-isolation")

    assert done.code == 0, done.err
    assert done.out == "installed plugin devtest 1.0 from stoq-plugin-devtest (editable)\n"
    assert not (venv.site / "devtest_plugin").exists()  # the source is not copied
    first = venv.stoq("scan", str(sample), "-s", "devtest")
    assert first.json()["results"][0]["workers"]["devtest"] == {"answer": "first"}
    module = project / "src" / "devtest_plugin" / "__init__.py"
    module.write_text(module.read_text().replace("'first'", "'edited'"))
    edited = venv.stoq("scan", str(sample), "-s", "devtest")
    assert edited.json()["results"][0]["workers"]["devtest"] == {"answer": "edited"}


def test_install_e_of_a_v3_plugin_folder_is_refused(stoq: StoqRunner, tmp_path: Path) -> None:
    source = write_legacy_plugin(tmp_path / "downloads")

    done = stoq("install", "-e", str(source))

    assert (done.code, done.out) == (2, "")
    assert done.err == (
        f"stoq: error: {source} holds v3 plugins, which are copied, not installed in "
        f"development mode: to run them from where they are, give 'stoq scan' --plugin-dir "
        f"{source}\n"
    )
    assert not (stoq.home / "plugins" / "echo3").exists()


def test_install_e_of_a_missing_path_is_an_input_error(stoq: StoqRunner, tmp_path: Path) -> None:
    done = stoq("install", "-e", str(tmp_path / "nowhere"))

    assert (done.code, done.out) == (2, "")
    assert done.err == f"stoq: error: {tmp_path / 'nowhere'}: no such file or directory\n"


def test_pip_options_are_passed_on_to_pip(venv: Venv, tmp_path: Path) -> None:
    wheels = build_wheel(tmp_path / "wheels", "1.0").parent

    # By name alone: pip can only find it through --find-links.
    done = venv.stoq("install", "--no-index", "--find-links", str(wheels), "stoq-plugin-wheeltest")

    assert done.code == 0, done.err
    assert done.out == "installed plugin wheeltest 1.0 from stoq-plugin-wheeltest\n"


def test_an_installed_requirement_is_nothing_to_install_and_upgrade_is_suggested(
    venv: Venv, tmp_path: Path
) -> None:
    wheels = build_wheel(tmp_path / "wheels", "1.0").parent
    assert venv.stoq("install", "-f", str(wheels), "stoq-plugin-wheeltest").code == 0

    done = venv.stoq("install", "-f", str(wheels), "stoq-plugin-wheeltest")

    assert (done.code, done.out) == (0, "")
    assert done.err.splitlines()[-1] == (
        "stoq: nothing to install: stoq-plugin-wheeltest already installed "
        "(add --upgrade for a newer version)"
    )


def test_with_upgrade_given_no_message_asks_for_it(venv: Venv, tmp_path: Path) -> None:
    wheels = build_wheel(tmp_path / "wheels", "1.0").parent
    assert venv.stoq("install", "-f", str(wheels), "stoq-plugin-wheeltest").code == 0

    done = venv.stoq("install", "-U", "-f", str(wheels), "stoq-plugin-wheeltest")

    assert (done.code, done.out) == (0, "")
    assert done.err.splitlines()[-1] == (
        "stoq: nothing to install: stoq-plugin-wheeltest already up to date"
    )
    assert "--upgrade" not in done.err


def test_install_U_of_an_installed_project_folder_says_it_was_reinstalled(
    venv: Venv, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "devtest")
    assert venv.stoq("install", "--no-build-isolation", str(project)).code == 0

    done = venv.stoq("install", "-U", "--no-build-isolation", str(project))

    assert done.code == 0, done.err
    assert done.out == "reinstalled plugin devtest 1.0 from stoq-plugin-devtest\n"
    assert "stoq:" not in done.err  # no "add --upgrade", no "nothing changed"


def test_a_distribution_that_publishes_no_plugin_is_named(venv: Venv, tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "dist", "plain-helper", "2.0", {"plain_helper.py": "X = 1\n"})

    done = venv.stoq("install", str(wheel))

    assert (done.code, done.out) == (0, "")
    assert done.err.splitlines()[-1] == (
        "stoq: plain-helper 2.0 declares no 'stoq.plugins' entry point: it adds no plugin"
    )


def test_install_and_uninstall_refresh_the_plugin_index_at_once(
    venv: Venv, tmp_path: Path, sample: Path
) -> None:
    # The index trusts a site-packages whose time has not moved. Some file systems keep
    # coarse directory times; here the time is put back by hand after each change.
    still = time.time() - 60

    def index_as_now() -> None:
        """Write the home's index of what is installed now, however recent the changes."""
        os.utime(venv.site, (still, still))
        subprocess.run(
            [str(venv.python), "-c", "from stoq_cli._where import entry_point_reader as r; "
             "i = r(); i._write(i._fingerprint(), i._from_metadata())"],
            env=venv.env, check=True, timeout=60,
        )  # fmt: skip

    Path(venv.env["STOQ_HOME"]).mkdir()  # the index is kept only in a home that exists
    (venv.site / "keep.pth").write_text("")  # else pip removes the emptied site-packages
    index_as_now()
    assert venv.stoq("install", str(build_wheel(tmp_path / "dist", "1.0"))).code == 0
    os.utime(venv.site, (still, still))

    scanned = venv.stoq("scan", str(sample), "-s", "wheeltest")

    assert scanned.code == 0, scanned.err
    index_as_now()
    assert venv.stoq("uninstall", "-y", "wheeltest").code == 0
    os.utime(venv.site, (still, still))
    gone = venv.stoq("scan", str(sample), "-s", "wheeltest")
    assert gone.code == 2
    assert "plugin 'wheeltest' is not installed" in gone.err


# -- stoq uninstall --------------------------------------------------------------------------


def test_uninstall_by_plugin_name_asks_then_removes_its_distribution(
    venv: Venv, tmp_path: Path
) -> None:
    assert venv.stoq("install", str(build_wheel(tmp_path / "dist", "1.0"))).code == 0

    done = venv.stoq("uninstall", "wheeltest", stdin=b"y\n")

    assert done.code == 0, done.err
    assert done.out == "uninstalled plugin wheeltest 1.0 from stoq-plugin-wheeltest\n"
    assert done.err.startswith(
        "stoq: about to uninstall:\n"
        f"  stoq-plugin-wheeltest 1.0 (plugins: wheeltest) in {venv.site}\n"
        "Proceed (Y/n)? "
    )
    assert not (venv.site / "wheeltest_plugin.py").exists()
    assert "wheeltest" not in venv.plugins()


def test_uninstall_by_distribution_name_with_yes_does_not_ask(venv: Venv, tmp_path: Path) -> None:
    assert venv.stoq("install", str(build_wheel(tmp_path / "dist", "1.0"))).code == 0

    done = venv.stoq("uninstall", "-y", "stoq_plugin_WheelTest")  # pip's name rules

    assert done.code == 0, done.err
    assert done.out == "uninstalled plugin wheeltest 1.0 from stoq-plugin-wheeltest\n"
    assert "Proceed" not in done.err
    assert not (venv.site / "wheeltest_plugin.py").exists()


def test_answering_no_uninstalls_nothing(venv: Venv, tmp_path: Path) -> None:
    assert venv.stoq("install", str(build_wheel(tmp_path / "dist", "1.0"))).code == 0

    done = venv.stoq("uninstall", "wheeltest", stdin=b"n\n")

    assert (done.code, done.out) == (1, "")
    assert done.err.splitlines()[-1] == "Proceed (Y/n)? stoq: nothing uninstalled"
    assert (venv.site / "wheeltest_plugin.py").is_file()


def test_no_answer_is_not_a_yes(venv: Venv, tmp_path: Path) -> None:
    assert venv.stoq("install", str(build_wheel(tmp_path / "dist", "1.0"))).code == 0

    done = venv.stoq("uninstall", "wheeltest")  # stdin at its end at once

    assert (done.code, done.out) == (2, "")
    assert done.err.splitlines()[-1] == (
        "stoq: error: no answer on stdin: add -y to uninstall without asking"
    )
    assert (venv.site / "wheeltest_plugin.py").is_file()


def test_uninstall_refuses_stoq_core_and_what_it_needs(venv: Venv) -> None:
    core = venv.stoq("uninstall", "-y", "stoq-core")
    click_ = venv.stoq("uninstall", "-y", "click")

    assert (core.code, core.out) == (2, "")
    assert core.err == (
        "stoq: error: stoq-core is stoQ itself, not a plugin: 'stoq uninstall' removes plugins "
        f"(to remove stoQ, run '{venv.python} -m pip uninstall stoq-core')\n"
    )
    assert (click_.code, click_.out) == (2, "")
    assert click_.err == (
        "stoq: error: click is needed by stoq-core: 'stoq uninstall' would break stoq itself\n"
    )


def test_uninstall_removes_a_v3_copy_by_folder_or_plugin_name_or_path(
    stoq: StoqRunner, tmp_path: Path, sample: Path
) -> None:
    target = stoq.home / "plugins" / "echo3"
    for name in ("echo3", "lower", str(target)):
        source = write_legacy_plugin(tmp_path / name.replace("/", "_"))
        if name == "lower":  # [Core] Name differs from the folder's name
            stoq_file = source / "echo3.stoq"
            stoq_file.write_text(stoq_file.read_text().replace("Name = echo3", "Name = lower"))
        assert stoq("install", str(source)).code == 0

        done = stoq("uninstall", "-y", name)

        assert done.code == 0, done.err
        plugin = "lower" if name == "lower" else "echo3"
        assert done.out == f"uninstalled plugin {plugin} 3.0.1 in {target}\n"
        assert not target.exists()
        assert sorted(p.name for p in (stoq.home / "plugins").iterdir()) == []
    gone = stoq("scan", str(sample), "-s", "echo3")
    assert gone.code == 2
    assert "plugin 'echo3' is not installed" in gone.err


def test_uninstall_of_a_name_not_installed_suggests_one(stoq: StoqRunner) -> None:
    done = stoq("uninstall", "-y", "cli_ecko")

    assert (done.code, done.out) == (2, "")
    assert done.err == (
        "stoq: error: 'cli_ecko' is not installed: no plugin, distribution or v3 plugin folder "
        "of that name (did you mean 'cli_echo'?) ('stoq list' shows the plugins)\n"
    )


def test_a_name_that_means_two_things_is_refused(stoq: StoqRunner, tmp_path: Path) -> None:
    # A v3 copy named as a plugin of the installed stoq-plugin-clitest.
    assert stoq("install", str(write_legacy_plugin(tmp_path / "v3", name="cli_echo"))).code == 0

    done = stoq("uninstall", "-y", "cli_echo")

    assert (done.code, done.out) == (2, "")
    assert done.err == (
        "stoq: error: 'cli_echo' could mean stoq-plugin-clitest or "
        f"{stoq.home / 'plugins' / 'cli_echo'}: name the one to uninstall\n"
    )
    assert (stoq.home / "plugins" / "cli_echo").is_dir()


def test_a_distribution_pip_leaves_in_place_is_an_error(venv: Venv, tmp_path: Path) -> None:
    # Installed outside the environment's own site-packages, which pip refuses to touch.
    elsewhere = tmp_path / "elsewhere"
    with zipfile.ZipFile(build_wheel(tmp_path / "dist", "1.0")) as archive:
        archive.extractall(elsewhere)
    venv.env["PYTHONPATH"] = os.pathsep.join([str(elsewhere), venv.env["PYTHONPATH"]])

    done = venv.stoq("uninstall", "-y", "wheeltest")

    assert (done.code, done.out) == (1, "")
    assert done.err.splitlines()[-1] == (
        f"stoq: error: pip did not uninstall stoq-plugin-wheeltest from {elsewhere} "
        "(outside its environment? its output is above)"
    )
    assert (elsewhere / "wheeltest_plugin.py").is_file()


def test_a_plugin_two_distributions_publish_is_uninstalled_by_distribution(
    venv: Venv, tmp_path: Path
) -> None:
    assert venv.stoq("install", str(build_wheel(tmp_path / "dist", "1.0"))).code == 0
    other = write_wheel(
        tmp_path / "other", "stoq-plugin-other", "0.1", {"other_plugin.py": WHEEL_MODULE},
        "[stoq.plugins]\nwheeltest = other_plugin:Wheeled\n",
    )  # fmt: skip
    assert venv.stoq("install", str(other)).code == 0

    ambiguous = venv.stoq("uninstall", "-y", "wheeltest")
    done = venv.stoq("uninstall", "-y", "stoq-plugin-other")

    assert ambiguous.code == 2
    assert ambiguous.err == (
        "stoq: error: 'wheeltest' could mean stoq-plugin-other or stoq-plugin-wheeltest: "
        "name the one to uninstall\n"
    )
    assert done.code == 0, done.err
    assert done.out == "uninstalled plugin wheeltest 0.1 from stoq-plugin-other\n"
    assert venv.plugins()["wheeltest"]["error"] is None
