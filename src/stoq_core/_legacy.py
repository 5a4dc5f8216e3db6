"""The compatibility loader: stoQ v3 plugin directories (a ``.stoq`` file beside a module).

Discovery reads only the INI files; a module is imported when its plugin is first used, so one
broken directory entry never stops the others.
"""

from __future__ import annotations

import configparser
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import attrs

from stoq_core.exceptions import StoqPluginException
from stoq_core.plugins import BasePlugin

__all__ = ["LegacyPlugin", "discover", "load_class"]

log = logging.getLogger("stoq.plugins")


@attrs.frozen
class LegacyPlugin:
    """One plugin found in a plugin directory."""

    name: str
    stoq_file: Path
    module_file: Path
    directory: Path
    documentation: dict[str, str]
    options: dict[str, str]


def discover(directories: Iterable[str | Path]) -> tuple[dict[str, LegacyPlugin], dict[str, str]]:
    """Every ``*.stoq`` under ``directories``, recursively; a later directory wins a name.

    :returns: the plugins by name, and the broken entries (path of the .stoq file: the reason).
    """
    found: dict[str, LegacyPlugin] = {}
    broken: dict[str, str] = {}
    for directory in directories:
        root = Path(directory).expanduser()
        if not root.is_dir():
            continue
        for stoq_file in sorted(root.rglob("*.stoq")):
            try:
                plugin = _read(stoq_file, root)
            except StoqPluginException as exc:
                broken[str(stoq_file)] = str(exc)
                log.warning("skipping plugin %s: %s", stoq_file, exc)
                continue
            found[plugin.name] = plugin
    return found, broken


def _read(stoq_file: Path, root: Path) -> LegacyPlugin:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(stoq_file)
    except configparser.Error as exc:
        raise StoqPluginException(f"not a valid .stoq file: {exc.message}") from None
    try:
        name = parser.get("Core", "Name").strip()
        module = parser.get("Core", "Module").strip()
    except configparser.Error as exc:
        raise StoqPluginException(f"[Core] needs Name and Module ({exc.message})") from None
    module_file = stoq_file.parent / f"{module}.py"
    if not module_file.is_file():
        raise StoqPluginException(f"module {module_file} does not exist")
    documentation = dict(parser["Documentation"]) if parser.has_section("Documentation") else {}
    options = dict(parser["options"]) if parser.has_section("options") else {}
    return LegacyPlugin(name, stoq_file, module_file, root, documentation, options)


def load_class(plugin: LegacyPlugin) -> type[BasePlugin]:
    """Import the plugin's module and return its one plugin class.

    :raises StoqPluginException: the module fails to import, or holds no or several plugin classes.
    """
    module_name = f"stoq_legacy_plugins.{plugin.name}"
    spec = importlib.util.spec_from_file_location(module_name, plugin.module_file)
    if spec is None or spec.loader is None:
        raise StoqPluginException(f"cannot import {plugin.module_file}")
    module = importlib.util.module_from_spec(spec)
    # The module's own directory first, so a plugin can import its helper modules as v3 allowed.
    sys.path.insert(0, str(plugin.module_file.parent))
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise StoqPluginException(
            f"{plugin.module_file} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.path.remove(str(plugin.module_file.parent))
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BasePlugin)
        and obj.__module__ == module_name
        and not inspect.isabstract(obj)
    ]
    if len(classes) != 1:
        found = ", ".join(sorted(c.__name__ for c in classes)) or "none"
        raise StoqPluginException(
            f"{plugin.module_file} must define exactly one plugin class, found {found}"
        )
    return classes[0]
