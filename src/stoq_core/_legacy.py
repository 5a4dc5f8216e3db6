"""The compatibility loader: stoQ v3 plugin directories (a ``.stoq`` file beside a module).

Discovery reads only the INI files; a module is imported when its plugin is first used, so one
broken directory entry never stops the others. The rules are v3's (``spec/v3-behaviour.md``,
"Plugin directories"): every ``*.stoq`` under each directory, recursively; ``[Core] Name`` and
``Module``; ``[Documentation]``; ``[options]`` defaults; exactly one plugin class per module; the
later directory wins a name; a ``min_stoq_version`` newer than ours warns but still loads.

Unlike v3, a plugin that someone other than us or root could have written is refused (issue
12): see ``stoq_core._trust``, and ``STOQ_ALLOW_UNSAFE_PLUGIN_DIRS`` to load it anyway.
"""

from __future__ import annotations

import configparser
import importlib.util
import inspect
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Optional

import attrs

from stoq_core._trust import ALLOW_UNSAFE_VARIABLE, REMEDY, Trust, unsafe_allowed
from stoq_core.config import section_values
from stoq_core.exceptions import StoqPluginException
from stoq_core.hookspecs import HOOK_NAMES
from stoq_core.plugins import ROLE_HOOKS as _ROLE_HOOKS
from stoq_core.plugins import BasePlugin

__all__ = ["LegacyPlugin", "discover", "is_newer_version", "load_class"]

log = logging.getLogger("stoq.plugins")

_BASES = frozenset((BasePlugin, *_ROLE_HOOKS))

# The module file beside the .stoq file; v3 also ran compiled-only plugins.
_MODULE_SUFFIXES = (".py", ".pyc")


@attrs.frozen
class LegacyPlugin:
    """One plugin found in a plugin directory."""

    name: str
    stoq_file: Path
    module_file: Path
    directory: Path  #: the plugin directory it was found under (``plugin_dir_list`` entry)
    documentation: dict[str, str]
    options: dict[str, str]
    #: Why another user could have written the plugin (then it is refused), or ``None``.
    untrusted: Optional[str] = None


# -- discovery -------------------------------------------------------------------------------


def discover(directories: Iterable[str | Path]) -> tuple[dict[str, LegacyPlugin], dict[str, str]]:
    """Every ``*.stoq`` under ``directories``, recursively; a later directory wins a name.

    Broken entries (unreadable INI, no ``[Core] Name``/``Module``, no module file) are skipped
    with a warning naming the file and the reason. A plugin another user could have written
    is found, so that naming it gives the reason, with ``untrusted`` set: ``load_class``
    refuses it.

    :returns: the plugins by name, and the broken entries (path of the .stoq file: the reason).
    """
    found: dict[str, LegacyPlugin] = {}
    broken: dict[str, str] = {}
    trust = Trust() if hasattr(os, "geteuid") else None  # POSIX owners and modes only
    allowed = unsafe_allowed()
    for directory in directories:
        root = Path(os.path.abspath(Path(directory).expanduser()))
        if not root.is_dir():
            if root.exists():
                log.warning("plugin directory %s is not a directory; skipping it", root)
            else:
                # The default directories (base_dir/plugins, $STOQ_HOME/plugins) often do not exist.
                log.debug("plugin directory %s does not exist; skipping it", root)
            continue
        for stoq_file, problem in _stoq_files(root, trust, allowed):
            try:
                # A link in a directory others can write may be theirs: it is not followed.
                plugin = _read(stoq_file, root, follow_links=problem is None or allowed)
            except StoqPluginException as exc:
                reason = str(exc) if problem is None else f"refused: {problem}; {REMEDY}"
                broken[str(stoq_file)] = reason
                log.warning("skipping plugin %s: %s", stoq_file, reason)
                continue
            if problem is None and trust is not None:
                problem = trust.plugin_files(plugin.stoq_file, plugin.module_file)
            if problem is not None:
                plugin = attrs.evolve(plugin, untrusted=problem)
            _note_override(found.get(plugin.name), plugin)
            found[plugin.name] = plugin
    return found, broken


def _stoq_files(
    root: Path, trust: Optional[Trust], allowed: bool
) -> list[tuple[Path, Optional[str]]]:
    """The ``*.stoq`` files under ``root`` in a stable order, following directory symlinks once.

    Symlinked plugin checkouts (``ln -s ~/src/myplugin ~/.stoq/plugins/``) are common, so links
    are followed; a directory reached twice (a link loop) is walked only once. Each file comes
    with why its directory is not safe (``Trust``), or ``None``; under an unsafe directory,
    links are not followed unless ``allowed``.
    """
    files: list[tuple[Path, Optional[str]]] = []
    seen: set[str] = set()
    problems: dict[str, Optional[str]] = {}

    def unreadable(error: OSError) -> None:
        log.warning("cannot read plugin directory %s: %s", error.filename, error.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        # A directory under an unsafe one is unsafe too: others could have made or moved it.
        problem = problems.get(os.path.dirname(dirpath))
        if problem is None and trust is not None:
            problem = trust.plugin_directory(dirpath)
        problems[dirpath] = problem
        dirnames.sort()
        if problem is not None and not allowed:
            # Another user's link could point the walk anywhere (/, a loop of their making).
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        files.extend((Path(dirpath, f), problem) for f in sorted(filenames) if f.endswith(".stoq"))
    return files


def _note_override(previous: LegacyPlugin | None, plugin: LegacyPlugin) -> None:
    if previous is None or previous.stoq_file.resolve() == plugin.stoq_file.resolve():
        return
    if previous.directory == plugin.directory:
        # Two entries of one directory claiming a name is almost always a copy-paste slip.
        log.warning(
            "plugin name %r is defined twice in %s: %s is used, %s is ignored",
            plugin.name,
            plugin.directory,
            plugin.stoq_file,
            previous.stoq_file,
        )
    else:
        log.debug(
            "plugin %r from %s overrides the one in %s",
            plugin.name,
            plugin.directory,
            previous.directory,
        )


def _read(stoq_file: Path, root: Path, follow_links: bool = True) -> LegacyPlugin:
    # v3 read .stoq files with ConfigParser's default (basic) interpolation, so authors wrote
    # ``%%`` for a literal ``%``; reading the same way keeps their values what they were.
    parser = configparser.ConfigParser()
    opener = None if follow_links else _open_no_follow
    try:
        # utf-8-sig: a byte-order mark (Windows editors) is not a missing [section] header.
        with open(stoq_file, encoding="utf-8-sig", opener=opener) as handle:
            parser.read_file(handle)
    except configparser.Error as exc:
        raise StoqPluginException(f"not a valid .stoq file: {_ini_problem(exc)}") from None
    except UnicodeDecodeError:
        raise StoqPluginException("not a valid .stoq file: it is not UTF-8 text") from None
    except OSError as exc:
        raise StoqPluginException(f"cannot read it: {exc.strerror}") from None
    try:
        name = parser.get("Core", "Name", raw=True).strip()
        module = parser.get("Core", "Module", raw=True).strip()
    except configparser.Error as exc:
        raise StoqPluginException(f"[Core] needs Name and Module ({exc.message})") from None
    if not name or not module:
        raise StoqPluginException("[Core] Name and Module must not be empty")
    if "/" in module or "\\" in module:
        raise StoqPluginException(
            f"[Core] Module = {module} must be the name of a module beside the .stoq file"
        )
    module_file = _module_file(stoq_file, module)
    return LegacyPlugin(
        name=name,
        stoq_file=stoq_file,
        module_file=module_file,
        directory=root,
        documentation=section_values(parser, "Documentation"),
        options=section_values(parser, "options"),
    )


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def _ini_problem(exc: configparser.Error) -> str:
    """What is wrong, by line; configparser's own messages repeat the path over several lines."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno} comes before any [section] header: {exc.line.strip()!r}"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: option {exc.option!r} is already set in [{exc.section}]"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: section [{exc.section}] appears twice"
    if isinstance(exc, configparser.ParsingError):
        # Each bad line comes as its repr, newline included: show it as it reads in the file.
        lines = ", ".join(f"{n} ({text.replace(chr(92) + 'n', '')})" for n, text in exc.errors)
        return f"cannot parse line {lines}"
    return _one_line(exc.message)


def _module_file(stoq_file: Path, module: str) -> Path:
    for suffix in _MODULE_SUFFIXES:
        candidate = stoq_file.parent / f"{module}{suffix}"
        if candidate.is_file():
            return candidate
    hint = "; give [Core] Module without the .py extension" if module.endswith(".py") else ""
    raise StoqPluginException(f"module {stoq_file.parent / (module + '.py')} does not exist{hint}")


# -- loading ---------------------------------------------------------------------------------


def _check_trust(plugin: LegacyPlugin) -> None:
    if plugin.untrusted is None:
        return
    if unsafe_allowed():
        log.warning(
            "plugin %r: loading %s although %s (%s is set)",
            plugin.name,
            plugin.module_file,
            plugin.untrusted,
            ALLOW_UNSAFE_VARIABLE,
        )
        return
    raise StoqPluginException(
        f"plugin {plugin.name!r} ({plugin.stoq_file}) is refused: {plugin.untrusted}, so "
        f"another user could have written it; {REMEDY}"
    )


def load_class(plugin: LegacyPlugin) -> type[BasePlugin]:
    """Import the plugin's module and return its one plugin class.

    A ``min_stoq_version`` newer than this stoQ logs a warning naming the plugin and both
    versions; the plugin still loads, as in v3.

    :raises StoqPluginException: the plugin is ``untrusted`` (and ``STOQ_ALLOW_UNSAFE_PLUGIN_DIRS``
        is not set), its module fails to import, or holds no or several plugin classes.
    """
    _check_trust(plugin)
    _warn_if_too_new(plugin)
    module = _import(plugin)
    return _plugin_class(plugin, module)


def _warn_if_too_new(plugin: LegacyPlugin) -> None:
    wanted = plugin.options.get("min_stoq_version", "").strip()
    if not wanted:
        return
    # Imported here: stoq_core/__init__.py imports this module before defining __version__.
    from stoq_core import __version__

    try:
        too_new = is_newer_version(wanted, __version__)
    except ValueError:
        log.warning(
            "plugin %r (%s): min_stoq_version %r is not a version number; loading it anyway",
            plugin.name,
            plugin.stoq_file,
            wanted,
        )
        return
    if too_new:
        log.warning(
            "plugin %r (%s) requires stoQ %s or newer, but this is stoQ %s; loading it anyway, "
            "it may not work as intended",
            plugin.name,
            plugin.stoq_file,
            wanted,
            __version__,
        )


def is_newer_version(wanted: str, current: str) -> bool:
    """Whether version ``wanted`` is newer than ``current`` (PEP 440 when ``packaging`` is there).

    :raises ValueError: ``wanted`` or ``current`` is not a version number.
    """
    try:
        # Not a dependency of stoq-core (so maybe untyped here); the release numbers suffice.
        from packaging.version import (  # type: ignore[import-not-found,unused-ignore]
            InvalidVersion,
            Version,
        )
    except ImportError:
        return _release(wanted) > _release(current)
    try:
        return bool(Version(wanted) > Version(current))
    except InvalidVersion as exc:
        raise ValueError(str(exc)) from None


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if match is None:
        raise ValueError(f"invalid version: {version!r}")
    numbers = [int(part) for part in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:  # 4.0 == 4.0.0
        numbers.pop()
    return tuple(numbers)


def _import(plugin: LegacyPlugin) -> ModuleType:
    module_name = f"stoq_legacy_plugins.{plugin.name}"
    spec = importlib.util.spec_from_file_location(module_name, plugin.module_file)
    if spec is None or spec.loader is None:
        raise StoqPluginException(f"plugin {plugin.name!r}: cannot import {plugin.module_file}")
    module = importlib.util.module_from_spec(spec)
    # The module's own directory first, so a plugin can import its helper modules.
    directory = str(plugin.module_file.parent)
    sys.path.insert(0, directory)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        reason = f"{type(exc).__name__}: {_one_line(str(exc))}"
        requirements = plugin.module_file.parent / "requirements.txt"
        if isinstance(exc, ImportError) and requirements.is_file():
            reason += f" (its requirements are listed in {requirements})"
        raise StoqPluginException(
            f"plugin {plugin.name!r}: {plugin.module_file} failed to import: {reason}"
        ) from exc
    finally:
        if directory in sys.path:
            sys.path.remove(directory)
    return module


def _plugin_class(plugin: LegacyPlugin, module: ModuleType) -> type[BasePlugin]:
    # Any plugin class the module holds counts, imported ones too (v3 looked at every member), but
    # not the stoQ base classes themselves.
    candidates = list(
        dict.fromkeys(
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BasePlugin) and obj not in _BASES
        )
    )
    complete = [c for c in candidates if not inspect.isabstract(c) and not _missing_hooks(c)]
    # A helper base class the plugin class derives from is not a second plugin.
    plugin_classes = [
        c
        for c in complete
        if not any(other is not c and issubclass(other, c) for other in complete)
    ]
    where = f"plugin {plugin.name!r}: {plugin.module_file}"
    if len(plugin_classes) == 1:
        return plugin_classes[0]
    if len(plugin_classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in plugin_classes))
        raise StoqPluginException(
            f"{where} defines {len(plugin_classes)} plugin classes ({names}); a plugin module "
            "must define exactly one"
        )
    if candidates:
        reasons = "; ".join(_incomplete_reason(c) for c in candidates)
        raise StoqPluginException(f"{where} defines no complete plugin class: {reasons}")
    raise StoqPluginException(
        f"{where} defines no plugin class: it needs one class deriving from "
        "stoq.plugins.WorkerPlugin, DispatcherPlugin, ArchiverPlugin, ConnectorPlugin, "
        "DecoratorPlugin or ProviderPlugin"
    )


def _missing_hooks(cls: type[BasePlugin]) -> list[str]:
    """The role methods ``cls`` lacks, e.g. ``['scan']`` for a WorkerPlugin without ``scan``."""
    missing = []
    roles = [hooks for base, hooks in _ROLE_HOOKS.items() if issubclass(cls, base)]
    # A direct BasePlugin subclass has no role: any one hook will do.
    for hooks in roles or [HOOK_NAMES]:
        if not any(inspect.isroutine(getattr(cls, hook, None)) for hook in hooks):
            missing.append(" or ".join(repr(hook) for hook in hooks))
    return missing


def _incomplete_reason(cls: type[BasePlugin]) -> str:
    if inspect.isabstract(cls):
        return f"{cls.__name__} is abstract"
    return f"{cls.__name__} has no {' and no '.join(_missing_hooks(cls))} method"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())
