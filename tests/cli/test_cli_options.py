"""Plugin-list options: FILE is never taken for a plugin name, however the options are spelled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import click.testing
import pytest
from cli_support import StoqRunner, write_legacy_plugin

from stoq_cli._params import ContinuedOption
from stoq_cli.main import cli

Invoke = Callable[..., click.testing.Result]


@pytest.mark.parametrize(
    "args",
    [
        ["{file}", "-s", "cli_echo", "-s", "cli_carve"],
        ["-s", "cli_echo", "-s", "cli_carve", "--", "{file}"],
        ["-s", "cli_echo", "-s", "cli_carve", "{file}"],
        ["-s", "cli_echo,cli_carve", "{file}"],
        ["-s", "cli_echo", "cli_carve", "{file}"],
        ["--start-dispatch=cli_echo", "cli_carve", "{file}"],
    ],
    ids=["file-first", "double-dash", "repeated", "commas", "v3-style", "long-equals"],
)
def test_every_spelling_scans_the_file_with_both_workers(
    stoq: StoqRunner, sample: Path, args: list[str]
) -> None:
    done = stoq("scan", *(arg.format(file=sample) for arg in args))

    assert done.code == 0, done.err
    root = done.json()["results"][0]
    assert root["payload_meta"]["extra_data"]["filename"] == "sample.bin"
    assert sorted(root["plugins_run"]["workers"]) == ["cli_carve", "cli_echo"]


def test_a_file_named_like_a_plugin_after_a_plugin_is_scanned_not_dispatched(
    invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("cli_carve").write_bytes(b"a file, not the plugin")

    result = invoke("scan", "-s", "cli_echo", "cli_carve")

    assert result.exit_code == 0, result.stderr
    assert '"filename": "cli_carve"' in result.stdout
    assert '"workers": [\n                    "cli_echo"\n                ]' in result.stdout


def test_a_word_read_as_a_plugin_name_gets_a_hint_about_files(invoke: Invoke) -> None:
    result = invoke("scan", "-s", "cli_echo", "samplefile")

    assert result.exit_code == 2
    assert result.stderr.startswith("stoq: error: plugin 'samplefile' is not installed")
    assert "put it before the options or after '--'" in result.stderr


def test_a_dotted_word_after_a_plugin_is_taken_as_a_file(invoke: Invoke) -> None:
    result = invoke("scan", "-s", "cli_echo", "missing.bin")

    assert result.exit_code == 2
    assert result.stderr == "stoq: error: missing.bin: No such file or directory\n"


def test_plugin_opts_run_on_over_several_words_v3_style(
    invoke: Invoke, sample: Path, tmp_path: Path
) -> None:
    results = tmp_path / "saved"

    result = invoke(
        "scan", str(sample), "-s", "cli_echo", "-C", "cli_sink",
        "--plugin-opts", "cli_echo:greeting=hey", f"cli_sink:results_dir={results}",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    (saved,) = results.iterdir()
    assert '"greeting": "hey"' in saved.read_text()


def test_repeated_names_run_once(invoke: Invoke, sample: Path) -> None:
    result = invoke("scan", str(sample), "-s", "cli_echo,cli_echo", "-s", "cli_echo", "--compact")

    assert result.exit_code == 0, result.stderr
    assert '"workers": ["cli_echo"]' in result.stdout


def test_every_option_of_scan_and_run_is_explained_in_help() -> None:
    for name in ("scan", "run", "list", "install"):
        command = cli.commands[name]
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"stoq {name} {param.opts[0]} has no help"


def test_scan_help_reads_like_a_man_page(invoke: Invoke) -> None:
    result = invoke("scan", "--help")

    assert result.exit_code == 0
    for section in ("Output", "Bad input", "Plugin lists", "Examples", "Exit status", "STOQ_HOME"):
        assert section in result.stdout
    assert "stoq scan bad.exe -s hash" in result.stdout


def test_the_plugin_list_options_are_the_continued_kind() -> None:
    # The v3 spelling (-s a b FILE) works for exactly these options.
    continued = {
        opt
        for param in cli.commands["run"].params
        if isinstance(param, ContinuedOption)
        for opt in param.opts
    }
    assert continued >= {"-s", "-a", "-R", "-C", "-D", "-A", "-S", "-P"}
    assert {"--plugin-opts", "--request-extra"} <= continued


def test_plugin_dir_takes_several_directories_v3_style(stoq: StoqRunner, tmp_path: Path) -> None:
    # v3: --plugin-dir d1 d2 (nargs='+'); the second was once scanned as a file to scan.
    first, second, samples = tmp_path / "first", tmp_path / "second", tmp_path / "samples"
    write_legacy_plugin(first, "one3")
    write_legacy_plugin(second, "two3")
    samples.mkdir()
    (samples / "a.bin").write_bytes(b"scanned")
    sample = samples / "a.bin"

    listed = stoq("list", "--json", "--plugin-dir", str(first), str(second))
    scanned = stoq(
        "scan", str(sample), "-s", "one3", "two3", "--plugin-dir", str(first), str(second)
    )
    # A directory that holds no plugins after --plugin-dir DIR is an input, as always.
    walked = stoq("scan", "-s", "one3", "--plugin-dir", str(first), str(samples))

    assert listed.code == 0, listed.err
    assert {"one3", "two3"} <= {plugin["name"] for plugin in listed.json()}
    assert scanned.code == 0, scanned.err
    assert sorted(scanned.json()["results"][0]["workers"]) == ["one3", "two3"]
    assert walked.code == 0, walked.err
    [response] = walked.lines()
    assert response["results"][0]["payload_meta"]["extra_data"]["filename"] == "a.bin"


def test_the_plugin_dir_option_is_the_continued_kind_in_scan_run_and_list() -> None:
    for command in ("scan", "run", "list"):
        [param] = [p for p in cli.commands[command].params if "--plugin-dir" in p.opts]
        assert isinstance(param, ContinuedOption) and param.paths
