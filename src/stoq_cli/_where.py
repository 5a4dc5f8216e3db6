"""Where ``$STOQ_HOME`` and its entry-point index are, and the core's reader of that index.

Kept apart from ``_home`` (which builds a ``Stoq`` from parsed options) so that ``stoq --help``,
which lists the plugins' commands from the index, imports no more than this and the index
reader: every millisecond here is paid by every command.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Mapping
from types import ModuleType

__all__ = ["entry_point_index", "entry_point_reader", "home_path"]


def home_path(environ: Mapping[str, str] = os.environ) -> str:
    """``$STOQ_HOME``, or ``~/.stoq`` when it is unset or blank, made absolute."""
    return os.path.abspath(os.path.expanduser(environ.get("STOQ_HOME") or "~/.stoq"))


def entry_point_index(home: str) -> str:
    """Where the installed plugins' entry points are kept between runs in ``home`` (see
    ``stoq_core.use_entry_point_index``): one file per Python environment."""
    # crc32, not hashlib: zlib is loaded already, hashlib costs `stoq --help` about 3 ms.
    environment = f"{zlib.crc32(sys.prefix.encode()):08x}"
    return os.path.join(home, "cache", f"entry-points-{environment}.json")


_index_named = False


def entry_point_reader() -> ModuleType:
    """``stoq_core._index`` reading the home's entry-point index, as a scan reads it.

    Importing it costs only the standard library (the core's ``__init__`` imports its parts on
    first use), so ``stoq --help`` and ``stoq --version`` can read plugins the way a scan does
    without paying for the engine (60-120 ms).
    """
    global _index_named
    from stoq_core import _index

    if not _index_named:  # once: naming the file again would drop what was read from it
        home = home_path()
        # Only in a home made by ``StoqHome.prepare``: writing the index would create it with
        # the umask's modes, and a group-writable home has its v3 plugins refused.
        if os.path.isdir(home):
            _index.use_index_file(entry_point_index(home))
        _index_named = True
    return _index
