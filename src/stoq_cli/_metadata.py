"""Versions and plugin names read from installed metadata, without importing any plugin.

``stoq --version`` and ``stoq install`` need only names and versions; importing the core or the
plugins for them would cost more than the answer is worth.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib
import importlib.metadata
from pathlib import Path

__all__ = ["PluginRecord", "core_version", "installed_plugins", "legacy_plugins"]

# The core's ENTRY_POINT_GROUP, spelled out so that reading it does not import the core.
ENTRY_POINT_GROUP = "stoq.plugins"


@dataclasses.dataclass(frozen=True, order=True)
class PluginRecord:
    """An installed plugin: its name, its distribution (or directory) and version."""

    name: str
    origin: str
    version: str


def core_version() -> str:
    try:
        return importlib.metadata.version("stoq-core")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        from stoq_core import __version__

        return __version__


def installed_plugins() -> dict[str, PluginRecord]:
    """Every entry point in ``stoq.plugins`` by name, as the metadata on ``sys.path`` says now."""
    importlib.invalidate_caches()
    found: dict[str, PluginRecord] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        record = PluginRecord(
            ep.name,
            dist.name if dist is not None else "?",
            dist.version if dist is not None else "",
        )
        found.setdefault(ep.name, record)
    return found


def legacy_plugins(directory: Path) -> dict[str, PluginRecord]:
    """The v3 plugins under ``directory`` by ``[Core] Name``; unreadable .stoq files are skipped."""
    found: dict[str, PluginRecord] = {}
    if not directory.is_dir():
        return found
    for stoq_file in sorted(directory.rglob("*.stoq")):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(stoq_file, encoding="utf-8-sig")
            name = parser.get("Core", "Name").strip()
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        version = parser.get("Documentation", "Version", fallback="").strip()
        found[name] = PluginRecord(name, str(stoq_file.parent), version)
    return found
