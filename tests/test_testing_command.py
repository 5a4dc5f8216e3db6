"""``stoq_core.testing.stoq_command``: a plugin author's test runs the installed ``stoq`` with
the plugins the test published, in a home of its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stoq_core.testing import StoqCommand

TESTS = Path(__file__).parent  # fakes.py's folder


def test_a_published_plugin_is_scanned_by_the_installed_stoq(
    stoq_command: StoqCommand, publish_plugins: Callable[..., Path], tmp_path: Path
) -> None:
    publish_plugins({"authors_echo": "fakes:Worker"}, import_path=TESTS)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"MZ hello")

    done = stoq_command("scan", str(sample), "-s", "authors_echo")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"] == {"authors_echo": {"worker": "authors_echo"}}
    assert stoq_command.home.is_dir()  # its own $STOQ_HOME, made by stoq on first use
    assert stoq_command.home.parent == tmp_path


def test_without_publishing_the_plugin_is_not_there(
    stoq_command: StoqCommand, tmp_path: Path
) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"MZ hello")

    done = stoq_command("scan", str(sample), "-s", "authors_echo")

    assert done.code == 2
    assert done.out == ""
    assert done.err.startswith("stoq: error:") and "authors_echo" in done.err


def test_stdin_and_json_lines(
    stoq_command: StoqCommand, publish_plugins: Callable[..., Path]
) -> None:
    publish_plugins({"authors_echo": "fakes:Worker"}, import_path=TESTS)

    done = stoq_command("scan", "-", "-s", "authors_echo", "--compact", stdin=b"piped bytes")

    assert done.code == 0, done.err
    [response] = done.lines()
    assert response["results"][0]["size"] == len(b"piped bytes")
