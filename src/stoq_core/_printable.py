"""Text from outside (file names, payloads' names, plugins' messages) made safe for a terminal.

The standard library only, and nothing imported: the CLI uses it on every line it writes to
stderr, ``stoq --help``'s path included.
"""

from __future__ import annotations

__all__ = ["printable"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, newlines: bool = False) -> str:
    """``text`` made safe to write to a terminal: control and format characters (ESC, BEL, a
    right-to-left override...) written as escapes (``\\x1b``), and a byte that is not UTF-8 (a
    file name's, kept by surrogateescape) as ``\\xNN``.

    File names, and the names of payloads extracted from archives and e-mails, are chosen by
    whoever sent them: written raw, one can retitle or garble the analyst's terminal, hide the
    lines before it, or show ``invoice\u202egpj.exe`` as ``invoiceexe.jpg``.

    :param newlines: keep line breaks (a traceback's); else they are escaped too (``\\n``).
    """
    if text.isprintable():
        return text
    if newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    short = _ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        code -= 0xDC00
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
