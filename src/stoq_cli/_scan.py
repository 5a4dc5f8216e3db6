"""``stoq scan``: scan files, directories or stdin, a request per file; print the responses."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional, TextIO

from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError
from stoq_cli._home import EngineOptions, StoqHome, build_stoq, check_workers
from stoq_cli._inputs import Input, Inputs, Skipped, collect, read_stdin
from stoq_cli._output import ResponsePrinter
from stoq_cli._streams import check_destination, results_stream
from stoq_core._printable import printable

if TYPE_CHECKING:
    from rich.progress import Progress

    from stoq_cli._jobs import FileScan
    from stoq_core import PluginTiming, Stoq, StoqResponse

__all__ = ["Tally", "scan_command", "scan_one"]


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

            self.progress.console.print(Text(f"stoq: {printable(message)}"))
        else:
            print(f"stoq: {printable(message)}", file=sys.stderr, flush=True)

    def lines(self, lines: Sequence[str]) -> None:
        """Print ``lines`` as they are (a table), above the progress bar if one is shown."""
        if self.progress is not None:
            from rich.text import Text

            for line in lines:
                self.progress.console.print(Text(line))
        else:
            print("\n".join(lines), file=sys.stderr, flush=True)


def scan_command(
    files: Sequence[str],
    options: EngineOptions,
    fmt: Optional[str],
    compact: bool,
    allow_empty: bool,
    jobs: int = 1,
) -> int:
    """Run ``stoq scan``; returns the exit code.

    :param fmt: ``--format``; None (not given): ``summary`` when stdout is a terminal, where
        a person reads it, else ``json``, as in v3, for every pipe and file.
    :param jobs: worker processes to scan many files in (``_jobs``); 1: this process.
    """
    with results_stream() as out:
        return _scan_command(files, options, fmt, compact, allow_empty, out, jobs)


def _scan_command(
    files: Sequence[str],
    options: EngineOptions,
    fmt: Optional[str],
    compact: bool,
    allow_empty: bool,
    out: TextIO,
    jobs: int = 1,
) -> int:
    chosen = fmt is not None
    if fmt is None:
        fmt = "summary" if _isatty(out) and not compact else "json"
    check_destination(out, options.connectors)
    home = StoqHome.from_environment()
    stderr = _Stderr()
    workers: Optional[FileScan] = None
    if jobs > 1 and len(files) > 1 and "-" in files:
        raise CliError(
            "--jobs shares files out to worker processes, and stdin ('-') cannot be shared: "
            "scan stdin without --jobs, or save it to a file first"
        )
    if jobs > 1 and (len(files) > 1 or any(os.path.isdir(name) for name in files)):
        if options.timings:
            # This process's engine, whose timings are shown, scans nothing with --jobs.
            raise CliError("--timings cannot be combined with --jobs: scan in one process")
        from stoq_cli._jobs import FileScan

        # Started first: they start up while this process checks the inputs and loads its
        # own engine (which checks the options once, with the usual messages).
        workers = FileScan(options, jobs, allow_empty)
    try:
        inputs = collect(files, allow_empty, stderr.warn)
        walk = iter(inputs)
        first = next(walk, None)
        if first is None:
            if inputs.problems:
                return EXIT_FAILED
            raise _nothing_to_scan(files)
        items: Iterable[Input] = itertools.chain((first,), walk)
        # A bar only when the results go elsewhere: on one terminal the two would garble each
        # other. It needs the total: the walk is done first (a person is watching it).
        total = 0
        if not inputs.single and _isatty(sys.stderr) and not _isatty(out):
            items = list(items)
            total = len(items)
        if workers is not None:
            workers.share(items)  # the first files: the workers scan while this process loads
        return _scan_inputs(
            inputs, items, total, files, options, fmt, chosen, compact, allow_empty, out, home,
            stderr, workers,
        )  # fmt: skip
    finally:
        if workers is not None:
            workers.abort()  # after a failure or Ctrl-C; they have exited otherwise


def _nothing_to_scan(files: Sequence[str]) -> CliError:
    return CliError(f"nothing to scan: no file under {', '.join(files)}")


def _scan_inputs(
    inputs: Inputs,
    items: Iterable[Input],
    total: int,
    files: Sequence[str],
    options: EngineOptions,
    fmt: str,
    chosen: bool,
    compact: bool,
    allow_empty: bool,
    out: TextIO,
    home: StoqHome,
    stderr: _Stderr,
    workers: Optional[FileScan],
) -> int:
    stoq = build_stoq(home, options)
    check_workers(stoq, options.start_dispatch or (), "-s/--start-dispatch")
    read_stdin(
        inputs,
        allow_empty,
        stdin_is_terminal=_isatty(sys.stdin),
        limit=stoq.max_payload_size,
    )
    printer = ResponsePrinter(
        fmt,
        single=inputs.single,
        compact=compact,
        connectors=options.connectors,
        stream=out,
        hint=not chosen,
    )
    tally = Tally()
    with _progress(stderr, total, total > 1) as advance:
        if workers is not None:
            workers.scan(stoq, printer, tally, stderr.warn, advance)
        else:
            asyncio.run(
                _scan_all(stoq, items, options, allow_empty, printer, stderr, advance, tally)
            )
    if not tally.answered and not tally.failed and not inputs.problems:
        raise _nothing_to_scan(files)  # every file under the directories was empty
    printer.finish()
    if tally.scanned and not tally.worked and stoq.log.isEnabledFor(logging.WARNING):
        # v3 printed '"workers": {}' and nothing else, and left a newcomer guessing (#15).
        stderr.warn(
            "no worker ran on any payload: choose workers with -s NAME (or -a NAME to scan "
            "extracted payloads too) or a dispatcher with -R NAME; 'stoq list' shows the "
            "installed plugins"
        )
    return EXIT_FAILED if tally.failed or inputs.problems else EXIT_OK


class Tally:
    """What the scans of one command came to."""

    __slots__ = ("answered", "failed", "scanned", "worked")

    def __init__(self) -> None:
        self.answered = False  #: a response was made (a file was not only skipped)
        self.failed = False  #: an input could not be read, or a response holds errors
        self.scanned = False  #: a payload was scanned
        self.worked = False  #: a worker ran on a payload


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
        progress.update(task, advance=1, label=printable(label))

    with progress:
        stderr.progress = progress
        try:
            yield advance
        finally:
            stderr.progress = None


async def _scan_all(
    stoq: Stoq,
    inputs: Iterable[Input],
    options: EngineOptions,
    allow_empty: bool,
    printer: ResponsePrinter,
    stderr: _Stderr,
    advance: Any,
    tally: Tally,
) -> None:
    """Scan each input in turn, print its response and add it to ``tally``."""
    for item in inputs:
        try:
            response = await scan_one(stoq, item, options, allow_empty)
        except Skipped as exc:
            stderr.warn(f"skipping {item.label}: {exc.reason}")
            tally.failed = tally.failed or exc.failed
            advance(item.label)
            continue
        except OSError as exc:
            stderr.warn(f"skipping {item.label}: {exc.strerror or exc}")
            tally.failed = True
            advance(item.label)
            continue
        tally.answered = True
        printer.emit(response, item.label)
        if options.timings:
            stderr.lines(timings_lines(item.label, response, stoq.plugin_timings(response)))
        if response.errors:
            tally.failed = True
        if response.results:
            tally.scanned = True
            if not tally.worked:
                tally.worked = any(r.plugins_run.get("workers") for r in response.results)
        advance(item.label)


async def scan_one(
    stoq: Stoq, item: Input, options: EngineOptions, allow_empty: bool = True
) -> StoqResponse:
    """Read ``item`` and scan it as one request (in this process or a ``--jobs`` worker).

    :raises Skipped: it is not to be scanned after all (``Input.read``).
    :raises OSError: it cannot be read.
    """
    from stoq_core import PayloadMeta

    limit = stoq.max_payload_size
    content = item.read(limit, allow_empty)
    if len(content) > limit:
        return await _too_big(stoq, item, options)
    return await stoq.scan(
        content,
        payload_meta=PayloadMeta(extra_data=item.extra_data()),
        request_meta=options.request_meta(),
        add_start_dispatch=options.start_dispatch,
    )


def timings_lines(label: str, response: StoqResponse, timings: Sequence[PluginTiming]) -> list[str]:
    """``--timings``: each plugin call of a response's scan, then each plugin's total."""
    names = {
        result.payload_id: result.payload_meta.extra_data.get("filename")
        for result in response.results
    }
    total = sum(timing.seconds for timing in timings)
    lines = [
        f"stoq: timings of {printable(label)}: {len(timings)} plugin call(s), {total * 1000:.2f} ms"
    ]
    if not timings:
        return lines
    width = max(len(timing.plugin) for timing in timings)
    hooks = max(len("total"), *(len(timing.hook) for timing in timings))
    per_plugin: dict[str, list[float]] = {}
    for timing in timings:
        per_plugin.setdefault(timing.plugin, []).append(timing.seconds)
        if timing.payload_id is None:
            about = "(the response)"
        else:
            name = names.get(timing.payload_id)
            about = timing.payload_id[:8] + (f" {printable(name)}" if isinstance(name, str) else "")
        ended = "" if timing.outcome == "ok" else f"  {printable(timing.outcome)}"
        lines.append(
            f"  {timing.plugin:<{width}}  {timing.hook:<{hooks}}  {timing.seconds * 1000:9.2f} ms"
            f"  {about}{ended}"
        )
    for plugin, spent in sorted(per_plugin.items(), key=lambda item: -sum(item[1])):
        lines.append(
            f"  {plugin:<{width}}  {'total':<{hooks}}  {sum(spent) * 1000:9.2f} ms"
            f"  {len(spent)} call(s)"
        )
    return lines


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
