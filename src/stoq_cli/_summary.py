"""``--format summary``: what a person reads: each payload's findings, or one line per file.

A finding is what one worker's results say, in a few words. The CLI names no plugin: it knows
the shapes results take. A ``sha256`` digest (the hash worker's, or any worker's) is shown as
that digest alone; a list of ``matches`` that carry a ``rule`` (yara's) as the rule names; any
other results as their first keys and values, cut short. Errors are shown whole.

One input gets the full view: each payload, what extracted it, and every worker's finding. Many
inputs (a directory, several files) get one line per file as it is scanned, then a totals line,
so 2,000 files print 2,001 lines. rich is imported here only, for colour on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, TextIO

from stoq_core._printable import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from stoq_core import PayloadResults, StoqResponse

__all__ = ["Finding", "SummaryPrinter", "finding"]

_GENERIC_WIDTH = 72  # characters of a worker's generic results in the full view
_LINE_GENERIC_WIDTH = 40  # the same, in a one-line-per-file view


class Finding:
    """What one worker's results on one payload say.

    :param text: the finding in a few words (``sha256 9f86...``, ``size=14, ...``).
    :param kind: ``digest``, ``rules``, ``results`` (generic), ``nothing`` (no results) or
        ``failed`` (the worker has an error on this payload).
    :param rules: the rule names, for ``rules``.
    """

    __slots__ = ("kind", "rules", "text", "worker")

    def __init__(self, worker: str, kind: str, text: str, rules: tuple[str, ...] = ()) -> None:
        # What results say is the payload's doing as much as the worker's (printable).
        self.worker = printable(worker)
        self.kind = kind
        self.text = printable(text)
        self.rules = tuple(printable(rule) for rule in rules)


def finding(
    worker: str, results: Any, failed: bool = False, width: int = _GENERIC_WIDTH
) -> Finding:
    """What ``results``, one worker's results on one payload, say in a few words.

    :param failed: the worker has an error on this payload (shown when it has no results).
    :param width: characters of generic results kept.
    """
    if isinstance(results, Mapping):
        digest = results.get("sha256")
        if isinstance(digest, str) and digest:
            return Finding(worker, "digest", f"sha256 {digest}")
        rules = _rule_names(results)
        if rules is not None:
            text = "matched " + ", ".join(rules) if rules else "no rule matched"
            return Finding(worker, "rules", text, rules)
    if results is None or results == {} or results == []:
        if failed:
            return Finding(worker, "failed", "failed (see the errors)")
        return Finding(worker, "nothing", "no results")
    return Finding(worker, "results", _cut(_compact(results), width))


def _rule_names(results: Any) -> Optional[tuple[str, ...]]:
    """The names of the rules in ``results["matches"]``, or None if it holds no rule matches."""
    matches = results.get("matches") if isinstance(results, Mapping) else None
    if not isinstance(matches, list) or not all(
        isinstance(match, Mapping) and "rule" in match for match in matches
    ):
        return None
    return tuple(dict.fromkeys(str(match["rule"]) for match in matches))


def _compact(value: Any, depth: int = 0) -> str:
    """``value`` as short text: ``key=value`` pairs, nested containers by their size."""
    if isinstance(value, Mapping):
        if depth:
            return f"{{{len(value)} keys}}" if len(value) != 1 else "{1 key}"
        return ", ".join(f"{key}={_compact(item, depth + 1)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        if depth or len(value) > 3:
            return f"[{len(value)} items]" if len(value) != 1 else "[1 item]"
        return "[" + ", ".join(_compact(item, depth + 1) for item in value) + "]"
    text = " ".join(str(value).split())  # one line, whatever the value holds
    return _cut(text, 40)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _size(size: int) -> str:
    return f"{size:,} byte{'' if size == 1 else 's'}"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


class _Facts:
    """What one response's summary needs, gathered once."""

    def __init__(self, response: StoqResponse) -> None:
        self.results: list[PayloadResults] = list(response.results)
        self.by_id = {result.payload_id: result for result in self.results}
        #: payload_id -> plugins with an error on that payload
        self.failed: dict[str, set[str]] = {}
        for error in response.errors:
            payload_id = getattr(error, "payload_id", None)
            plugin = getattr(error, "plugin_name", None)
            if payload_id and plugin:
                self.failed.setdefault(payload_id, set()).add(plugin)
        self.errors = list(response.errors)

    def findings(self, result: PayloadResults, width: int = _GENERIC_WIDTH) -> Iterator[Finding]:
        failed = self.failed.get(result.payload_id, set())
        for worker in result.plugins_run.get("workers", []):
            yield finding(worker, result.workers.get(worker), worker in failed, width)

    def name(self, result: Optional[PayloadResults]) -> str:
        if result is None:
            return ""
        return printable(
            str(result.payload_meta.extra_data.get("filename") or result.payload_id[:8])
        )

    def depth(self, result: PayloadResults) -> int:
        depth, seen = 0, {result.payload_id}
        current: Optional[PayloadResults] = result
        while current is not None and current.extracted_from:
            parent = current.extracted_from[0]
            if parent in seen:
                break
            seen.add(parent)
            depth += 1
            current = self.by_id.get(parent)
        return depth


class SummaryPrinter:
    """Prints responses for a person to read.

    :param stream: where the summary goes.
    :param single: one input: the full view; else one line per response and a totals line.
    :param hint: end the full view with how to get the whole response (the summary was not
        asked for: it is the default on a terminal).
    """

    def __init__(self, stream: TextIO, single: bool, hint: bool = False) -> None:
        self.stream = stream
        self.single = single
        self.hint = hint
        self._console: Optional[Console] = None
        self.started = time.monotonic()
        self.files = 0
        self.payloads = 0
        self.with_errors = 0
        self.errors = 0
        self.matched = 0  #: responses where a rule matched

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        return self._console

    def count(self, response: StoqResponse) -> None:
        """Add ``response`` to the totals (whether it is printed or a connector took it)."""
        self.files += 1
        self.payloads += len(response.results)
        if response.errors:
            self.with_errors += 1
            self.errors += len(response.errors)
        if any(
            _rule_names(results)
            for result in response.results
            for results in result.workers.values()
        ):
            self.matched += 1

    def print(self, response: StoqResponse, label: Optional[str]) -> None:
        """Print ``response``: the full view, or its one line."""
        facts = _Facts(response)
        label = printable(label) if label else label
        if self.single:
            for line in self._full(response, facts, label):
                self._print(line, crop=False)
        else:
            self._print(self._line(facts, label), crop=True)

    def totals(self) -> None:
        """The last line of a many-file summary: what was scanned and found, and how long it took."""
        from rich.text import Text

        parts = [_plural(self.files, "file"), _plural(self.payloads, "payload")]
        if self.matched:
            parts.append(f"{self.matched:,} with rule matches")
        line = Text()
        line.append("scanned " + ", ".join(parts), style="bold")
        if self.with_errors:
            line.append(
                f", {self.with_errors:,} with errors ({_plural(self.errors, 'error')})",
                style="bold red",
            )
        else:
            line.append(", no errors", style="green")
        line.append(f" in {time.monotonic() - self.started:.1f} s", style="dim")
        self._print(line, crop=False)

    def _print(self, line: Text, crop: bool) -> None:
        console = self.console
        if crop and console.is_terminal:
            # One line per file on a terminal, however long its findings.
            console.print(line, no_wrap=True, overflow="ellipsis", crop=True)
        else:
            console.print(line, soft_wrap=True)  # whole lines for grep when piped

    def _full(self, response: StoqResponse, facts: _Facts, label: Optional[str]) -> list[Text]:
        from rich.text import Text

        heading = Text()
        heading.append(label or "scan", style="bold")
        if facts.results:
            heading.append(f"  {_size(facts.results[0].size)}")
        heading.append(f"  scan {response.scan_id}", style="dim")
        lines = [heading]
        for index, result in enumerate(facts.results):
            depth = facts.depth(result)
            indent = "  " * (depth + 1)
            if index:
                line = Text(f"{'  ' * depth}\u21b3 ")
                line.append(facts.name(result), style="bold")
                line.append(f"  {_size(result.size)}")
                if result.extracted_by:
                    line.append(f"  extracted by {', '.join(result.extracted_by)}", style="dim")
                lines.append(line)
            found = list(facts.findings(result))
            if not found:
                lines.append(Text(f"{indent}no worker ran", style="dim"))
            width = max((len(item.worker) for item in found), default=0)
            for item in found:
                line = Text(indent)
                line.append(item.worker.ljust(width), style="cyan")
                line.append("  ")
                style = _STYLES.get(item.kind, "") if item.rules or item.kind != "rules" else "dim"
                line.append(item.text, style=style)
                lines.append(line)
            archivers = result.plugins_run.get("archivers", [])
            if archivers:
                lines.append(Text(f"{indent}archived by {', '.join(archivers)}", style="dim"))
        if response.decorators:
            lines.append(Text("decorators: " + ", ".join(response.decorators), style="dim"))
        if facts.errors:
            lines.append(Text(_plural(len(facts.errors), "error"), style="bold red"))
            for error in facts.errors:
                line = Text("  ")
                plugin = getattr(error, "plugin_name", None)
                if plugin:
                    line.append(printable(str(plugin)), style="cyan")
                    line.append("  ")
                where = facts.name(facts.by_id.get(getattr(error, "payload_id", None) or ""))
                if where:
                    line.append(f"on {where}: ", style="dim")
                line.append(printable(str(getattr(error, "error", error))))
                lines.append(line)
        else:
            lines.append(Text("no errors", style="green"))
        if self.hint:
            lines.append(Text("(the whole response: stoq scan --format json ...)", style="dim"))
        return lines

    def _line(self, facts: _Facts, label: Optional[str]) -> Text:
        from rich.text import Text

        line = Text()
        line.append(label or "scan", style="bold")
        if not facts.results:  # not scanned (over max_payload_size): its error says why
            return self._line_errors(line, facts)
        root = facts.results[0]
        line.append(f"  {_size(root.size)}")
        rules: dict[str, None] = {}
        generic: list[Finding] = []
        digest: Optional[str] = None
        for result in facts.results:
            for item in facts.findings(result, _LINE_GENERIC_WIDTH):
                if item.kind == "rules":
                    rules.update(dict.fromkeys(item.rules))
                elif result is root and item.kind == "digest" and digest is None:
                    digest = item.text
                elif result is root and item.kind == "results":
                    generic.append(item)
        if digest:
            line.append(f"  {digest}")
        if rules:
            line.append("  rules ", style="yellow")
            line.append(", ".join(rules), style="bold yellow")
        for item in generic:
            line.append(f"  {item.worker}", style="cyan")
            line.append(f" {item.text}")
        if len(facts.results) > 1:
            line.append(f"  {len(facts.results) - 1:,} extracted", style="dim")
        if not root.plugins_run.get("workers"):
            line.append("  no worker ran", style="dim")
        return self._line_errors(line, facts)

    def _line_errors(self, line: Text, facts: _Facts) -> Text:
        if not facts.errors:
            return line
        line.append(f"  {_plural(len(facts.errors), 'error')}", style="bold red")
        first = facts.errors[0]
        plugin = getattr(first, "plugin_name", None)
        text = f"{plugin + ': ' if plugin else ''}{getattr(first, 'error', first)}"
        line.append(f": {printable(text)}")
        return line


_STYLES = {"rules": "bold yellow", "failed": "red", "nothing": "dim"}
