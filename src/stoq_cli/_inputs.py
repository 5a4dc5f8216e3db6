"""What ``stoq scan`` reads: files, the files under directories, or stdin.

Files named on the command line are checked before anything is scanned, and a bad one stops the
command (exit 2): missing, unreadable, not a regular file, or empty without ``--allow-empty``.
Under a directory, stoQ cannot expect every entry to be scannable, so a bad entry is reported on
stderr and skipped: an unreadable one counts as a failure (exit 1), an empty file or a FIFO is
only noted.

No input is read past ``max_payload_size`` (plus one byte, to know it was exceeded): a larger
one is not scanned, and its response holds an Error naming the limit (``stoq scan - <
/dev/zero`` once grew until the kernel killed it).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from stoq_cli._errors import CliError

__all__ = ["Input", "Inputs", "collect", "read_stdin"]

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


@dataclasses.dataclass(frozen=True)
class Input:
    """One payload to scan: a file, or stdin when ``path`` is ``None``."""

    path: Optional[Path]
    walked: bool = False  #: found under a directory named on the command line
    #: stdin's bytes, once ``read_stdin`` has read them
    content: Optional[bytes] = dataclasses.field(default=None, repr=False)

    @property
    def label(self) -> str:
        return "stdin" if self.path is None else str(self.path)

    def extra_data(self) -> dict[str, Any]:
        """The payload's ``extra_data``: the file's base name; walked files add their directory."""
        if self.path is None:
            return {}
        extra: dict[str, Any] = {"filename": self.path.name}
        if self.walked:
            extra["source_dir"] = str(self.path.parent.absolute())
        return extra

    def read(self, limit: int) -> bytes:
        """The payload's bytes, at most ``limit + 1`` of them: more than ``limit`` means too big."""
        if self.path is None:
            return self.content or b""
        with self.path.open("rb") as file:
            # Asking for limit + 1 bytes at once allocates that much (256 MiB by default) for
            # every small file; the file's size is the right first guess.
            size = os.fstat(file.fileno()).st_size
            content = file.read(min(size, limit) + 1)
            if len(content) <= size or len(content) > limit:
                return content
            return content + file.read(limit + 1 - len(content))  # it grew as it was read


def read_stdin(
    inputs: list[Input], allow_empty: bool, stdin_is_terminal: bool, limit: int
) -> list[Input]:
    """``inputs`` with stdin's bytes read in, once the plugins are known to be good.

    Reading waits until then so that a mistyped plugin name is the error reported, not an
    empty stdin.

    :param limit: ``max_payload_size``: at most one byte more is read.
    :raises CliError: stdin is a terminal (nothing piped in), or empty without ``allow_empty``.
    """
    done = []
    for item in inputs:
        if item.path is None and item.content is None:
            if stdin_is_terminal:
                raise CliError(
                    "no FILE given: name files or directories to scan, "
                    "or pipe data to 'stoq scan -'"
                )
            content = _read_stdin(limit + 1)
            if not content and not allow_empty:
                raise CliError("stdin is empty (use --allow-empty to scan it anyway)")
            item = dataclasses.replace(item, content=content)
        done.append(item)
    return done


@dataclasses.dataclass
class Inputs:
    """The payloads of one ``stoq scan``."""

    items: list[Input]
    #: one file or stdin was named: print one response (not JSON lines)
    single: bool
    #: entries under a directory that could not be read (already reported)
    problems: int = 0


def collect(args: Sequence[str], allow_empty: bool, warn: Callable[[str], None]) -> Inputs:
    """The inputs ``args`` name, in order; ``[]`` means stdin (see ``read_stdin``).

    :raises CliError: a named file is missing, unreadable, not a file or directory, or empty.
    """
    args = list(args) or ["-"]
    if args.count("-") > 1:
        raise CliError("- (stdin) is named more than once")
    inputs = Inputs(items=[], single=len(args) == 1)
    for arg in args:
        if arg == "-":
            inputs.items.append(Input(None))  # read by read_stdin
            continue
        path = Path(arg)
        info = _stat(path)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            inputs.single = False
            inputs.problems += _walk(path, allow_empty, warn, inputs.items)
            continue
        if not stat.S_ISREG(mode):
            hint = "; pipe it to 'stoq scan -' instead" if stat.S_ISFIFO(mode) else ""
            raise CliError(f"{path} is {_KINDS.get(stat.S_IFMT(mode), 'not a file')}{hint}")
        _check_readable(path)
        if not allow_empty and info.st_size == 0:
            raise CliError(f"{path} is empty (use --allow-empty to scan it anyway)")
        inputs.items.append(Input(path))
    return inputs


def _read_stdin(size: int) -> bytes:
    stream = sys.stdin
    if stream is None:
        raise CliError("stdin is closed: nothing to read for -")
    try:
        return stream.buffer.read(size)
    except OSError as exc:
        raise CliError(f"cannot read stdin: {exc.strerror or exc}") from None


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _walk(top: Path, allow_empty: bool, warn: Callable[[str], None], found: list[Input]) -> int:
    """Add every scannable file under ``top`` to ``found``, sorted; return how many failed."""
    problems = 0

    def unreadable(exc: OSError) -> None:
        nonlocal problems
        problems += 1
        warn(f"skipping {exc.filename}: {exc.strerror or exc}")

    # Symlinked directories are not followed (no loops); symlinked files are scanned.
    for directory, dirnames, filenames in os.walk(top, onerror=unreadable):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(directory, filename)
            try:
                info = path.stat()
            except OSError as exc:
                problems += 1
                warn(f"skipping {path}: {exc.strerror or exc}")
                continue
            if not stat.S_ISREG(info.st_mode):
                warn(f"skipping {path}: {_KINDS.get(stat.S_IFMT(info.st_mode), 'not a file')}")
            elif info.st_size == 0 and not allow_empty:
                warn(f"skipping {path}: empty (--allow-empty scans it)")
            else:
                found.append(Input(path, walked=True))
    return problems
