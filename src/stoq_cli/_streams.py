"""stdout belongs to results: where plugins' output, the results and the error lines go.

A plugin's ``print()``, a C extension's ``write(1, ...)`` and a plugin's child processes all
write to file descriptor 1, and a single stray line breaks the JSON a caller parses. So the
``stoq`` console script (``take_over``, once at start-up) moves the real stdout to a private
descriptor of its own, which children do not inherit, makes ``sys.stdout`` a stream on it, and
points descriptor 1 at stderr. Commands that run plugin code then point ``sys.stdout`` at
stderr too while they run (``results_stream``), and write their results to the stream it
yields.

It also makes closed standard descriptors harmless: a closed stderr becomes ``/dev/null``
(else Python's ``print(file=sys.stderr)`` falls back to stdout, and error lines would land among
the results); a closed stdout is remembered, so a command with nowhere to put its results can
say so before it scans; and no file the command opens can take descriptor 0, 1 or 2.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Optional, TextIO, cast

from stoq_cli._errors import CliError, OutputError

__all__ = [
    "ClosedOutput",
    "check_destination",
    "flush_results",
    "results_stream",
    "silence_results",
    "take_over",
]


class _ClosedBinary(io.BufferedIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


class ClosedOutput(io.TextIOBase):
    """Stands for a stdout that was closed when stoq started: every write fails with EBADF."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")

    def isatty(self) -> bool:
        return False

    @property
    def buffer(self) -> io.BufferedIOBase:
        """The binary side, which fails the same way (``stoq run --consumers`` writes bytes)."""
        return _ClosedBinary()


class _Streams:
    """What ``take_over`` did, for the commands and the error handler."""

    def __init__(self) -> None:
        #: the private descriptor of the real stdout; None when not taken over or closed
        self.results_fd: Optional[int] = None
        #: the stream on it (``sys.stdout`` but while plugins may run)
        self.results: Optional[TextIO] = None
        #: a stream on descriptor 1 (now stderr) for plugins' ``print()``
        self.plugin_stdout: Optional[TextIO] = None
        self.taken_over = False


_STREAMS = _Streams()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def take_over() -> None:
    """Give results a private descriptor and send everything else written to fd 1 to stderr.

    Only for the console script: it rearranges the process's descriptors for good, which a
    program that runs the command line in-process (tests with click's runner) must not see.
    """
    if _STREAMS.taken_over:
        return
    closed = [fd for fd in (0, 1, 2) if not _is_open(fd)]
    for fd in closed:
        # Fill the hole, or the next file opened (a log, a payload) would get this number.
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 2 in closed or sys.stderr is None:
        sys.stderr = _text_stream(2, "utf-8", "backslashreplace", line_buffering=True)
    original = sys.stdout
    results: TextIO
    if 1 in closed or original is None:
        results = cast(TextIO, ClosedOutput())  # typeshed's TextIO is not io.TextIOBase
    else:
        original.flush()
        _STREAMS.results_fd = os.dup(1)  # not inheritable: plugins' children never get it
        # Results are JSON, which is UTF-8 (RFC 8259) whatever the locale says: non-ASCII
        # text is written as itself, as v3 did.
        results = _text_stream(
            _STREAMS.results_fd,
            "utf-8",
            "strict",
            line_buffering=bool(original.line_buffering),
            closefd=True,
        )
    sys.stdout = _STREAMS.results = results
    os.dup2(2, 1)
    _STREAMS.plugin_stdout = _text_stream(
        1, sys.stderr.encoding or "utf-8", "backslashreplace", line_buffering=True
    )
    _STREAMS.taken_over = True


def detach_results() -> None:
    """In a process forked from ``stoq`` (a ``--jobs`` worker): point its copy of the results
    descriptor at /dev/null, without closing it (the stream on it may still hold what the
    parent had buffered when it forked, which the parent writes). Only the parent writes
    results: a plugin in the worker writing to that descriptor must never reach them."""
    fd = _STREAMS.results_fd
    if fd is None:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _text_stream(
    fd: int, encoding: str, errors: Optional[str], line_buffering: bool, closefd: bool = False
) -> TextIO:
    return io.TextIOWrapper(
        open(fd, "wb", closefd=closefd),  # buffered: a raw write to a pipe may be partial
        encoding=encoding,
        errors=errors,
        line_buffering=line_buffering,
    )


def check_destination(results: TextIO, connectors: Optional[Sequence[str]]) -> None:
    """Refuse to start when stdout was closed and no connector (``-C``) takes the results.

    :param results: the stream ``results_stream`` gave.
    :raises CliError: the results would have nowhere to go.
    """
    if isinstance(results, ClosedOutput) and not connectors:
        raise CliError(
            "stdout is closed, so the results would be lost: "
            "redirect it (> results.json) or save them with -C CONNECTOR"
        )


@contextlib.contextmanager
def results_stream() -> Iterator[TextIO]:
    """While plugin code may run: ``sys.stdout`` goes to stderr; yields where results go."""
    results = sys.stdout
    sys.stdout = _STREAMS.plugin_stdout or sys.stderr
    try:
        yield results
    finally:
        # In the console script, a plugin's abandoned thread may print until the process
        # exits: it must never reach the results, so stdout stays pointed at stderr.
        if not _STREAMS.taken_over:
            sys.stdout = results


def flush_results() -> None:
    """Write out what the results stream still holds, before the exit does it silently.

    :raises BrokenPipeError: stdout's reader went away.
    :raises OutputError: stdout failed otherwise (a full disk).
    """
    stream = _STREAMS.results if _STREAMS.taken_over else sys.stdout
    try:
        if stream is not None:
            stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from exc
    except ValueError:  # closed: nothing is left to write
        pass


def silence_results() -> None:
    """Send whatever is left unwritten in the results stream to ``/dev/null``.

    After stdout failed (its reader left, the disk is full), the flush at exit would fail
    again and print "Exception ignored" on stderr.
    """
    fd = _STREAMS.results_fd
    try:
        if fd is None:
            fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
