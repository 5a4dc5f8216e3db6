"""The ``stoq.plugins`` entry points, read through importlib.metadata or from an index file.

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
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import attrs

__all__ = ["ENTRY_POINT_GROUP", "PluginEntry", "entry_points", "refresh", "use_index_file"]

ENTRY_POINT_GROUP = "stoq.plugins"

_FORMAT = 1  # bumped when the file's layout changes
_STILL_NS = 2_000_000_000  # a path entry changed more recently than this is not trusted

# An entry point's value, as the packaging specification writes it: ``module:attr.sub [extras]``.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[.*\]\s*)?")


@attrs.frozen
class PluginEntry:
    """One ``stoq.plugins`` entry point and the distribution that declares it."""

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


_index_file: Optional[Path] = None
_entries: Optional[dict[str, tuple[PluginEntry, ...]]] = None
_trust_file = True


def use_index_file(path: Optional[os.PathLike[str] | str]) -> None:
    """Keep the entry points in ``path`` between processes (None: read the metadata every time)."""
    global _index_file, _entries
    _index_file = Path(path) if path is not None else None
    _entries = None


def refresh() -> None:
    """Forget what is known: the next lookup reads the installed metadata (and rewrites the index)."""
    global _entries, _trust_file
    _entries = None
    _trust_file = False
    importlib.invalidate_caches()


def entry_points() -> dict[str, tuple[PluginEntry, ...]]:
    """Every ``stoq.plugins`` entry point by name; more than one for a name is a conflict."""
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


def _from_metadata() -> dict[str, tuple[PluginEntry, ...]]:
    import importlib.metadata

    found: dict[str, list[PluginEntry]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        entry = PluginEntry(
            name=ep.name,
            value=ep.value,
            dist_name=dist.name if dist is not None else "?",
            dist_version=dist.version if dist is not None else "",
            summary=(dist.metadata["Summary"] or "") if dist is not None else "",
        )
        claims = found.setdefault(ep.name, [])
        # The same distribution seen twice on sys.path is one claim, not a conflict.
        if not any(claim.dist_name == entry.dist_name for claim in claims):
            claims.append(entry)
    return {name: tuple(claims) for name, claims in found.items()}


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


def _read(fingerprint: list[Any]) -> Optional[dict[str, tuple[PluginEntry, ...]]]:
    assert _index_file is not None
    try:
        with open(_index_file, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved["fingerprint"] != fingerprint:
            return None
        return {
            name: tuple(PluginEntry(**fields) for fields in claims)
            for name, claims in saved["entry_points"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, unreadable or from another version: read the metadata


def _write(fingerprint: list[Any], entries: dict[str, tuple[PluginEntry, ...]]) -> None:
    assert _index_file is not None
    saved = {
        "fingerprint": fingerprint,
        "entry_points": {
            name: [attrs.asdict(entry) for entry in claims] for name, claims in entries.items()
        },
    }
    temporary = _index_file.with_name(f".{_index_file.name}.{os.getpid()}")
    try:
        _index_file.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(saved), encoding="utf-8")
        os.replace(temporary, _index_file)
    except OSError:
        # A read-only home only costs the next start the metadata read.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
