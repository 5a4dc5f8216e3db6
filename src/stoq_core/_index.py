"""The ``stoq.plugins`` and ``stoq.commands`` entry points, read through importlib.metadata or
from an index file.

Importing ``importlib.metadata`` (it brings ``email``, ``zipfile``, ``csv``...) and reading every
distribution's entry points costs 25-30 ms here: more than everything else a one-file scan from
the command line does besides importing asyncio, click and attrs. A program that starts often
(the ``stoq`` command) names an index file with ``use_index_file``: the entry points are written
there with a fingerprint of the import path, and read back while the fingerprint holds.

The fingerprint is ``sys.path`` with each entry's modification time. Installing, upgrading or
removing a distribution adds or removes its ``.dist-info`` directory in a site-packages
directory, which changes that directory's time; a new path entry (PYTHONPATH, a ``.pth`` file)
changes the path itself. A directory changed in the last two seconds is not trusted (file times
are coarse, and a change in the same tick as the index would go unseen), so the index is written
only once the path has been still that long. What the fingerprint cannot see is an
``entry_points.txt`` edited in place, which installers never do; ``refresh`` rebuilds the index
(``stoq list`` and ``stoq install`` call it).

Both groups are read in one pass and kept in one file, so a process reads the index once. This
module imports only the standard library: ``stoq --help`` reads the plugin commands from it
without paying for the rest of the core (attrs alone costs about 15 ms to import).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import time
from typing import Any, NamedTuple, Optional

__all__ = [
    "COMMAND_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "PluginEntry",
    "command_entry_points",
    "entry_points",
    "refresh",
    "use_index_file",
]

#: Plugins: pluggy hook implementations, by the name users type after -s, -a, -C...
ENTRY_POINT_GROUP = "stoq.plugins"
#: Commands of the ``stoq`` command line: click commands, by the name typed after ``stoq``.
COMMAND_ENTRY_POINT_GROUP = "stoq.commands"
# Each group's key in the index file.
_KEYS = {ENTRY_POINT_GROUP: "entry_points", COMMAND_ENTRY_POINT_GROUP: "commands"}

_FORMAT = 2  # bumped when the file's layout changes
_STILL_NS = 2_000_000_000  # a path entry changed more recently than this is not trusted

# An entry point's value, as the packaging specification writes it: ``module:attr.sub [extras]``.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[.*\]\s*)?")


class PluginEntry(NamedTuple):
    """One ``stoq.plugins`` (or ``stoq.commands``) entry point and the distribution declaring it.

    A named tuple, not a dataclass: ``stoq --help`` reads these, and ``dataclasses`` (with
    ``copy``, and the class built by ``exec``) was a millisecond of every command's start.
    """

    name: str
    value: str  #: ``module:attribute``
    dist_name: str
    dist_version: str
    summary: str = ""  #: the distribution's one-line description

    def load(self) -> Any:
        """Import the module and return the named object, as ``EntryPoint.load`` does."""
        match = _VALUE.fullmatch(self.value)
        if match is None:
            raise ValueError(f"{self.value!r} is not an entry point (module:attribute)")
        target: Any = importlib.import_module(match["module"])
        for part in filter(None, (match["attr"] or "").split(".")):
            target = getattr(target, part)
        return target


Entries = dict[str, tuple[PluginEntry, ...]]

_index_file: Optional[str] = None  # a path; no pathlib: `stoq --help` imports this module
_entries: Optional[dict[str, Entries]] = None  # by group
_trust_file = True


def use_index_file(path: Optional[os.PathLike[str] | str]) -> None:
    """Keep the entry points in ``path`` between processes (None: read the metadata every time)."""
    global _index_file, _entries
    _index_file = os.fspath(path) if path is not None else None
    _entries = None


def refresh() -> None:
    """Forget what is known: the next lookup reads the installed metadata (and rewrites the index)."""
    global _entries, _trust_file
    _entries = None
    _trust_file = False
    importlib.invalidate_caches()


def entry_points() -> dict[str, tuple[PluginEntry, ...]]:
    """Every ``stoq.plugins`` entry point by name; more than one for a name is a conflict."""
    return _groups()[ENTRY_POINT_GROUP]


def command_entry_points() -> dict[str, tuple[PluginEntry, ...]]:
    """Every ``stoq.commands`` entry point by name; more than one for a name is a conflict."""
    return _groups()[COMMAND_ENTRY_POINT_GROUP]


def _groups() -> dict[str, Entries]:
    global _entries, _trust_file
    if _entries is None:
        fingerprint = _fingerprint() if _index_file is not None else None
        if fingerprint is not None and _trust_file:
            _entries = _read(fingerprint)
        if _entries is None:
            _entries = _from_metadata()
            if fingerprint is not None and _is_still(fingerprint):
                _write(fingerprint, _entries)
        _trust_file = True
    return _entries


def _from_metadata() -> dict[str, Entries]:
    import importlib.metadata

    found: dict[str, dict[str, list[PluginEntry]]] = {group: {} for group in _KEYS}
    # One pass over the distributions for both groups: reading the metadata is the cost.
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group not in found:
                continue
            entry = PluginEntry(
                name=ep.name,
                value=ep.value,
                dist_name=dist.name,
                dist_version=dist.version,
                summary=dist.metadata["Summary"] or "",
            )
            claims = found[ep.group].setdefault(ep.name, [])
            # The same distribution seen twice on sys.path is one claim, not a conflict.
            if not any(claim.dist_name == entry.dist_name for claim in claims):
                claims.append(entry)
    return {
        group: {name: tuple(claims) for name, claims in by_name.items()}
        for group, by_name in found.items()
    }


def _fingerprint() -> list[Any]:
    stamps: list[Any] = [_FORMAT, sys.prefix]
    for entry in sys.path:
        try:
            stamps.append([str(entry), os.stat(entry or ".").st_mtime_ns])
        except (OSError, TypeError, ValueError):
            stamps.append([str(entry), None])
    return stamps


def _is_still(fingerprint: list[Any]) -> bool:
    newest = max((stamp[1] for stamp in fingerprint[2:] if stamp[1] is not None), default=0)
    return newest < time.time_ns() - _STILL_NS


def _read(fingerprint: list[Any]) -> Optional[dict[str, Entries]]:
    assert _index_file is not None
    try:
        with open(_index_file, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved["fingerprint"] != fingerprint:
            return None
        return {
            group: {
                name: tuple(PluginEntry(**fields) for fields in claims)
                for name, claims in saved[key].items()
            }
            for group, key in _KEYS.items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, unreadable or from another version: read the metadata


def _write(fingerprint: list[Any], entries: dict[str, Entries]) -> None:
    assert _index_file is not None
    saved = {
        "fingerprint": fingerprint,
        **{
            key: {
                name: [entry._asdict() for entry in claims]
                for name, claims in entries[group].items()
            }
            for group, key in _KEYS.items()
        },
    }
    folder, name = os.path.split(_index_file)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}")
    try:
        # 0o755, not the umask's mode: under umask 002 a group-writable home would have its
        # v3 plugins refused.
        os.makedirs(folder or ".", mode=0o755, exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(saved))
        os.replace(temporary, _index_file)
    except OSError:
        # A read-only home only costs the next start the metadata read.
        with contextlib.suppress(OSError):
            os.unlink(temporary)
