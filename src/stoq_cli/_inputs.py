"""What ``stoq scan`` reads: files, the files under directories, or stdin.

Files named on the command line are checked before anything is scanned, and a bad one stops the
command (exit 2): missing, unreadable, not a regular file, or empty without ``--allow-empty``.
Under a directory, stoQ cannot expect every entry to be scannable, so a bad entry is reported on
stderr and skipped: an unreadable one counts as a failure (exit 1), an empty file or a FIFO is
only noted.

Directories are walked as the scan goes, not before it: the first file is scanned (or sent to a
``--jobs`` worker) while the rest of the tree is still unread, and a tree of millions of files
costs no list of millions. The walk looks at each entry's type from the directory listing
(``os.scandir``) and nothing more; whether a file is empty is learnt when it is opened to be
read, which also checks, on the open descriptor, that it is still a regular file (a file swapped
for a FIFO between the walk and the read is skipped, not waited on forever).

No input is read past ``max_payload_size`` (plus one byte, to know it was exceeded): a larger
one is not scanned, and its response holds an Error naming the limit (``stoq scan - <
/dev/zero`` once grew until the kernel killed it).
"""

from __future__ import annotations

import os
import select
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

from stoq_cli._errors import CliError

__all__ = ["Input", "Inputs", "Skipped", "collect", "read_stdin"]

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}
_EMPTY = "empty (--allow-empty scans it)"
#: Never blocks on a FIFO or a device swapped in for a file (the type is checked once open).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20  #: read size once a file turns out larger than it was when opened


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a file")


class Skipped(Exception):
    """An input that turned out not to be scannable when opened: ``reason`` says why.

    :param failed: it counts as a failure (exit 1); otherwise it is only noted (an empty file
        or a FIFO under a directory).
    """

    def __init__(self, reason: str, failed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failed = failed


class Input:
    """One payload to scan: a file, or stdin when ``path`` is ``None``."""

    __slots__ = ("content", "path", "source_dir")

    def __init__(
        self,
        path: Optional[str],
        source_dir: Optional[str] = None,
        content: Optional[bytes] = None,
    ) -> None:
        self.path = path  #: as named, or as found under a directory; the label printed
        #: the absolute directory a walked file was found in (``None``: named, or stdin)
        self.source_dir = source_dir
        self.content = content  #: stdin's bytes, once ``read_stdin`` has read them

    def __repr__(self) -> str:
        return f"Input({self.path!r}, source_dir={self.source_dir!r})"

    @property
    def walked(self) -> bool:
        """Found under a directory named on the command line."""
        return self.source_dir is not None

    @property
    def label(self) -> str:
        return "stdin" if self.path is None else self.path

    def extra_data(self) -> dict[str, Any]:
        """The payload's ``extra_data``: the file's base name; walked files add their directory."""
        if self.path is None:
            return {}
        extra: dict[str, Any] = {"filename": os.path.basename(self.path)}
        if self.source_dir is not None:
            extra["source_dir"] = self.source_dir
        return extra

    def read(self, limit: int, allow_empty: bool = True) -> bytes:
        """The payload's bytes, at most ``limit + 1`` of them: more than ``limit`` means too big.

        :raises Skipped: a walked file is empty (without ``allow_empty``), or the path is no
            longer a regular file.
        :raises OSError: it cannot be opened or read.
        """
        if self.path is None:
            return self.content or b""
        fd = os.open(self.path, _OPEN_FLAGS)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Skipped(_kind(info.st_mode), failed=not self.walked)
            if info.st_size == 0 and self.walked and not allow_empty:
                raise Skipped(_EMPTY, failed=False)
            return _read_fd(fd, info.st_size, limit)
        finally:
            os.close(fd)


def _read_fd(fd: int, size: int, limit: int) -> bytes:
    # The file's size is the first guess: asking for limit + 1 bytes at once would allocate
    # that much (256 MiB by default) for every small file. A file that grew is read on, up to
    # one byte past the limit.
    cap = limit + 1
    ask = min(size, limit) + 1
    first = os.read(fd, ask)
    if len(first) < ask or len(first) >= cap:
        return first
    chunks = [first]
    total = len(first)
    while total < cap:
        chunk = os.read(fd, min(_CHUNK, cap - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_stdin(inputs: Inputs, allow_empty: bool, stdin_is_terminal: bool, limit: int) -> None:
    """Read stdin's bytes into its ``Input``, if it is named, once the plugins are known to be
    good.

    Reading waits until then so that a mistyped plugin name is the error reported, not an
    empty stdin.

    :param limit: ``max_payload_size``: at most one byte more is read.
    :raises CliError: stdin is a terminal (nothing piped in), or empty without ``allow_empty``.
    """
    for item in inputs.named:
        if isinstance(item, Input) and item.path is None and item.content is None:
            if stdin_is_terminal:
                raise CliError(
                    "no FILE given: name files or directories to scan, "
                    "or pipe data to 'stoq scan -'"
                )
            content = _read_stdin(limit + 1)
            if not content and not allow_empty:
                raise CliError("stdin is empty (use --allow-empty to scan it anyway)")
            item.content = content


class Inputs:
    """The payloads of one ``stoq scan``, in order: iterating walks the directories lazily."""

    def __init__(self, named: list[Input | str], single: bool, warn: Callable[[str], None]) -> None:
        #: named files (and stdin) as ``Input``, named directories as ``str``, in order
        self.named = named
        #: one file or stdin was named: print one response (not JSON lines)
        self.single = single
        #: entries under a directory that could not be looked at (already reported)
        self.problems = 0
        self._warn = warn

    def __iter__(self) -> Iterator[Input]:
        for entry in self.named:
            if isinstance(entry, Input):
                yield entry
            else:
                yield from self._walk(entry)

    def _unreadable(self, path: str, exc: OSError) -> None:
        self.problems += 1
        self._warn(f"skipping {path}: {exc.strerror or exc}")

    def _walk(self, top: str) -> Iterator[Input]:
        """Every regular file under ``top``: a directory's files in name order, then each of
        its subdirectories in name order (``os.walk``'s order). Symlinked directories are not
        followed (no loops); symlinked files are scanned.

        A stack rather than recursion: a tree thousands of directories deep is walked, not a
        RecursionError.
        """
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=_name)
            except OSError as exc:
                self._unreadable(directory, exc)
                continue
            # Path.absolute(), as the payload's source_dir has always been written (no
            # resolving of '..' or links); once per directory, not per file.
            source_dir = str(Path(directory).absolute())
            subdirectories = []
            for entry in entries:
                try:
                    # From the listing's d_type: no system call unless it is a symlink.
                    if entry.is_file():
                        yield Input(entry.path, source_dir)
                        continue
                    if entry.is_dir():
                        if not entry.is_symlink():
                            subdirectories.append(entry.path)
                        continue
                    mode = entry.stat().st_mode  # a dangling symlink raises here
                except OSError as exc:
                    self._unreadable(entry.path, exc)
                    continue
                self._warn(f"skipping {entry.path}: {_kind(mode)}")
            stack.extend(reversed(subdirectories))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def collect(args: Sequence[str], allow_empty: bool, warn: Callable[[str], None]) -> Inputs:
    """The inputs ``args`` name, in order; ``[]`` means stdin (see ``read_stdin``).

    Named files are checked now; directories are walked when the result is iterated.

    :raises CliError: a named file is missing, unreadable, not a file or directory, or empty;
        or an argument is empty.
    """
    args = list(args) or ["-"]
    if args.count("-") > 1:
        raise CliError("- (stdin) is named more than once")
    named: list[Input | str] = []
    single = len(args) == 1
    for arg in args:
        if arg == "-":
            named.append(Input(None))  # read by read_stdin
            continue
        if not arg:
            # pathlib reads '' as '.': 'stoq scan "$FILE"' with FILE unset scanned the
            # working directory, every file in it, where cat and ls say there is no such file.
            raise CliError("'' is not a file name (an unset shell variable?): name a file")
        path = Path(arg)
        info = _stat(path)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            single = False
            # Normalised as pathlib writes it ('./d/' -> 'd'), so that every label under it is
            # what str(Path(...)) gives: labels stay as they were before the walk was lazy.
            named.append(str(path))
            continue
        if not stat.S_ISREG(mode):
            hint = "; pipe it to 'stoq scan -' instead" if stat.S_ISFIFO(mode) else ""
            raise CliError(f"{path} is {_kind(mode)}{hint}")
        _check_readable(path)
        if not allow_empty and info.st_size == 0:
            raise CliError(f"{path} is empty (use --allow-empty to scan it anyway)")
        named.append(Input(str(path)))
    return Inputs(named, single, warn)


def skip_reason(path: str, allow_empty: bool) -> Optional[str]:
    """Why a walked file is not to be scanned after all (empty, no longer a regular file), by
    ``stat``, for commands that list files rather than read them.

    :raises OSError: it cannot be looked at.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        return _kind(info.st_mode)
    if info.st_size == 0 and not allow_empty:
        return _EMPTY
    return None


def _read_stdin(size: int) -> bytes:
    """At most ``size`` bytes of stdin: all of it, up to its end.

    A stdin left non-blocking (``O_NONBLOCK`` is shared with whoever else holds the pipe or
    terminal, such as a parent that set it) gives only what has arrived so far, or nothing:
    one read scanned a truncated payload, or found stdin "empty". Read on, waiting for more,
    until the end.
    """
    stream = sys.stdin
    if stream is None:
        raise CliError("stdin is closed: nothing to read for -")
    buffer = stream.buffer
    chunks: list[bytes] = []
    total = 0
    try:
        while total < size:
            try:
                chunk = buffer.read(size - total)
            except BlockingIOError:
                chunk = None
            if chunk is None:  # non-blocking, and nothing has arrived yet
                select.select([buffer.fileno()], [], [])
                continue
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise CliError(f"cannot read stdin: {exc.strerror or exc}") from None
    return b"".join(chunks)


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None


def _check_readable(path: Path) -> None:
    # Not blocking: a file swapped for a FIFO since it was looked at would wait for a writer.
    try:
        os.close(os.open(path, _OPEN_FLAGS))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
