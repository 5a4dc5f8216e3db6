"""Names an attacker chose (file names, the names of payloads extracted from an archive) never
reach the terminal raw: control and format characters are written as escapes (``\\x1b``)."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from cli_support import StoqRunner

# ESC sequences retitle, recolour or clear a terminal; BEL rings; U+202E shows "gpj.exe" as
# "exe.jpg"; 0xff is a byte that is not UTF-8 (a file name may hold any byte but / and NUL).
HOSTILE = "a\x1b]0;owned\x07\x1b[2Jb\u202egpj.exe"
SHOWN = "a\\x1b]0;owned\\x07\\x1b[2Jb\\u202egpj.exe"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def tree(stoq: StoqRunner) -> Path:
    """A directory holding a file with a hostile name, an empty one, and one named in bytes."""
    directory = stoq.cwd / "tree"
    directory.mkdir()
    (directory / HOSTILE).write_bytes(b"some content")
    (directory / f"empty{HOSTILE}").write_bytes(b"")
    os.close(os.open(os.fsencode(directory) + b"/bytes\xff", os.O_CREAT | os.O_WRONLY, 0o600))
    return directory


def test_summary_and_warnings_escape_hostile_file_names(stoq: StoqRunner, tree: Path) -> None:
    done = stoq("scan", str(tree), "-a", "hash", "--format", "summary", "--allow-empty")
    skipped = stoq("scan", str(tree), "-a", "hash", "--format", "summary")

    assert done.code == 0, done.err
    assert not RAW.search(done.out) and not RAW.search(skipped.err)
    assert f"/tree/{SHOWN}  12 bytes" in done.out
    assert "/tree/bytes\\xff" in done.out
    assert f"/tree/empty{SHOWN}: empty" in skipped.err


def test_timings_and_error_lines_escape_hostile_file_names(stoq: StoqRunner, tree: Path) -> None:
    timed = stoq("scan", str(tree / HOSTILE), "-a", "hash", "--timings")
    missing = stoq("scan", str(tree / f"missing{HOSTILE}"), "-a", "hash")

    assert timed.code == 0, timed.err
    assert not RAW.search(timed.err) and not RAW.search(missing.err)
    assert timed.err.startswith("stoq: timings of ") and f"/tree/{SHOWN}:" in timed.err
    assert missing.code != 0
    [line] = missing.err.splitlines()
    assert line.startswith("stoq: error: ") and f"missing{SHOWN}" in line


def test_the_summary_escapes_the_names_of_extracted_payloads(stoq: StoqRunner) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"inner{HOSTILE}.txt", b"inside")
    path = stoq.cwd / "mail.zip"
    path.write_bytes(archive.getvalue())
    done = stoq("scan", str(path), "-s", "decompress", "-a", "hash", "--format", "summary")

    assert done.code == 0, done.err
    assert not RAW.search(done.out)
    assert f"inner{SHOWN}.txt" in done.out


def test_json_output_keeps_the_names_as_they_are(stoq: StoqRunner, tree: Path) -> None:
    # JSON escapes control characters itself (other non-ASCII characters are written as they
    # are, as v3 wrote them), and a program reading it needs the real name.
    done = stoq("scan", str(tree / HOSTILE), "-a", "hash")

    assert done.code == 0, done.err
    assert "\x1b" not in done.out and "\x07" not in done.out
    assert done.json()["results"][0]["payload_meta"]["extra_data"]["filename"].endswith(HOSTILE)
