"""Fixtures for the v3 compatibility tests: copies of the v3-style plugin directories in data/.

Each test gets its own copy, so importing a plugin module never writes ``__pycache__`` into the
source tree and a test that edits a plugin cannot affect another.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq import Stoq

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of tests/compat/data: ``plugins/``, ``broken/``, ``first/``, ``second/``, ..."""
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # A checkout made under umask 002 would make these group-writable, and stoQ refuses v3
    # plugins that others can write (as ssh refuses loose key files).
    for path in [copy, *copy.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o022)
    return copy


@pytest.fixture
def plugins_dir(data_dir: Path) -> Path:
    """The working v3 plugins: carve, report, route, both, vault, jsonfile, stamp, feed, boom."""
    return data_dir / "plugins"


@pytest.fixture
def broken_dir(data_dir: Path) -> Path:
    """bad_ini, missing_module, no_class, two_classes and too_new (loads, with a warning)."""
    return data_dir / "broken"


@pytest.fixture
def make_stoq(tmp_path: Path) -> Callable[..., Stoq]:
    """``make_stoq(plugin_dir_list=[...], ...)``: a ``Stoq`` with no log file, rooted in tmp_path."""

    def make(**kwargs: Any) -> Stoq:
        kwargs.setdefault("base_dir", str(tmp_path))
        kwargs.setdefault("log_dir", None)
        return Stoq(**kwargs)

    return make


#: A minimal working v3 worker module, for tests that write their own plugin directories.
SIMPLE_WORKER = """
from stoq import WorkerResponse
from stoq.plugins import WorkerPlugin


class SimpleWorker(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({"ok": True})
"""


@pytest.fixture
def write_plugin() -> Callable[..., Path]:
    """``write_plugin(directory, name, code=<a working worker>, stoq_extra="")``.

    Writes a v3 plugin directory ``directory/name`` holding ``name.stoq`` and ``name.py``;
    ``stoq_extra`` is appended to the .stoq file (e.g. an ``[options]`` section).
    """

    def write(directory: Path, name: str, code: str = SIMPLE_WORKER, stoq_extra: str = "") -> Path:
        plugin = directory / name
        plugin.mkdir(parents=True)
        (plugin / f"{name}.stoq").write_text(
            f"[Core]\nName = {name}\nModule = {name}\n\n{stoq_extra}\n"
        )
        (plugin / f"{name}.py").write_text(code)
        return plugin

    return write
