"""``stoq uninstall``: what ``stoq install`` put in place, taken away again.

A NAME is a distribution (``stoq-plugin-yara``), a plugin it publishes (``yara``), or a v3
plugin folder that ``stoq install`` copied into ``$STOQ_HOME/plugins`` (by its folder name, its
``[Core] Name`` or its path). Distributions go through ``pip uninstall`` of the Python stoq runs
in; folders are removed. What will go is listed and confirmed first, as pip does, unless
``--yes``.

stoq-core and what it needs to run are refused: removing them would take the ``stoq`` command
away with them, and pip is the tool for that.

Imported with the ``stoq`` group (for ``stoq --help``), so only click is imported up front.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import click

from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError

if TYPE_CHECKING:
    from importlib.metadata import Distribution

    from stoq_cli._home import StoqHome
    from stoq_cli._installed import PluginRecord

__all__ = ["uninstall", "uninstall_command"]

_CORE = "stoq-core"
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclasses.dataclass(frozen=True)
class _Distribution:
    name: str
    version: str
    location: str
    plugins: tuple[str, ...]

    def describe(self) -> str:
        held = f"plugins: {', '.join(self.plugins)}" if self.plugins else "no plugin"
        return f"{self.name} {self.version} ({held}) in {self.location}"


@dataclasses.dataclass(frozen=True)
class _Folder:
    path: Path
    plugins: tuple[PluginRecord, ...]

    def describe(self) -> str:
        held = ", ".join(f"{p.name} {p.version}".rstrip() for p in self.plugins)
        return f"{self.path} (v3 plugin{'s' if len(self.plugins) != 1 else ''}: {held or 'none'})"


_Target = Union[_Distribution, _Folder]


@click.command(
    "uninstall",
    context_settings=_CONTEXT,
    epilog="""\
\b
NAME is a distribution (stoq-plugin-yara), a plugin one publishes (yara), or a
v3 plugin folder that 'stoq install' copied to $STOQ_HOME/plugins: its folder
name, its plugin's [Core] Name or its path. Distributions are removed with
'pip uninstall' of the Python stoq runs in; a v3 folder is deleted. A NAME
that could mean two of these is refused: give the distribution or the path.

\b
What will be removed is listed on stderr and confirmed (Y/n), as pip does,
unless -y. stdout lists each plugin that went. stoq-core, and what it needs
to run, are refused: use 'python -m pip uninstall' for those.

\b
Examples
  stoq uninstall yara
  stoq uninstall -y stoq-plugin-hash stoq-plugin-yara
  stoq uninstall ~/.stoq/plugins/peinfo
""",
)
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(names: tuple[str, ...], yes: bool) -> int:
    """Uninstall plugin distributions (via pip) or v3 plugin folders."""
    return uninstall_command(names, yes)


def uninstall_command(names: Sequence[str], yes: bool) -> int:
    """Run ``stoq uninstall``; returns the exit code."""
    from stoq_cli import _pip
    from stoq_cli._home import StoqHome
    from stoq_cli._installed import installed_plugins

    home = StoqHome.from_environment()
    plugins = installed_plugins(fresh=True)
    distributions = _distributions()
    # Everything is found before anything is removed: one bad NAME removes nothing.
    targets: dict[str, _Target] = {}
    for name in names:
        target = _resolve(name, home, plugins, distributions)
        targets.setdefault(_key(target), target)
    print("stoq: about to uninstall:", file=sys.stderr)
    for target in targets.values():
        print(f"  {target.describe()}", file=sys.stderr)
    if not yes and not _confirmed():
        print("stoq: nothing uninstalled", file=sys.stderr)
        return EXIT_FAILED

    dists = [t for t in targets.values() if isinstance(t, _Distribution)]
    folders = [t for t in targets.values() if isinstance(t, _Folder)]
    # Each line is printed once its removal is done, so a later failure hides none of them.
    for folder in folders:
        _remove(folder.path, home)
        for plugin in folder.plugins:
            print(
                f"uninstalled plugin {plugin.name} {plugin.version}".rstrip(), "in", plugin.origin
            )
        if not folder.plugins:
            print(f"removed {folder.path}")
    if not dists:
        return EXIT_OK
    try:
        _pip.uninstall([d.name for d in dists])
    finally:
        _pip.forget_installed(home)
    # pip leaves a distribution outside its environment in place, and still exits 0.
    remaining = _distributions()
    left = [
        d
        for d in dists
        if (found := remaining.get(_pip.normalize(d.name))) and found.location == d.location
    ]
    for dist in dists:
        if dist in left:
            continue
        for name in dist.plugins:
            print(f"uninstalled plugin {name} {dist.version} from {dist.name}")
        if not dist.plugins:
            print(f"uninstalled {dist.name} {dist.version}")
    if left:
        where = ", ".join(f"{d.name} from {d.location}" for d in left)
        raise CliError(
            f"pip did not uninstall {where} (outside its environment? its output is above)",
            EXIT_FAILED,
        )
    return EXIT_OK


def _key(target: _Target) -> str:
    return target.name if isinstance(target, _Distribution) else str(target.path)


def _distributions() -> dict[str, _Distribution]:
    """Installed distributions by normalized name: the first on ``sys.path`` of each, as
    Python imports it."""
    from importlib.metadata import distributions

    from stoq_cli import _pip
    from stoq_cli._where import entry_point_reader

    published: dict[str, list[str]] = {}
    for name, claims in entry_point_reader().entry_points().items():
        for claim in claims:
            published.setdefault(_pip.normalize(claim.dist_name), []).append(name)
    found: dict[str, _Distribution] = {}
    for dist in distributions():
        name = dist.metadata["Name"] or ""
        key = _pip.normalize(name)
        if name and key not in found:
            found[key] = _Distribution(
                name, dist.version, _location(dist), tuple(sorted(published.get(key, ())))
            )
    return found


def _location(dist: Distribution) -> str:
    return os.path.abspath(str(dist.locate_file("")))


def _resolve(
    name: str,
    home: StoqHome,
    plugins: dict[str, PluginRecord],
    distributions: dict[str, _Distribution],
) -> _Target:
    """The one thing ``name`` means, refused if it means none, two, or stoQ itself."""
    from stoq_cli import _pip
    from stoq_cli._where import entry_point_reader

    if os.sep in name or "/" in name:
        path = Path(os.path.abspath(os.path.expanduser(name)))
        if path.parent != home.plugins or not path.is_dir():
            raise CliError(f"{name} is not a plugin folder in {home.plugins}")
        return _folder(path, home)
    found: dict[str, _Target] = {}
    dist = distributions.get(_pip.normalize(name))
    if dist is not None:
        found[_key(dist)] = dist
    # Every distribution publishing the name: with two (a conflict), the user picks one.
    for claim in entry_point_reader().entry_points().get(name, ()):
        dist = distributions.get(_pip.normalize(claim.dist_name))
        if dist is not None:
            found[_key(dist)] = dist
    for folder in _v3_folders(home):
        if folder.path.name == name or any(p.name == name for p in folder.plugins):
            found[_key(folder)] = folder
    if not found:
        hint = _did_you_mean(name, [*plugins, *(f.path.name for f in _v3_folders(home))])
        raise CliError(
            f"{name!r} is not installed: no plugin, distribution or v3 plugin folder of that "
            f"name{hint} ('stoq list' shows the plugins)"
        )
    if len(found) > 1:
        ordered = sorted(found.values(), key=lambda t: (isinstance(t, _Folder), _key(t)))
        choices = " or ".join(_key(target) for target in ordered)
        raise CliError(f"{name!r} could mean {choices}: name the one to uninstall")
    [target] = found.values()
    if isinstance(target, _Distribution):
        _refuse_core(target, distributions)
    return target


def _refuse_core(dist: _Distribution, distributions: dict[str, _Distribution]) -> None:
    from stoq_cli import _pip

    if _pip.normalize(dist.name) == _CORE:
        raise CliError(
            f"{_CORE} is stoQ itself, not a plugin: 'stoq uninstall' removes plugins "
            f"(to remove stoQ, run '{sys.executable} -m pip uninstall {_CORE}')"
        )
    if _pip.normalize(dist.name) in _needed_by_core():
        raise CliError(
            f"{dist.name} is needed by {_CORE}: 'stoq uninstall' would break stoq itself"
        )


def _needed_by_core() -> set[str]:
    import re
    from importlib.metadata import PackageNotFoundError, requires

    from stoq_cli import _pip

    try:
        wanted = requires(_CORE) or []
    except PackageNotFoundError:
        return set()
    # Only what every install needs: an extra's requirement ('; extra == "test"') is optional.
    return {
        _pip.normalize(match[0])
        for line in wanted
        if "extra ==" not in line and (match := re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line))
    }


def _v3_folders(home: StoqHome) -> list[_Folder]:
    """The folders in ``$STOQ_HOME/plugins``, each with the v3 plugins found in it."""
    from stoq_cli._installed import v3_plugins

    try:
        entries = sorted(p for p in home.plugins.iterdir() if p.is_dir())
    except OSError:
        return []
    records = v3_plugins(home.plugins).values()
    folders = []
    for path in entries:
        inside = tuple(
            r for r in records if Path(r.origin) == path or path in Path(r.origin).parents
        )
        folders.append(_Folder(path, inside))
    return folders


def _folder(path: Path, home: StoqHome) -> _Folder:
    return next(f for f in _v3_folders(home) if f.path == path)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_ANSWER = 256  #: characters of an answer read at most; a longer one is no yes


def _confirmed() -> bool:
    """Ask on stderr and read stdin, as pip does; no answer at all is not a yes."""
    print("Proceed (Y/n)? ", end="", file=sys.stderr, flush=True)
    # A line of at most _ANSWER characters: stdin with no newline in it (/dev/zero, a binary
    # file) was read whole, growing until the memory ran out.
    answer: Optional[str] = sys.stdin.readline(_ANSWER) if sys.stdin is not None else ""
    if not answer:
        print(file=sys.stderr)
        raise CliError("no answer on stdin: add -y to uninstall without asking")
    return answer.strip().lower() in ("", "y", "yes")


def _remove(path: Path, home: StoqHome) -> None:
    """Remove ``path`` whole: renamed out of the plugin directory first, so that a failure
    half-way leaves no half plugin for a scan to load."""
    import shutil
    import tempfile

    try:
        staging = Path(tempfile.mkdtemp(prefix=".removing-", dir=home.path))
        path.rename(staging / path.name)
    except OSError as exc:
        raise CliError(f"cannot remove {path}: {exc.strerror or exc}", EXIT_FAILED) from None
    shutil.rmtree(staging, ignore_errors=True)
