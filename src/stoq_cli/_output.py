"""What goes to stdout: responses as JSON, JSON lines or a summary, and the plugin listing.

Only results go to stdout; everything else (progress, warnings, errors) goes to stderr. rich is
imported only by the summary and the plugin table, so a JSON scan never pays for it. The
commands pass the stream ``_streams.results_stream`` gives them: while plugins run,
``sys.stdout`` is stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Optional, TextIO

from stoq_cli._errors import OutputError

if TYPE_CHECKING:
    from stoq_cli._summary import SummaryPrinter
    from stoq_core import PluginInfo, StoqResponse

__all__ = ["FORMATS", "ResponsePrinter", "connector_failed", "payload_lines", "print_plugins"]

FORMATS = ("json", "jsonl", "summary")


def connector_failed(response: StoqResponse, connectors: Sequence[str]) -> bool:
    """Whether one of ``connectors`` failed to save ``response``."""
    # The engine records a failed save as an Error of the connector, "save failed: ...".
    return any(
        error.plugin_name in connectors and str(error.error).startswith("save")
        for error in response.errors
        if hasattr(error, "plugin_name")
    )


def payload_lines(response: StoqResponse) -> Iterator[str]:
    """One compact JSON response per payload: ``results`` holds that payload only.

    ``request_meta``, ``errors``, ``time``, ``decorators`` and ``scan_id`` are the whole
    response's, as in ``StoqResponse.split()``. A response without payloads (an input over
    ``max_payload_size``) is one line with empty ``results``, so its errors are not lost.
    """
    from stoq_core.helpers import dumps

    whole = response.to_dict()
    results = whole.pop("results") or [None]
    for result in results:
        yield dumps({"results": [] if result is None else [result], **whole}, compactly=True)


class ResponsePrinter:
    """Prints responses to stdout in the chosen format.

    :param fmt: ``json`` (indented for one response unless ``compact``, else one line per
        response), ``jsonl`` (one line per payload) or ``summary`` (for a person: ``_summary``).
    :param single: the command scans one payload, so ``json`` may be indented.
    :param connectors: the ``-C`` connectors; with any, only responses a connector failed to
        save are printed, so no result is lost.
    :param write: where a line goes (a progress display may need to clear itself first).
    :param stream: where results go [default: ``sys.stdout``].
    :param hint: a one-input summary ends saying how to get the whole response (it was not
        asked for: it is the default on a terminal).
    :raises OutputError: from ``emit``, when the results cannot be written (a full disk...).
    """

    def __init__(
        self,
        fmt: str = "json",
        single: bool = False,
        compact: bool = False,
        connectors: Optional[Sequence[str]] = None,
        write: Optional[Callable[[str], None]] = None,
        stream: Optional[TextIO] = None,
        hint: bool = False,
    ) -> None:
        self.fmt = fmt
        self.indent = single and not compact
        self.connectors = list(connectors or ())
        self.stream = stream
        self._write = write
        self._summary: Optional[SummaryPrinter] = None
        if fmt == "summary":
            from stoq_cli._summary import SummaryPrinter

            self._summary = SummaryPrinter(self._out(), single, hint=hint)

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def write(self, text: str) -> None:
        if self._write is not None:
            self._write(text)
        else:
            out = self._out()
            out.write(text + "\n")
            out.flush()

    def write_bytes(self, lines: bytes) -> None:
        """Write ``lines``, UTF-8 JSON without the last newline, as ``write`` writes text: to
        the binary layer under the results stream when there is one (no decoding, no encoding
        again), after what the text layer holds."""
        buffer = getattr(self._out(), "buffer", None) if self._write is None else None
        if buffer is None:
            self.write(lines.decode("utf-8", "surrogateescape"))
            return
        out = self._out()
        out.flush()
        buffer.write(lines + b"\n")
        buffer.flush()

    def emit(self, response: StoqResponse, label: Optional[str] = None) -> None:
        """Print ``response`` unless connectors took it.

        :raises BrokenPipeError: stdout's reader went away (``stoq scan DIR | head``).
        :raises OutputError: stdout failed otherwise: the scan ran, its result is not written.
        """
        if self._summary is not None:
            self._summary.count(response)
        if self.connectors and not connector_failed(response, self.connectors):
            return
        try:
            self._emit(response, label)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc)) from exc

    def _emit(self, response: StoqResponse, label: Optional[str]) -> None:
        if self.fmt == "jsonl":
            for line in payload_lines(response):
                self.write(line)
        elif self._summary is not None:
            self._summary.print(response, label)
        else:
            # A response made in a --jobs worker process carries the JSON the worker wrote:
            # printed as it is, the response is not encoded a second time here.
            text = getattr(response, "json_text", None)
            if text is not None and not self.indent:
                self.write_bytes(text)
                return
            from stoq_core.helpers import dumps

            self.write(dumps(response.to_dict(), indent=4 if self.indent else None))

    def finish(self) -> None:
        """After the last response: a many-file summary's totals line.

        :raises OutputError: as ``emit``.
        """
        if self._summary is None or self._summary.single:
            return
        try:
            self._summary.totals()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc)) from exc


def print_plugins(
    infos: Mapping[str, PluginInfo], as_json: bool, out: Optional[TextIO] = None
) -> None:
    """``stoq list``: a table (or JSON), one row per plugin, broken ones with their error.

    :param out: where to print [default: ``sys.stdout``].
    """
    out = out or sys.stdout
    if as_json:
        from stoq_core.helpers import dumps

        out.write(dumps([info.to_dict() for info in infos.values()]) + "\n")
        return
    rows = [
        (
            info.name,
            info.version or "",
            info.origin,
            ",".join(info.hooks) or "-",
            f"error: {info.error}" if info.error else _description(info),
        )
        for info in infos.values()
    ]
    if not out.isatty():
        # For grep and awk: one line per plugin, aligned, never wrapped.
        header = ("name", "version", "from", "hooks", "description")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths)]
            out.write("  ".join([*cells, row[4]]).rstrip() + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False)
    if not infos:
        console.print("no plugins installed (see 'stoq install --help')")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("name", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("hooks")
    table.add_column("description", overflow="fold", ratio=1)
    for info, row in zip(infos.values(), rows):
        table.add_row(
            Text(row[0], style="red" if info.error else "bold"),
            Text(row[1]),
            Text(row[2]),
            Text(row[3].replace(",", ", ")),
            Text(row[4], style="red" if info.error else ""),
        )
    console.print(table)


def _description(info: PluginInfo) -> str:
    text = " ".join((info.description or "").split())
    if info.shadows:
        text += f" ({info.shadows})"
    return text
