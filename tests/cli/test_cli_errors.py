"""Bad input: one ``stoq: error: ...`` line on stderr, a non-zero exit, never a traceback.

Exit 2 means nothing was scanned (usage or input error); exit 1 that a scan ran and failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click.testing
import pytest
from cli_support import Done, StoqRunner

Invoke = Callable[..., click.testing.Result]


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("stoq: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


def assert_usage_error(done: Done | click.testing.Result, *fragments: str) -> None:
    code = done.code if isinstance(done, Done) else done.exit_code
    stderr = done.err if isinstance(done, Done) else done.stderr
    stdout = done.out if isinstance(done, Done) else done.stdout
    assert code == 2, stderr
    assert stdout == ""
    assert_one_error_line(stderr, *fragments)


# -- files -----------------------------------------------------------------------------------


def test_a_missing_file(stoq: StoqRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"

    assert_usage_error(stoq("scan", str(missing), "-s", "cli_echo"), f"{missing}: No such file")


def test_a_path_through_a_file_is_unreadable(invoke: Invoke, sample: Path) -> None:
    # Root reads any file, so 'unreadable' here is a path that goes through a file.
    inside = sample / "inner"

    assert_usage_error(invoke("scan", str(inside)), f"{inside}: Not a directory")


def test_a_fifo_is_refused_rather_than_read_forever(invoke: Invoke, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    assert_usage_error(invoke("scan", str(fifo)), f"{fifo} is a FIFO", "stoq scan -")


def test_a_file_without_read_permission(
    invoke: Invoke, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory anyone may enter, so the check below meets the file's own permissions only.
    shared = tmp_path_factory.mktemp("shared")
    for folder in (shared, *shared.parents):
        if str(folder) == "/":
            break
        if folder.stat().st_uid == os.geteuid():
            folder.chmod(folder.stat().st_mode | 0o755)
    home = shared / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    monkeypatch.setenv("STOQ_HOME", str(home))
    secret = shared / "secret.bin"
    secret.write_bytes(b"MZ stoq sample")
    secret.chmod(0)
    # Root reads whatever the permissions say: check as an ordinary user (nobody) instead.
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(65534)
    try:
        result = invoke("scan", str(secret))
    finally:
        if as_root:
            os.seteuid(0)

    assert_usage_error(result, f"cannot read {secret}: Permission denied")


def test_an_empty_file_is_refused_without_allow_empty(stoq: StoqRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")

    assert_usage_error(
        stoq("scan", str(empty), "-s", "cli_echo"), f"{empty} is empty", "--allow-empty"
    )


def test_empty_stdin_is_refused_without_allow_empty(invoke: Invoke) -> None:
    assert_usage_error(invoke("scan", "-", "-s", "cli_echo", stdin=b""), "stdin is empty")


def test_a_directory_with_nothing_to_scan(invoke: Invoke, tmp_path: Path) -> None:
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()

    assert_usage_error(invoke("scan", str(empty_dir)), "nothing to scan", str(empty_dir))


def test_stdin_named_twice(invoke: Invoke) -> None:
    assert_usage_error(invoke("scan", "-", "-"), "more than once")


def test_a_directory_given_as_the_config_file(
    stoq: StoqRunner, sample: Path, tmp_path: Path
) -> None:
    done = stoq("scan", str(sample), "--config-file", str(tmp_path))

    assert_usage_error(done, "--config-file", "is a directory")


def test_a_missing_config_file_given_explicitly(
    invoke: Invoke, sample: Path, tmp_path: Path
) -> None:
    assert_usage_error(
        invoke("scan", str(sample), "--config-file", str(tmp_path / "no.cfg")),
        "--config-file",
        "does not exist",
    )


def test_a_file_given_as_a_plugin_dir(invoke: Invoke, sample: Path) -> None:
    assert_usage_error(
        invoke("scan", str(sample), "--plugin-dir", str(sample)), "--plugin-dir", "is a file"
    )


# -- stoq.cfg --------------------------------------------------------------------------------


def test_a_malformed_stoq_cfg(stoq: StoqRunner, sample: Path) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("this line has no section\n")

    assert_usage_error(stoq("scan", str(sample), "-s", "cli_echo"), "stoq.cfg")


def test_a_bad_value_in_stoq_cfg(invoke: Invoke, sample: Path, home: Path) -> None:
    home.mkdir()
    (home / "stoq.cfg").write_text("[core]\nmax_recursion = deep\n")

    assert_usage_error(invoke("scan", str(sample)), "max_recursion")


def test_an_unreadable_stoq_cfg(invoke: Invoke, sample: Path, home: Path) -> None:
    # A FIFO is a config file that cannot be read (and would block a reader).
    home.mkdir()
    os.mkfifo(home / "stoq.cfg")

    assert_usage_error(invoke("scan", str(sample)), "stoq.cfg is not a regular file")


def test_a_directory_where_stoq_cfg_should_be(invoke: Invoke, sample: Path, home: Path) -> None:
    (home / "stoq.cfg").mkdir(parents=True)

    assert_usage_error(invoke("scan", str(sample)), "stoq.cfg is a directory")


# -- plugins ---------------------------------------------------------------------------------


def test_an_unknown_plugin_suggests_the_closest_and_lists_the_installed(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "cli_ecco")

    assert_usage_error(done, "'cli_ecco' is not installed", "did you mean 'cli_echo'", "cli_carve")


@pytest.mark.parametrize("option", ["-a", "-R", "-C", "-D", "-A", "-S"])
def test_an_unknown_plugin_in_any_role(invoke: Invoke, sample: Path, option: str) -> None:
    assert_usage_error(invoke("scan", str(sample), option, "nosuch"), "'nosuch' is not installed")


def test_a_plugin_that_fails_to_import(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_broken")

    assert_usage_error(
        done, "cli_broken", "ModuleNotFoundError", "a_dependency_that_is_not_installed"
    )


def test_a_plugin_that_fails_to_start(invoke: Invoke, sample: Path) -> None:
    assert_usage_error(
        invoke("scan", str(sample), "-a", "cli_wontstart"), "cli_wontstart", "api_key is required"
    )


def test_a_plugin_in_the_wrong_role(invoke: Invoke, sample: Path) -> None:
    assert_usage_error(
        invoke("scan", str(sample), "-s", "cli_badsink"), "'cli_badsink'", "not a worker"
    )


def test_log_level_debug_adds_the_traceback(stoq: StoqRunner, sample: Path) -> None:
    done = stoq("scan", str(sample), "-s", "cli_broken", "--log-level", "debug")

    assert done.code == 2
    assert "Traceback" in done.err
    assert "ModuleNotFoundError" in done.err
    assert done.err.splitlines()[-1].startswith("stoq: error: ")


# -- options ---------------------------------------------------------------------------------


def test_an_unknown_option(stoq: StoqRunner, sample: Path) -> None:
    assert_usage_error(stoq("scan", str(sample), "--bogus"), "--bogus", "stoq scan --help")


def test_an_unknown_command(invoke: Invoke) -> None:
    assert_usage_error(invoke("scna"), "scna")


@pytest.mark.parametrize("value", ["cli_echo", "cli_echo:greeting", "greeting=hi", ":x=1"])
def test_malformed_plugin_opts(invoke: Invoke, sample: Path, value: str) -> None:
    assert_usage_error(
        invoke("scan", str(sample), "--plugin-opts", value), "--plugin-opts", "NAME:OPTION=VALUE"
    )


@pytest.mark.parametrize("value", ["server", "=mx1"])
def test_malformed_request_extra(invoke: Invoke, sample: Path, value: str) -> None:
    assert_usage_error(
        invoke("scan", str(sample), "--request-extra", value), "--request-extra", "KEY=VALUE"
    )


def test_a_negative_max_recursion(invoke: Invoke, sample: Path) -> None:
    assert_usage_error(invoke("scan", str(sample), "--max-recursion", "-1"), "--max-recursion")


@pytest.mark.parametrize("option", ["--timeout", "--deadline"])
@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_time_limit(invoke: Invoke, sample: Path, option: str, value: str) -> None:
    assert_usage_error(invoke("scan", str(sample), option, value), option)


def test_an_empty_plugin_name(invoke: Invoke, sample: Path) -> None:
    assert_usage_error(invoke("scan", str(sample), "-s", ","), "names no plugin")


def test_an_unknown_log_level(invoke: Invoke, sample: Path) -> None:
    assert_usage_error(invoke("scan", str(sample), "--log-level", "loud"), "--log-level")


def test_an_unexpected_failure_is_one_line_with_a_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stoq_cli.main import _report

    monkeypatch.delenv("STOQ_DEBUG", raising=False)
    code = _report(RuntimeError("something nobody planned for"))

    assert code == 1
    assert capsys.readouterr().err == (
        "stoq: error: unexpected RuntimeError: something nobody planned for "
        "(--log-level debug or STOQ_DEBUG=1 shows the traceback)\n"
    )


def test_stoq_debug_prints_the_traceback_of_any_failure(stoq: StoqRunner, sample: Path) -> None:
    stoq.env["STOQ_DEBUG"] = "1"

    done = stoq("scan", str(sample), "-s", "cli_broken")

    assert done.code == 2
    assert "Traceback" in done.err
    assert done.err.splitlines()[-1].startswith("stoq: error: plugin 'cli_broken'")
