"""What is installed, by name, version and origin, for ``stoq --version`` and ``stoq install``.

Nothing here reads metadata or ``.stoq`` files by rules of its own: entry points come from the
core's index (``stoq_core._index``, the same the scan reads) and v3 plugins from the core's
discovery (``stoq_core._legacy.discover``: the same interpolation, the same broken entries), so
these listings, ``stoq list`` and a scan cannot disagree. No plugin module is imported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from stoq_cli._where import entry_point_reader

__all__ = ["PluginRecord", "installed_plugins", "v3_plugins"]


@dataclasses.dataclass(frozen=True, order=True)
class PluginRecord:
    """One plugin as it is installed: its name, distribution (or directory) and version.

    A plugin no scan could load says why in ``error``: two distributions publish its name, its
    ``.stoq`` file is broken (then ``name`` is the file's path) or another user could have
    written it.
    """

    name: str
    origin: str
    version: str
    error: Optional[str] = None


def installed_plugins(fresh: bool = False) -> dict[str, PluginRecord]:
    """Every ``stoq.plugins`` entry point by name, from the index a scan reads.

    :param fresh: read the installed metadata now (after pip ran), not the index.
    """
    index = entry_point_reader()
    if fresh:
        index.refresh()
    found = {}
    for name, claims in index.entry_points().items():
        first = claims[0]
        error = None
        if len(claims) > 1:
            others = ", ".join(f"{c.dist_name} {c.dist_version}" for c in claims[1:])
            error = f"conflict: {others} also publish {name!r}; uninstall all but one"
        found[name] = PluginRecord(name, first.dist_name, first.dist_version, error)
    return found


def v3_plugins(directory: Path) -> dict[str, PluginRecord]:
    """The v3 plugins under ``directory`` by ``[Core] Name`` (origin: the .stoq file's folder),
    then its broken ``.stoq`` files by path, each with the reason a scan would give."""
    if not _has_entries(directory):
        return {}  # the usual empty plugins/: no need to import the discovery (30 ms)
    from stoq_core._legacy import discover
    from stoq_core._trust import unsafe_allowed

    plugins, broken = discover([directory])
    found = {}
    for name, plugin in sorted(plugins.items()):
        error = None
        if plugin.untrusted is not None and not unsafe_allowed():
            error = f"refused: {plugin.untrusted}"
        version = plugin.documentation.get("version", "")
        found[name] = PluginRecord(name, str(plugin.stoq_file.parent), version, error)
    for stoq_file, reason in sorted(broken.items()):
        found[stoq_file] = PluginRecord(stoq_file, str(Path(stoq_file).parent), "", reason)
    return found


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except FileNotFoundError:
        return False
    except OSError:  # not a directory, unreadable: discovery says so, as it does for a scan
        return True
