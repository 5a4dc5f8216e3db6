"""``stoq scan``: scan files, directories or stdin, a request per file; print the responses."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional, TextIO

from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError
from stoq_cli._home import EngineOptions, StoqHome, build_stoq, check_workers
from stoq_cli._inputs import Input, collect, read_stdin
from stoq_cli._output import ResponsePrinter
from stoq_cli._streams import check_destination, results_stream

if TYPE_CHECKING:
    from rich.progress import Progress

    from stoq_core import Stoq, StoqResponse

__all__ = ["scan_command"]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Stderr:
    """Warnings on stderr, above the progress bar while one is shown."""

    def __init__(self) -> None:
        self.progress: Optional[Progress] = None

    def warn(self, message: str) -> None:
        if self.progress is not None:
            from rich.text import Text

            self.progress.console.print(Text(f"stoq: {message}"))
        else:
            print(f"stoq: {message}", file=sys.stderr, flush=True)


def scan_command(
    files: Sequence[str],
    options: EngineOptions,
    fmt: str,
    compact: bool,
    allow_empty: bool,
) -> int:
    """Run ``stoq scan``; returns the exit code."""
    with results_stream() as out:
        return _scan_command(files, options, fmt, compact, allow_empty, out)


def _scan_command(
    files: Sequence[str],
    options: EngineOptions,
    fmt: str,
    compact: bool,
    allow_empty: bool,
    out: TextIO,
) -> int:
    check_destination(out, options.connectors)
    home = StoqHome.from_environment()
    stderr = _Stderr()
    inputs = collect(files, allow_empty, stderr.warn)
    if not inputs.items:
        if inputs.problems:
            return EXIT_FAILED
        raise CliError(f"nothing to scan: no file under {', '.join(files)}")
    stoq = build_stoq(home, options)
    check_workers(stoq, options.start_dispatch or (), "-s/--start-dispatch")
    inputs.items = read_stdin(
        inputs.items,
        allow_empty,
        stdin_is_terminal=_isatty(sys.stdin),
        limit=stoq.max_payload_size,
    )
    printer = ResponsePrinter(
        fmt, single=inputs.single, compact=compact, connectors=options.connectors, stream=out
    )
    # A bar only when the results go elsewhere: on one terminal the two would garble each other.
    show_bar = len(inputs.items) > 1 and _isatty(sys.stderr) and not _isatty(out)
    with _progress(stderr, len(inputs.items), show_bar) as advance:
        failed = asyncio.run(_scan_all(stoq, inputs.items, options, printer, stderr, advance))
    return EXIT_FAILED if failed or inputs.problems else EXIT_OK


@contextlib.contextmanager
def _progress(stderr: _Stderr, total: int, show: bool) -> Iterator[Any]:
    """Yields ``advance(label)``; draws a rich progress bar on stderr when ``show``."""
    if not show:
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}", markup=False),
        console=Console(stderr=True),
        redirect_stdout=False,  # stdout carries the results, never the bar
        redirect_stderr=False,
    )
    task = progress.add_task("scan", total=total, label="")

    def advance(label: str) -> None:
        progress.update(task, advance=1, label=label)

    with progress:
        stderr.progress = progress
        try:
            yield advance
        finally:
            stderr.progress = None


async def _scan_all(
    stoq: Stoq,
    inputs: list[Input],
    options: EngineOptions,
    printer: ResponsePrinter,
    stderr: _Stderr,
    advance: Any,
) -> bool:
    """Scan each input in turn and print its response; returns whether anything failed."""
    from stoq_core import PayloadMeta

    failed = False
    limit = stoq.max_payload_size
    for item in inputs:
        try:
            content = item.read(limit)
        except OSError as exc:
            stderr.warn(f"skipping {item.label}: {exc.strerror or exc}")
            failed = True
            advance(item.label)
            continue
        if len(content) > limit:
            response = await _too_big(stoq, item, options)
        else:
            response = await stoq.scan(
                content,
                payload_meta=PayloadMeta(extra_data=item.extra_data()),
                request_meta=options.request_meta(),
                add_start_dispatch=options.start_dispatch,
            )
        printer.emit(response, item.label)
        failed = failed or bool(response.errors)
        advance(item.label)
    return failed


async def _too_big(stoq: Stoq, item: Input, options: EngineOptions) -> StoqResponse:
    """The response for an input over ``max_payload_size``: no payload, an Error naming both.

    It still goes through the engine, so decorators and connectors see it like any other.
    """
    from stoq_core import Error, Request

    limit = stoq.max_payload_size
    error = Error(
        f"{item.label} is larger than max_payload_size ({limit} bytes): not scanned "
        "(raise [core] max_payload_size in stoq.cfg to scan it)"
    )
    request = Request([], options.request_meta(), errors=[error])
    return await stoq.scan_request(request)
