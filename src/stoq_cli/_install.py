"""``stoq install``: plugin distributions through pip, v3 plugin directories by copying.

A distribution (a requirement such as ``stoq-plugin-yara``, a wheel, an sdist or a project
directory) is installed with ``python -m pip install`` of the interpreter stoq runs in, so the
plugins land where ``stoq`` finds them. A v3 plugin directory (one holding a ``.stoq`` file and no
``pyproject.toml``/``setup.py``) is copied to ``$STOQ_HOME/plugins/<directory name>``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from stoq_cli._engine import StoqHome
from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError
from stoq_cli._metadata import PluginRecord, installed_plugins, legacy_plugins

__all__ = ["install_command"]

_PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tgz", ".tar.bz2")


def is_legacy_directory(path: Path) -> bool:
    """A v3 plugin directory: ``.stoq`` files and no Python project around them."""
    if not path.is_dir() or any((path / name).exists() for name in _PROJECT_FILES):
        return False
    return next(path.rglob("*.stoq"), None) is not None


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith(".") or spec.endswith(_ARCHIVES)


def install_command(specs: Sequence[str], upgrade: bool) -> int:
    """Run ``stoq install``; returns the exit code."""
    home = StoqHome.from_environment()
    legacy = [Path(spec) for spec in specs if is_legacy_directory(Path(spec))]
    to_pip = [spec for spec in specs if not is_legacy_directory(Path(spec))]
    for spec in to_pip:
        if _looks_like_path(spec) and not os.path.exists(spec):
            raise CliError(f"{spec}: no such file or directory")
    for directory in legacy:
        target = home.plugins / directory.resolve().name
        if target.exists() and not upgrade:
            raise CliError(f"{target} already exists; add --upgrade to replace it")

    changes = []
    for directory in legacy:
        target = home.plugins / directory.resolve().name
        _copy(directory, target)
        for record in sorted(legacy_plugins(target).values()):
            version = f" {record.version}" if record.version else ""
            changes.append(f"installed plugin {record.name}{version} in {record.origin}")
    if to_pip:
        before = installed_plugins()
        _pip_install(to_pip, upgrade)
        changes += _changes(before, installed_plugins())
    for line in changes:
        print(line)
    if not changes:
        print(
            f"stoq: no new or changed plugins: {' '.join(specs)} added no stoq.plugins entry "
            "point or .stoq file (already installed? add --upgrade)",
            file=sys.stderr,
        )
    return EXIT_OK


def _copy(source: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # copytree keeps the source's modes: a group-writable copy would be refused at load.
        for path in [target, *target.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o022)
    except OSError as exc:
        raise CliError(f"cannot copy {source} to {target}: {exc.strerror or exc}") from None


def _pip_install(specs: Sequence[str], upgrade: bool) -> None:
    command = [sys.executable, "-m", "pip", "install", *(["--upgrade"] if upgrade else []), *specs]
    # pip's chatter is not a result: it goes to stderr, so stdout lists only the new plugins.
    try:
        stdout: int | None = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        stdout = None
    try:
        done = subprocess.run(command, stdout=stdout, check=False)
    except OSError as exc:
        raise CliError(f"cannot run pip: {exc.strerror or exc}", EXIT_FAILED) from None
    if done.returncode != 0:
        raise CliError(
            f"pip install failed (exit {done.returncode}); its output is above", EXIT_FAILED
        )


def _changes(before: dict[str, PluginRecord], after: dict[str, PluginRecord]) -> list[str]:
    lines = []
    for name, record in sorted(after.items()):
        old = before.get(name)
        where = f"from {record.origin}"
        version = f" {record.version}" if record.version else ""
        if old is None:
            lines.append(f"installed plugin {name}{version} {where}")
        elif old != record:
            lines.append(f"updated plugin {name}{version} {where} (was {old.version or '?'})")
    return lines
