"""v3 plugins whose module names meet installed modules, installed and scanned with ``stoq``.

The plugin folders are tests/compat/data/modules (issue 13): ``stoqtest_lief`` is named after the
library it imports, as v3's ``lief`` plugin is; ``tarpeek`` keeps a ``tarfile.py`` beside its
module and a helper module it imports.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from cli_support import CLI_TESTS, StoqRunner

MODULES = CLI_TESTS.parent / "compat" / "data" / "modules"
LIBRARY = "stoqtest_lief"


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """A copy of the plugin folders and the library, as a user has them before installing."""
    copy = tmp_path / "downloads"
    shutil.copytree(MODULES, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o022)  # stoQ refuses plugins that others can write
    return copy


def _with_library(stoq: StoqRunner, downloads: Path) -> None:
    """The stand-in library installed for the child processes, as lief is with pip."""
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(downloads / "site"), stoq.env["PYTHONPATH"]])


def _install(stoq: StoqRunner, source: Path) -> None:
    done = stoq("install", str(source))
    assert done.code == 0, done.err
    assert (stoq.home / "plugins" / source.name / f"{source.name}.stoq").is_file()


def _listed(stoq: StoqRunner) -> dict[str, dict[str, object]]:
    done = stoq("list", "--json")
    assert done.code == 0, done.err
    return {info["name"]: info for info in json.loads(done.out)}


def test_a_plugin_named_after_the_library_it_imports_installs_lists_and_scans(
    stoq: StoqRunner, downloads: Path, sample: Path
) -> None:
    _with_library(stoq, downloads)
    _install(stoq, downloads / LIBRARY)

    assert _listed(stoq)[LIBRARY]["error"] is None
    done = stoq("scan", str(sample), "-s", LIBRARY)

    assert done.code == 0, done.err
    result = done.json()["results"][0]["workers"][LIBRARY]
    assert result == {"size": sample.stat().st_size, "magic": "4d5a", "library": True}


def test_a_plugin_whose_library_is_missing_is_listed_broken_and_naming_it_fails_in_one_line(
    stoq: StoqRunner, downloads: Path, sample: Path
) -> None:
    _install(stoq, downloads / LIBRARY)

    error = _listed(stoq)[LIBRARY]["error"]
    assert isinstance(error, str) and f"No module named '{LIBRARY}'" in error
    done = stoq("scan", str(sample), "-s", LIBRARY)

    assert (done.code, done.out) == (2, "")
    assert done.err.startswith("stoq: error: ") and done.err.count("\n") == 1
    assert f"No module named '{LIBRARY}'" in done.err
    assert "Traceback" not in done.err


def test_a_tarfile_py_in_a_plugin_folder_does_not_replace_the_standard_library(
    stoq: StoqRunner, downloads: Path, tmp_path: Path
) -> None:
    _install(stoq, downloads / "tarpeek")
    archive = tmp_path / "two.tar"
    with tarfile.open(archive, mode="w") as tar:
        for name in ("b.txt", "a.txt"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))

    done = stoq("scan", str(archive), "-s", "tarpeek")

    assert done.code == 0, done.err
    result = done.json()["results"][0]["workers"]["tarpeek"]
    assert result["members"] == "a.txt, b.txt"  # its helper module beside it was found
    assert result["shadowed"] is False
    assert not result["tarfile"].startswith(str(stoq.home))


def test_both_plugins_list_together_and_scan_one_after_the_other(
    stoq: StoqRunner, downloads: Path, tmp_path: Path
) -> None:
    # The scan imports both plugins into one process.
    _with_library(stoq, downloads)
    _install(stoq, downloads / LIBRARY)
    _install(stoq, downloads / "tarpeek")
    archive = tmp_path / "one.tar"
    with tarfile.open(archive, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("only.txt"), io.BytesIO(b""))

    listed = _listed(stoq)
    done = stoq("scan", str(archive), "-s", f"{LIBRARY},tarpeek")

    assert listed[LIBRARY]["error"] is None and listed["tarpeek"]["error"] is None
    assert done.code == 0, done.err
    workers = done.json()["results"][0]["workers"]
    assert workers["tarpeek"]["members"] == "only.txt"
    assert workers[LIBRARY]["library"] is True
