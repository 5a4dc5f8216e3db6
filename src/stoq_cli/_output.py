"""What goes to stdout: responses as JSON, JSON lines or a table, and the plugin listing.

Only results go to stdout; everything else (progress, warnings, errors) goes to stderr. rich is
imported only by the table views, so a JSON scan never pays for it. The commands pass the
stream ``_streams.results_stream`` gives them: while plugins run, ``sys.stdout`` is stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, TextIO

from stoq_cli._errors import OutputError

if TYPE_CHECKING:
    from rich.console import Console

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
        response), ``jsonl`` (one line per payload) or ``summary`` (tables).
    :param single: the command scans one payload, so ``json`` may be indented.
    :param connectors: the ``-C`` connectors; with any, only responses a connector failed to
        save are printed, so no result is lost.
    :param write: where a line goes (a progress display may need to clear itself first).
    :param stream: where results go [default: ``sys.stdout``].
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
    ) -> None:
        self.fmt = fmt
        self.indent = single and not compact
        self.connectors = list(connectors or ())
        self.stream = stream
        self._write = write
        self._console: Optional[Console] = None

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def write(self, text: str) -> None:
        if self._write is not None:
            self._write(text)
        else:
            out = self._out()
            out.write(text + "\n")
            out.flush()

    def emit(self, response: StoqResponse, label: Optional[str] = None) -> None:
        """Print ``response`` unless connectors took it.

        :raises BrokenPipeError: stdout's reader went away (``stoq scan DIR | head``).
        :raises OutputError: stdout failed otherwise: the scan ran, its result is not written.
        """
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
        elif self.fmt == "summary":
            self._summary(response, label)
        else:
            from stoq_core.helpers import dumps

            self.write(dumps(response.to_dict(), indent=4 if self.indent else None))

    def _summary(self, response: StoqResponse, label: Optional[str]) -> None:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self._out(), highlight=False)
        for renderable in summary_tables(response, label):
            self._console.print(renderable)


def summary_tables(response: StoqResponse, label: Optional[str] = None) -> list[Any]:
    """rich renderables: a table of the payloads and their workers, then one of the errors."""
    from rich.table import Table
    from rich.text import Text

    results = response.results
    by_id = {result.payload_id: result for result in results}
    failed: dict[str, set[str]] = {}
    for error in response.errors:
        payload_id = getattr(error, "payload_id", None)
        plugin = getattr(error, "plugin_name", None)
        if payload_id and plugin:
            failed.setdefault(payload_id, set()).add(plugin)

    heading = Text(label or "scan", style="bold")
    heading.append(f"  scan {response.scan_id}", style="dim")
    extracted = any(result.extracted_by for result in results)
    archived = any(result.plugins_run.get("archivers") for result in results)
    table = Table(expand=False)
    table.add_column("payload", overflow="fold")
    table.add_column("size", justify="right")
    if extracted:
        table.add_column("extracted by")
    table.add_column("workers", overflow="fold")
    if archived:
        table.add_column("archivers")
    for result in results:
        depth = _depth(result.payload_id, by_id)
        name = result.payload_meta.extra_data.get("filename") or result.payload_id[:8]
        workers = Text()
        for index, worker in enumerate(result.plugins_run.get("workers", [])):
            if index:
                workers.append(", ")
            broken = worker in failed.get(result.payload_id, ())
            workers.append(worker + (" \u2717" if broken else ""), style="red" if broken else "")
        row: list[Any] = [Text("  " * depth + ("\u21b3 " if depth else "") + str(name))]
        row.append(f"{result.size:,}")
        if extracted:
            row.append(Text(", ".join(result.extracted_by)))
        row.append(workers)
        if archived:
            row.append(Text(", ".join(result.plugins_run.get("archivers", []))))
        table.add_row(*row)
    renderables: list[Any] = [heading, table]
    if response.decorators:
        renderables.append(Text("decorators: " + ", ".join(response.decorators), style="dim"))
    if response.errors:
        count = len(response.errors)
        renderables.append(Text(f"{count} error{'s' if count > 1 else ''}", style="bold red"))
        errors = Table(expand=False)
        errors.add_column("plugin")
        errors.add_column("payload")
        errors.add_column("error", overflow="fold")
        for error in response.errors:
            payload_id = getattr(error, "payload_id", None)
            owner = by_id.get(payload_id or "")
            where = ""
            if owner is not None:
                where = owner.payload_meta.extra_data.get("filename") or owner.payload_id[:8]
            errors.add_row(
                Text(str(getattr(error, "plugin_name", None) or "-")),
                Text(str(where)),
                Text(str(getattr(error, "error", error))),
            )
        renderables.append(errors)
    else:
        renderables.append(Text("no errors", style="green"))
    return renderables


def _depth(payload_id: str, by_id: Mapping[str, Any]) -> int:
    depth, seen = 0, {payload_id}
    current = by_id.get(payload_id)
    while current is not None and current.extracted_from:
        parent = current.extracted_from[0]
        if parent in seen:
            break
        seen.add(parent)
        depth += 1
        current = by_id.get(parent)
    return depth


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
