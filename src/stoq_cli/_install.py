"""``stoq install``: plugin distributions through pip, v3 plugins by copying.

A distribution (a requirement such as ``stoq-plugin-yara``, a wheel, an sdist or a project
directory, or with ``-e`` a project in development mode) is installed with ``python -m pip
install`` of the interpreter stoq runs in (``_pip``), so the plugins land where ``stoq`` finds
them; pip's own options given to ``stoq install`` are passed on. What pip did is read from its
``--report``, so a reinstall says "reinstalled" and an installed requirement "nothing to
install", whether or not ``--upgrade`` was given (issue 15: both once said "add --upgrade").

A v3 plugin is installed as v3's ``stoq install`` did (issue 13): its ``requirements.txt`` with
that same pip, then its folder holding the ``.stoq`` file copied to
``$STOQ_HOME/plugins/<folder name>``. Both layouts of a v3 plugin are taken:

- the source folder of stoq-plugins-public: ``setup.py``, ``requirements.txt`` and an inner
  folder with the ``.stoq`` file and module. The inner folder is copied; the outer one is never
  pip-installed (it declares no entry point, so as a distribution it would hold no plugin);
- a folder holding the ``.stoq`` file itself (such an inner folder, or a bare plugin directory),
  with its requirements in ``requirements.txt`` beside the ``.stoq`` file or, for an inner
  folder, in the source folder around it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

from stoq_cli import _pip
from stoq_cli._errors import EXIT_OK, CliError
from stoq_cli._home import StoqHome
from stoq_cli._installed import PluginRecord, installed_plugins
from stoq_cli._installed import v3_plugins as v3_plugins_in
from stoq_core._index import ENTRY_POINT_GROUP  # the standard library only: cheap to import
from stoq_core._printable import printable

__all__ = ["V3Plugin", "install_command", "v3_plugins"]

_PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tgz", ".tar.bz2")
_REQUIREMENTS = "requirements.txt"
# Folders of a source tree that hold no plugin to install (v3's setup.py excluded tests too).
_NOT_PLUGINS = frozenset(
    ("__pycache__", "build", "dist", "node_modules", "site-packages", "test", "tests")
)


@dataclasses.dataclass(frozen=True)
class V3Plugin:
    """A folder holding v3 ``.stoq`` plugins, to copy to ``$STOQ_HOME/plugins/<name>``."""

    folder: Path
    #: The ``requirements.txt`` to pip-install first, or ``None``.
    requirements: Path | None

    @property
    def name(self) -> str:
        """The folder's name, which its copy in the plugin directory keeps."""
        return self.folder.name


def v3_plugins(path: Path) -> list[V3Plugin]:
    """The v3 plugin folders that ``path`` holds, or ``[]`` when it is no v3 plugin.

    A directory with ``.stoq`` files and no project file is one plugin folder, copied whole. A
    project (``setup.py``, ``pyproject.toml``, ``setup.cfg``) that declares no ``stoq.plugins``
    entry point is a v3 source folder: each topmost folder in it with a ``.stoq`` file is one.
    """
    if not path.is_dir():
        return []
    path = Path(os.path.abspath(path))
    projects = [path / name for name in _PROJECT_FILES if (path / name).is_file()]
    if not projects:
        if next(_plugin_folders(path), None) is None:
            return []
        return [V3Plugin(path, _requirements_of(path))]
    if any(_declares_entry_points(project) for project in projects):
        return []
    requirements = _requirements(path / _REQUIREMENTS)
    return [V3Plugin(folder, requirements) for folder in _plugin_folders(path)]


def _plugin_folders(root: Path) -> Iterator[Path]:
    """The topmost folders under ``root`` (itself included) that hold a ``.stoq`` file."""
    for dirpath, dirnames, filenames in os.walk(root):
        if any(name.endswith(".stoq") for name in filenames):
            dirnames[:] = []  # copied whole, with whatever lies under it
            yield Path(dirpath)
            continue
        dirnames[:] = sorted(
            name
            for name in dirnames
            if not name.startswith(".")
            and not name.endswith(".egg-info")
            and name not in _NOT_PLUGINS
        )


def _requirements_of(folder: Path) -> Path | None:
    """A plugin folder's requirements: its own, else its source folder's (the inner layout)."""
    own = _requirements(folder / _REQUIREMENTS)
    if own is not None:
        return own
    outer = folder.parent
    if any((outer / name).is_file() for name in _PROJECT_FILES):
        return _requirements(outer / _REQUIREMENTS)
    return None


def _requirements(path: Path) -> Path | None:
    """``path`` if it names at least one requirement; an empty file needs no pip."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise CliError(f"cannot read {path}: {reason or exc}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return path if any(lines) else None


def _declares_entry_points(project: Path) -> bool:
    try:
        return ENTRY_POINT_GROUP in project.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # pip will say what is wrong with it


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.startswith(".") or spec.endswith(_ARCHIVES)


def install_command(
    specs: Sequence[str],
    upgrade: bool,
    editable: Sequence[str] = (),
    pip_options: Sequence[str] = (),
) -> int:
    """Run ``stoq install``; returns the exit code.

    :param editable: project folders to install in development mode (``pip install -e``).
    :param pip_options: pip's own options, passed on to every pip this runs.
    """
    home = StoqHome.from_environment()
    copies: list[V3Plugin] = []
    to_pip: list[str] = []
    for spec in specs:
        found = v3_plugins(Path(spec))
        if found:
            copies += found
        elif _looks_like_path(spec) and not os.path.exists(spec):
            raise CliError(f"{spec}: no such file or directory")
        else:
            to_pip.append(spec)
    asked = [*to_pip, *editable]  # what pip is asked for, as the user wrote it
    for path in editable:
        if not os.path.exists(path):
            raise CliError(f"{path}: no such file or directory")
        if v3_plugins(Path(path)):
            raise CliError(
                f"{path} holds v3 plugins, which are copied, not installed in development mode: "
                f"to run them from where they are, give 'stoq scan' --plugin-dir {path}"
            )
        to_pip += ["--editable", path]
    # pip reinstalls when told to force it: a v3 copy is replaced then too.
    replace = upgrade or "--force-reinstall" in pip_options
    # Everything is checked before anything is installed: a refusal leaves no half install.
    targets: dict[Path, V3Plugin] = {}
    for plugin in copies:
        target = home.plugins / plugin.name
        if target in targets and targets[target].folder != plugin.folder:
            raise CliError(
                f"{targets[target].folder} and {plugin.folder} would both be installed as "
                f"{target}; install them one at a time"
            )
        if target.exists() and not replace:
            raise CliError(f"{target} already exists; add --upgrade to replace it")
        targets[target] = plugin

    changes = []
    # Requirements first, as v3 did: a plugin is copied only once it can import them.
    for requirements in dict.fromkeys(p.requirements for p in targets.values() if p.requirements):
        _pip.install(
            ["-r", str(requirements)], pip_options, requirements.parent, "; no plugin was copied"
        )
        changes.append(f"installed requirements from {requirements} with pip into {sys.prefix}")
    if targets:
        home.prepare()  # plugins/ with an explicit mode: umask 002 would make it refused
    for target, plugin in targets.items():
        _copy(plugin.folder, target)
        for record in sorted(v3_plugins_in(target).values()):
            version = f" {record.version}" if record.version else ""
            problem = f" (a scan will not load it: {record.error})" if record.error else ""
            changes.append(f"installed plugin {record.name}{version} in {record.origin}{problem}")
    report: Optional[list[_pip.Installed]] = []
    after: dict[str, PluginRecord] = {}
    if to_pip:
        before = installed_plugins(fresh=True)
        try:
            report = _pip.install(to_pip, [*(["--upgrade"] if upgrade else []), *pip_options])
        finally:
            _pip.forget_installed(home)  # pip may have changed things even when it failed
        after = installed_plugins(fresh=True)
        changes += _changes(before, after, report)
    for line in changes:
        print(line)
    if report is None:  # a pip too old to report what it did: only the plugins tell
        if not changes:
            _note(
                f"no new or changed plugins: {' '.join(asked)} added no {ENTRY_POINT_GROUP} entry point"
                + ("" if upgrade else " (already installed? add --upgrade)")
            )
    elif to_pip and not report:
        # -U was given or not, pip found everything installed: say which way (issue 15).
        _note(
            f"nothing to install: {' '.join(asked)} already up to date"
            if upgrade
            else f"nothing to install: {' '.join(asked)} already installed "
            "(add --upgrade for a newer version)"
        )
    else:
        _say_what_added_nothing(report, after)
    return EXIT_OK


def _note(message: str) -> None:
    print(f"stoq: {printable(message)}", file=sys.stderr)


def _say_what_added_nothing(report: list[_pip.Installed], after: dict[str, PluginRecord]) -> None:
    """A distribution asked for that publishes no plugin is most often a forgotten entry point."""
    publishing = {_pip.normalize(record.origin) for record in after.values()}
    for dist in report:
        if dist.requested and _pip.normalize(dist.name) not in publishing:
            _note(
                f"{dist.name} {dist.version} declares no {ENTRY_POINT_GROUP!r} entry point: "
                "it adds no plugin"
            )


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, replacing it whole or, on failure, leaving it as it was."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Staged beside the target, so the swap is two renames on one file system.
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-installing-", dir=target.parent))
    except OSError as exc:
        raise CliError(f"cannot create {target}: {exc.strerror or exc}") from None
    try:
        fresh = staging / "new"
        # .pyc files stay: v3 loaded a compiled-only module beside its .stoq file.
        shutil.copytree(source, fresh, ignore=shutil.ignore_patterns("__pycache__"))
        # copytree keeps the source's modes: a group-writable copy would be refused at load.
        for path in [fresh, *fresh.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o022)
        if target.exists() or target.is_symlink():
            target.rename(staging / "old")
        fresh.rename(target)
    except OSError as exc:
        raise CliError(f"cannot copy {source} to {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _changes(
    before: dict[str, PluginRecord],
    after: dict[str, PluginRecord],
    report: Optional[list[_pip.Installed]],
) -> list[str]:
    """A line per plugin pip added, changed, reinstalled or took away.

    :param report: what pip installed (``None``: a pip too old to say); a plugin of a
        distribution it reinstalled at the same version is "reinstalled".
    """
    reinstalled = {_pip.normalize(d.name): d for d in report or ()}
    lines = []
    for name, record in sorted(after.items()):
        old = before.get(name)
        where = f"from {record.origin}"
        version = f" {record.version}" if record.version else ""
        dist = reinstalled.get(_pip.normalize(record.origin))
        how = " (editable)" if dist is not None and dist.editable else ""
        if old is None:
            lines.append(f"installed plugin {name}{version} {where}{how}")
        elif old != record:
            lines.append(f"updated plugin {name}{version} {where} (was {old.version or '?'}){how}")
        elif dist is not None:
            lines.append(f"reinstalled plugin {name}{version} {where}{how}")
    for name, old in sorted(before.items()):
        if name not in after:
            lines.append(f"removed plugin {name} (was {old.version} from {old.origin})")
    return lines
