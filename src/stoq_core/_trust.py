"""Who could have written a v3 plugin: ssh's rule for key files, applied to code we import.

A ``.stoq`` plugin runs as whoever runs stoQ, often root. v3 imported any it found; one written
by another user into a world-writable plugin directory replaced ``hash`` and ran as root without
a word (issue 12). ``Trust`` says why a plugin's directories or files could have been written by
someone other than us or root; the loader (``_legacy``) refuses such a plugin unless
``STOQ_ALLOW_UNSAFE_PLUGIN_DIRS`` is set. POSIX owners and modes only: ``Trust`` needs
``os.geteuid``.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

__all__ = ["ALLOW_UNSAFE_VARIABLE", "REMEDY", "Trust", "unsafe_allowed"]

#: Set to 1 to load plugins that another user could have written, as v3 did.
ALLOW_UNSAFE_VARIABLE = "STOQ_ALLOW_UNSAFE_PLUGIN_DIRS"

#: How to fix a refusal; it ends each refusal's message.
REMEDY = (
    "only you or root may own or write a plugin's files and directories (chown, chmod go-w), "
    f"or set {ALLOW_UNSAFE_VARIABLE}=1 to load it anyway"
)


def unsafe_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``STOQ_ALLOW_UNSAFE_PLUGIN_DIRS`` is set to ``1`` (or ``true``, ``yes``, ``on``)."""
    return environ.get(ALLOW_UNSAFE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


class Trust:
    """Whether only we or root could have written a plugin.

    A plugin's directories (the plugin directory and every one under it down to the ``.stoq``
    file), its ``.stoq`` file, its module and the module's cached bytecode must be owned by us
    or root and writable by neither group nor others. Every directory above them must be owned
    by us or root too, and may be writable by others only if sticky (``/tmp``): there, others
    cannot rename or replace what is ours. A sticky plugin directory is not enough, since others
    could still add plugins to it. Paths are checked as given and with their links resolved, so
    a link cannot lead around a check, and cannot be swapped after one by someone who may write
    the directory holding it.

    Each method returns why the path is not safe, in words naming the path, or ``None``.
    """

    def __init__(self) -> None:
        self.uid = os.geteuid()
        self._above: dict[str, Optional[str]] = {}

    def plugin_directory(self, path: str) -> Optional[str]:
        """Why the plugin directory ``path`` (or one under it) is not safe, or ``None``."""
        given = os.path.abspath(path)
        return self._directories_above(given) or self._path(os.path.realpath(given), strict=True)

    def plugin_files(self, stoq_file: Path, module_file: Path) -> Optional[str]:
        """Why a plugin's ``.stoq`` file or module is not safe, or ``None``.

        Their directory is the caller's to check (with ``plugin_directory``).
        """
        paths = [stoq_file, module_file]
        if module_file.suffix == ".py":
            # Python runs __pycache__'s bytecode instead of the source when it looks current.
            cached = Path(importlib.util.cache_from_source(str(module_file)))
            paths += [path for path in (cached.parent, cached) if os.path.lexists(path)]
        paths += _code_beside(module_file.parent)
        for path in paths:
            problem = self._path(os.path.realpath(path), strict=True)
            if problem is not None:
                return problem
        return None

    def _path(self, path: str, strict: bool) -> Optional[str]:
        return self._directories_above(path) or self._check(path, strict)

    def _directories_above(self, path: str) -> Optional[str]:
        parent = os.path.dirname(path)
        if parent == path:  # the root directory
            return None
        if parent not in self._above:
            self._above[parent] = self._path(parent, strict=False)
        return self._above[parent]

    def _check(self, path: str, strict: bool) -> Optional[str]:
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"cannot check who may write {path}: {exc.strerror}"
        if info.st_uid not in (self.uid, 0):
            return (
                f"{path} is owned by {_user(info.st_uid)}, not by you ({_user(self.uid)}) or root"
            )
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (strict or not info.st_mode & stat.S_ISVTX):
            who = {stat.S_IWGRP: "its group", stat.S_IWOTH: "others"}.get(
                writable, "its group and others"
            )
            return f"{path} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})"
        return None


_MAX_CODE_FILES = 2000  # a plugin folder is small; a huge one is not walked past this


def _code_beside(folder: Path) -> list[Path]:
    """The folders and Python files under a plugin module's folder: its helper modules, which
    it may import (``import util``), and their cached bytecode."""
    found: list[Path] = []
    for root, _dirs, files in os.walk(folder):
        found.append(Path(root))
        found += [Path(root, name) for name in files if name.endswith((".py", ".pyc"))]
        if len(found) > _MAX_CODE_FILES:
            break
    return found


def _user(uid: int) -> str:
    try:
        import pwd  # POSIX only, as is every check that names a user

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
