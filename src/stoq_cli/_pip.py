"""The pip of the Python ``stoq`` runs in, for ``stoq install`` and ``stoq uninstall``.

pip runs as ``python -m pip`` of ``sys.executable``, so distributions land where ``stoq`` finds
them. Its output is chatter, not a result: it goes to stderr, and stdout keeps only the lines
saying which plugins came or went. After pip has changed the environment the home's entry-point
index is dropped (``forget_installed``), so the next command reads the metadata afresh.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from stoq_cli._errors import EXIT_FAILED, CliError
from stoq_cli._home import StoqHome
from stoq_cli._where import entry_point_reader

__all__ = ["Installed", "forget_installed", "install", "normalize", "uninstall"]

# pip wrote --report only for resolutions before 22.2; older pips refuse the option.
_REPORT_SINCE = (22, 2)


@dataclasses.dataclass(frozen=True)
class Installed:
    """A distribution pip installed (or reinstalled), from its ``--report``."""

    name: str
    version: str
    #: named on pip's command line, not pulled in as a dependency
    requested: bool
    editable: bool


def normalize(name: str) -> str:
    """A distribution name as the packaging specification compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def install(
    args: Sequence[str],
    options: Sequence[str] = (),
    cwd: Optional[Path] = None,
    consequence: str = "",
) -> Optional[list[Installed]]:
    """``pip install [options] args``.

    :param options: pip's own options, passed on as given (``--upgrade``, ``--index-url URL``...).
    :param cwd: where pip runs: a requirements file's relative paths are read from its folder.
    :param consequence: added to the error when pip fails (``"; no plugin was copied"``).
    :returns: what pip installed, or ``None`` from a pip too old to say (before 22.2).
    :raises CliError: pip failed (exit 1).
    """
    with tempfile.TemporaryDirectory(prefix="stoq-pip-") as scratch:
        report = Path(scratch, "report.json")
        reporting = _pip_version() >= _REPORT_SINCE
        command = ["install", *options, *(["--report", str(report)] if reporting else []), *args]
        what = f"pip install {' '.join(args)}" if cwd is not None else "pip install"
        _run(command, what, cwd, consequence)
        return _read_report(report) if reporting else None


def uninstall(names: Sequence[str]) -> None:
    """``pip uninstall --yes names`` (stoq has asked already).

    :raises CliError: pip failed (exit 1).
    """
    _run(["uninstall", "--yes", *names], "pip uninstall", None, "")


def forget_installed(home: StoqHome) -> None:
    """Drop what is known of the installed entry points, here and in the home's index file.

    The index notices a changed site-packages by its time, but only once it is two seconds old
    (``stoq_core._index``): removing the file makes the very next ``stoq list`` or scan right.
    """
    try:
        home.entry_point_index.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home keeps no index either
    entry_point_reader().refresh()


def _pip_version() -> tuple[int, ...]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("pip")
    except PackageNotFoundError:
        return ()  # pip will say it is missing
    return tuple(int(part) for part in re.findall(r"\d+", found)[:2])


def _run(command: list[str], what: str, cwd: Optional[Path], consequence: str) -> None:
    try:
        stdout: Optional[int] = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        stdout = None
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", *command], stdout=stdout, check=False, cwd=cwd
        )
    except OSError as exc:
        raise CliError(f"cannot run pip: {exc.strerror or exc}", EXIT_FAILED) from None
    if done.returncode != 0:
        raise CliError(
            f"{what} failed (exit {done.returncode}); its output is above{consequence}",
            EXIT_FAILED,
        )


def _read_report(path: Path) -> list[Installed]:
    try:
        with open(path, encoding="utf-8") as handle:
            items = json.load(handle).get("install", [])
    except (OSError, ValueError, AttributeError):
        return []  # pip said nothing: it installed nothing
    found = []
    for item in items:
        metadata = item.get("metadata", {})
        download = item.get("download_info") or {}
        found.append(
            Installed(
                name=str(metadata.get("name", "")),
                version=str(metadata.get("version", "")),
                requested=bool(item.get("requested")),
                editable=bool((download.get("dir_info") or {}).get("editable")),
            )
        )
    return found
