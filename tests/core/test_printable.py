"""Text from outside made safe for a terminal (``stoq_core._printable``), and the text log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoq_core import Stoq
from stoq_core._printable import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, é and 漢字", "plain text, é and 漢字"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # ESC and BEL
        ("a\x00b\x7fc\x9bd", "a\\x00b\\x7fc\\x9bd"),  # NUL, DEL, a C1 control (CSI)
        ("invoice\u202egpj.exe", "invoice\\u202egpj.exe"),  # right-to-left override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\U000e0041tag", "\\U000e0041tag"),  # a tag character, invisible
        ("bytes\udcff\udc80", "bytes\\xff\\x80"),  # os.fsdecode of b"bytes\xff\x80"
        ("line\nbreak\tand\rreturn", "line\\nbreak\\tand\\rreturn"),
    ],
)
def test_control_and_format_characters_are_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # already printable: kept as it is


def test_line_breaks_can_be_kept_and_the_rest_is_still_escaped() -> None:
    assert printable("one\x1b\ntwo\t", newlines=True) == "one\\x1b\ntwo\\t"


@pytest.fixture
def stoq_log(tmp_path: Path) -> Iterator[Path]:
    """The ``stoq`` logger writing text lines to ``tmp_path/logs/stoq.log``."""
    Stoq(base_dir=str(tmp_path), log_dir=str(tmp_path / "logs"), plugin_dir_list=[])
    yield tmp_path / "logs" / "stoq.log"
    Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])


def test_text_log_lines_escape_what_their_message_holds(stoq_log: Path) -> None:
    # Log lines name files and payloads: a `tail -f` of the log, or stderr, is a terminal too.
    log = logging.getLogger("stoq")
    log.warning("not scanned: %s", "evil\x1b[2J.zip")
    try:
        raise ValueError("a reason\nover two lines \x07")
    except ValueError:
        log.exception("failed")

    written = stoq_log.read_text()
    assert "not scanned: evil\\x1b[2J.zip" in written
    assert "\x1b" not in written and "\x07" not in written
    assert "ValueError: a reason\nover two lines \\x07" in written  # the traceback's lines kept
