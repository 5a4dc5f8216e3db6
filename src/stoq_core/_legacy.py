"""The compatibility loader: stoQ v3 plugin directories (a ``.stoq`` file beside a module).

Discovery reads only the INI files; a module is imported when its plugin is first used, so one
broken directory entry never stops the others. The rules are v3's (``spec/v3-behaviour.md``,
"Plugin directories"): every ``*.stoq`` under each directory, recursively; ``[Core] Name`` and
``Module``; ``[Documentation]``; ``[options]`` defaults; exactly one plugin class per module; the
later directory wins a name; a ``min_stoq_version`` newer than ours warns but still loads.

Unlike v3, a plugin that someone other than us or root could have written is refused (issue
12): see ``stoq_core._trust``, and ``STOQ_ALLOW_UNSAFE_PLUGIN_DIRS`` to load it anyway. And
unlike v3, the plugin class may be a plain class with ``@hookimpl`` methods, as an installed
plugin's may (issue 15): a quick local plugin needs no base class.

A module is imported from its file under a private name (``module_name``), never from
``sys.path``: a plugin called after the library it imports (v3's ``lief``) gets the library, and
a plugin folder's ``tarfile.py`` never replaces the standard library's (issue 13).
"""

from __future__ import annotations

import builtins
import configparser
import dataclasses
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from stoq_core._legacy_yara import yara_for_v3
from stoq_core._trust import ALLOW_UNSAFE_VARIABLE, REMEDY, Trust, unsafe_allowed
from stoq_core.config import ini_parser, section_values
from stoq_core.exceptions import StoqPluginException

if TYPE_CHECKING:
    import importlib.abc

__all__ = ["LegacyPlugin", "discover", "is_newer_version", "load_class", "module_name"]

log = logging.getLogger("stoq.plugins")


# The module file beside the .stoq file; v3 also ran compiled-only plugins.
_MODULE_SUFFIXES = (".py", ".pyc")


@dataclasses.dataclass(frozen=True)
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
                plugin = dataclasses.replace(plugin, untrusted=problem)
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
    # Inline ``; comments`` are taken, as in stoq.cfg (``config.INLINE_COMMENT_PREFIXES``).
    parser = ini_parser()
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


def load_class(plugin: LegacyPlugin) -> type:
    """Import the plugin's module and return its one plugin class.

    A plugin class derives from a v3 base class (``stoq_core.plugins``), or is a plain class
    with ``@hookimpl`` methods, as an installed plugin may be (issue 15: a quick local plugin
    needs no base class, as datasette's ``--plugins-dir`` modules need none).

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
    """Import the plugin's module from its file, afresh, under its private name.

    v3 did not register the module under its bare name (so ``import lief`` in ``lief.py`` found
    the library), and neither do we; the folder is never put on ``sys.path`` either, where its
    ``tarfile.py`` would have replaced the standard library's for the whole process (issue 13).
    """
    name = module_name(plugin)
    package = _folder_package(plugin.module_file.parent)
    spec = importlib.util.spec_from_file_location(
        name, plugin.module_file, loader=_loader(name, str(plugin.module_file))
    )
    if spec is None or spec.loader is None:
        raise StoqPluginException(f"plugin {plugin.name!r}: cannot import {plugin.module_file}")
    module = importlib.util.module_from_spec(spec)
    _PLUGIN_MODULES.add(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        reason = f"{type(exc).__name__}: {_one_line(str(exc))}"
        requirements = plugin.module_file.parent / "requirements.txt"
        if isinstance(exc, ImportError) and requirements.is_file():
            reason += f" (its requirements are listed in {requirements})"
        raise StoqPluginException(
            f"plugin {plugin.name!r}: {plugin.module_file} failed to import: {reason}"
        ) from exc
    setattr(package, name.rpartition(".")[2], module)
    return module


# -- private names ---------------------------------------------------------------------------
#
# Each plugin folder is a package of its own under _NAMESPACE, named after the folder's path, so
# no plugin module or helper ever takes an installed module's name, and two folders' ``util.py``
# stay two modules. A helper beside the plugin module is found both ways a plugin may ask:
# ``from . import util`` through the package's ``__path__``, and v3's ``import util`` through
# the ``__import__`` of the folder's modules, which offers a sibling only once nothing installed
# has that name.

#: The namespace of every plugin folder's package; no installed module has this name.
_NAMESPACE = "stoq_legacy_plugins"

#: The private names of the modules loaded as plugin modules (never handed out as helpers).
_PLUGIN_MODULES: set[str] = set()


def module_name(plugin: LegacyPlugin) -> str:
    """The private name ``plugin``'s module is imported under, its key in ``sys.modules``.

    Unique to the module's file: ``stoq_legacy_plugins.<folder>_<hash of its path>.<module>``.
    """
    folder = plugin.module_file.parent
    # A dot in [Core] Module would read as a package; the name stays this file's own.
    stem = plugin.module_file.name.rsplit(".", 1)[0].replace(".", "_")
    return f"{_package_name(folder)}.{stem}"


def _package_name(folder: Path) -> str:
    real = os.path.realpath(folder)
    import hashlib  # here: listing plugins (``stoq --version``) never needs it

    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:12]
    label = re.sub(r"\W", "_", os.path.basename(real)) or "root"
    return f"{_NAMESPACE}.{label}_{digest}"


def _folder_package(folder: Path) -> ModuleType:
    """The package standing for ``folder`` (made on first use), and the namespace above it."""
    if _FolderFinder not in sys.meta_path:
        # First, but it answers only for names under _NAMESPACE: nothing installed is hidden.
        sys.meta_path.insert(0, _FolderFinder)
    namespace = sys.modules.get(_NAMESPACE)
    if namespace is None:
        spec = importlib.machinery.ModuleSpec(_NAMESPACE, None, is_package=True)
        spec.submodule_search_locations = []  # only the folder packages, made here
        namespace = sys.modules[_NAMESPACE] = importlib.util.module_from_spec(spec)
    name = _package_name(folder)
    package = sys.modules.get(name)
    if package is None:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [os.path.realpath(folder)]
        package = sys.modules[name] = importlib.util.module_from_spec(spec)
        setattr(namespace, name.rpartition(".")[2], package)
    return package


class _FolderFinder:
    """Finds the modules of a plugin folder's package, so they import as the plugin module does."""

    @staticmethod
    def find_spec(
        fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None
    ) -> Optional[ModuleSpec]:
        """The spec of ``fullname`` under a folder package's ``path``; ``None`` for any other."""
        if path is None or not fullname.startswith(_NAMESPACE + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = spec.loader if spec is not None else None
        if spec is None or spec.origin is None or not isinstance(loader, _PYTHON_LOADERS):
            return spec  # none, a namespace package or an extension module: no code of ours
        return importlib.util.spec_from_file_location(
            fullname,
            spec.origin,
            loader=_loader(fullname, spec.origin),
            submodule_search_locations=spec.submodule_search_locations,
        )


def _give_folder_import(module: ModuleType) -> None:
    module.__dict__["__builtins__"] = _folder_builtins()


class _SourceLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: ModuleType) -> None:
        _give_folder_import(module)
        super().exec_module(module)


class _SourcelessLoader(importlib.machinery.SourcelessFileLoader):
    def exec_module(self, module: ModuleType) -> None:
        _give_folder_import(module)
        super().exec_module(module)


_PYTHON_LOADERS = (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)


def _loader(name: str, path: str) -> importlib.abc.Loader:
    if path.endswith(tuple(importlib.machinery.BYTECODE_SUFFIXES)):
        return _SourcelessLoader(name, path)
    return _SourceLoader(name, path)


_builtins: Optional[dict[str, Any]] = None


def _folder_builtins() -> dict[str, Any]:
    """The builtins of a plugin folder's modules: the usual ones with ``_folder_import``.

    A copy made once: builtins added later (rare: ``gettext.install``) are not seen there.
    """
    global _builtins
    if _builtins is None:
        _builtins = {**vars(builtins), "__import__": _folder_import}
    return _builtins


def _folder_import(
    name: str,
    globals: Optional[Mapping[str, Any]] = None,
    locals: Optional[Mapping[str, Any]] = None,
    fromlist: Optional[Sequence[str]] = (),
    level: int = 0,
) -> ModuleType:
    """``__import__`` for a plugin folder's modules: installed modules first, then a sibling.

    ``import util`` in a plugin module finds the ``util.py`` beside it (as a private module)
    only when no installed or standard module is called ``util``, and never finds a plugin
    module: ``import lief`` in ``lief.py`` without the library installed stays an ImportError.
    """
    try:
        found = builtins.__import__(name, globals, locals, fromlist, level)
        if name == "yara" and level == 0:
            # v3 plugins read yara-python 4.2's match tuples, which 4.3 changed (issue 13).
            return yara_for_v3(found)
        return found
    except ModuleNotFoundError as exc:
        private = _sibling(name, globals, level, exc)
        if private is None:
            raise
    module = builtins.__import__(private, globals, locals, fromlist, 0)
    if fromlist:
        return module
    # ``import util.sub`` binds ``util``: the folder's, not the namespace above it.
    return sys.modules[private[: len(private) - len(name)] + name.partition(".")[0]]


def _sibling(
    name: str, globals: Optional[Mapping[str, Any]], level: int, missing: ModuleNotFoundError
) -> Optional[str]:
    """The private name of the sibling module an absolute import ``name`` may mean, or None."""
    top = name.partition(".")[0]
    importer = str((globals or {}).get("__name__", ""))
    parts = importer.split(".")
    if level != 0 or missing.name != top or len(parts) < 3 or parts[0] != _NAMESPACE:
        return None
    package = sys.modules.get(f"{parts[0]}.{parts[1]}")
    private = f"{parts[0]}.{parts[1]}.{top}"
    if package is None or private in _PLUGIN_MODULES:
        return None
    if importlib.machinery.PathFinder.find_spec(private, list(package.__path__)) is None:
        return None
    return f"{parts[0]}.{parts[1]}.{name}"


def _plugin_class(plugin: LegacyPlugin, module: ModuleType) -> type:
    # Any plugin class the module holds counts, imported ones too (v3 looked at every member), but
    # not the stoQ base classes themselves. (Imported here: discovery, which ``stoq --version``
    # runs, never needs the plugin bases or pluggy.)
    from stoq_core.plugins import ROLE_HOOKS, BasePlugin

    bases = {BasePlugin, *ROLE_HOOKS}
    candidates: list[type] = list(
        dict.fromkeys(
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and ((issubclass(obj, BasePlugin) and obj not in bases) or _marks_hooks(obj))
        )
    )
    # A plain class is complete with any marked method: a misspelled hook's name is then
    # reported by the registration, as for an installed plugin.
    complete = [
        c
        for c in candidates
        if not inspect.isabstract(c) and (_marks_hooks(c) or not _missing_hooks(c))
    ]
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
        f"{where} defines no plugin class: it needs one class with methods marked "
        "@stoq_core.hookimpl, or deriving from stoq.plugins.WorkerPlugin, DispatcherPlugin, "
        "ArchiverPlugin, ConnectorPlugin, DecoratorPlugin or ProviderPlugin"
    )


def _marks_hooks(cls: type) -> bool:
    """Whether ``cls`` (or a class it derives from) has a method marked ``@hookimpl``.

    Read from the class dictionaries, so no descriptor of the class runs.
    """
    from stoq_core.hookspecs import PROJECT_NAME

    marker = f"{PROJECT_NAME}_impl"
    for klass in cls.__mro__:
        for value in vars(klass).values():
            wrapped = isinstance(value, (staticmethod, classmethod))
            function = value.__func__ if wrapped else value
            if inspect.isfunction(function) and (
                hasattr(function, marker) or (wrapped and hasattr(value, marker))
            ):
                return True
    return False


def _missing_hooks(cls: type) -> list[str]:
    """The role methods ``cls`` lacks, e.g. ``['scan']`` for a WorkerPlugin without ``scan``."""
    from stoq_core.hookspecs import HOOK_NAMES
    from stoq_core.plugins import ROLE_HOOKS

    missing = []
    roles = [hooks for base, hooks in ROLE_HOOKS.items() if issubclass(cls, base)]
    # A direct BasePlugin subclass has no role: any one hook will do.
    for hooks in roles or [HOOK_NAMES]:
        if not any(inspect.isroutine(getattr(cls, hook, None)) for hook in hooks):
            missing.append(" or ".join(repr(hook) for hook in hooks))
    return missing


def _incomplete_reason(cls: type) -> str:
    if inspect.isabstract(cls):
        return f"{cls.__name__} is abstract"
    return f"{cls.__name__} has no {' and no '.join(_missing_hooks(cls))} method"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())
