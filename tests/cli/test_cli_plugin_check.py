"""``stoq plugin check``: a plugin is loaded as a scan would load it, and the verdict says why not.

The plugins are the CLI tests' fakes, published as entry points of a test distribution; a few
of the core tests' fakes (bad hook signatures) are published beside them for the child process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cli_support import DIST, DIST_VERSION, StoqRunner, write_legacy_plugin

TESTS = Path(__file__).resolve().parents[1]


def _with_core_fakes(stoq: StoqRunner, install_plugins: Callable[..., Path]) -> None:
    """Publish fakes of ``tests/fakes.py`` that break the hook rules, visible to ``stoq``."""
    site = install_plugins(
        {
            "chk_extra_arg": "fakes:ExtraArgument",
            "chk_unknown_hook": "fakes:UnknownHook",
            "chk_no_hooks": "fakes:NoHooks",
        },
        dist="stoq-plugin-checkfakes",
    )
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS), stoq.env["PYTHONPATH"]])


def test_check_of_a_plugin_that_loads_says_ok_with_version_distribution_and_hooks(
    stoq: StoqRunner,
) -> None:
    done = stoq("plugin", "check", "cli_echo")

    assert done.code == 0, done.err
    assert done.out == f"cli_echo: ok (version {DIST_VERSION}; distribution {DIST}; hooks scan)\n"


def test_check_lists_every_hook_in_scan_order(stoq: StoqRunner) -> None:
    done = stoq("plugin", "check", "cli_dispatch", "cli_tag", "cli_burst")

    assert done.code == 0, done.err
    hooks = [line.rsplit("hooks ", 1)[1] for line in done.out.splitlines()]
    assert hooks == ["get_dispatches)", "decorate)", "ingest)"]


def test_check_of_a_plugin_that_is_not_installed_fails_suggesting_a_name(
    stoq: StoqRunner,
) -> None:
    done = stoq("plugin", "check", "cli_ecko")

    assert done.code == 1
    assert done.out.startswith("cli_ecko: failed: plugin 'cli_ecko' is not installed; ")
    assert "did you mean 'cli_echo'?" in done.out
    assert len(done.out.splitlines()) == 1


def test_check_of_a_plugin_whose_constructor_raises_gives_the_reason_in_one_line(
    stoq: StoqRunner,
) -> None:
    done = stoq("plugin", "check", "cli_wontstart")

    assert done.code == 1
    [line] = done.out.splitlines()
    assert line.startswith("cli_wontstart: failed: plugin 'cli_wontstart' from distribution ")
    assert line.endswith("failed to start: ValueError: option api_key is required")
    assert "Traceback" not in done.err


def test_check_of_a_plugin_whose_import_fails_names_the_missing_module(
    stoq: StoqRunner,
) -> None:
    done = stoq("plugin", "check", "cli_broken")

    assert done.code == 1
    assert "failed to import cli_broken_import:Anything" in done.out
    assert "No module named 'a_dependency_that_is_not_installed'" in done.out


def test_check_with_log_level_debug_prints_the_traceback(stoq: StoqRunner) -> None:
    done = stoq("plugin", "check", "cli_wontstart", "--log-level", "debug")

    assert done.code == 1
    assert "Traceback (most recent call last)" in done.err
    assert "ValueError: option api_key is required" in done.err
    assert done.out.startswith("cli_wontstart: failed: ")


def test_check_validates_hook_signatures(
    stoq: StoqRunner, install_plugins: Callable[..., Path]
) -> None:
    _with_core_fakes(stoq, install_plugins)

    done = stoq("plugin", "check", "chk_extra_arg")

    assert done.code == 1
    [line] = done.out.splitlines()
    assert line.startswith("chk_extra_arg: failed: plugin 'chk_extra_arg' from distribution")
    assert "verbose" in line


def test_check_rejects_a_hook_no_spec_defines(
    stoq: StoqRunner, install_plugins: Callable[..., Path]
) -> None:
    _with_core_fakes(stoq, install_plugins)

    done = stoq("plugin", "check", "chk_unknown_hook")

    assert done.code == 1
    assert "implements 'scan_harder', which is not a stoQ hook" in done.out


def test_check_rejects_a_plugin_with_no_hooks(
    stoq: StoqRunner, install_plugins: Callable[..., Path]
) -> None:
    _with_core_fakes(stoq, install_plugins)

    done = stoq("plugin", "check", "chk_no_hooks")

    assert done.code == 1
    assert "implements none of the stoQ hooks" in done.out


def test_check_constructs_the_plugin_with_plugin_opts(stoq: StoqRunner) -> None:
    done = stoq("plugin", "check", "cli_echo", "--plugin-opts", "cli_echo:timeout=soon")

    assert done.code == 1
    assert "option timeout must be a number of seconds >= 0 (0: no limit), not 'soon'" in done.out


def test_check_constructs_the_plugin_with_its_stoq_cfg_section(stoq: StoqRunner) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[cli_echo]\ntimeout = soon\n")

    done = stoq("plugin", "check", "cli_echo")

    assert done.code == 1
    assert "option timeout must be a number of seconds" in done.out


def test_check_does_not_load_the_plugins_stoq_cfg_names_for_scans(stoq: StoqRunner) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[core]\nalways_dispatch = cli_wontstart\n")

    done = stoq("plugin", "check", "cli_echo")

    assert done.code == 0, done.err
    assert done.out.startswith("cli_echo: ok ")


def test_check_reports_each_name_and_fails_if_any_failed(stoq: StoqRunner) -> None:
    done = stoq("plugin", "check", "cli_echo", "cli_wontstart", "cli_tag")

    assert done.code == 1
    verdicts = [line.split(":")[:2] for line in done.out.splitlines()]
    assert verdicts == [
        ["cli_echo", " ok (version 0.3.1; distribution stoq-plugin-clitest; hooks scan)"],
        ["cli_wontstart", " failed"],
        ["cli_tag", " ok (version 0.3.1; distribution stoq-plugin-clitest; hooks decorate)"],
    ]


def test_check_finds_a_v3_plugin_in_a_plugin_dir(stoq: StoqRunner, tmp_path: Path) -> None:
    directory = write_legacy_plugin(tmp_path / "v3plugins", name="echo3", version="3.0.1")

    done = stoq("plugin", "check", "echo3", "--plugin-dir", str(directory.parent))

    assert done.code == 0, done.err
    assert done.out == (
        f"echo3: ok (version 3.0.1; plugin directory {directory.parent}; hooks scan)\n"
    )


def test_check_finds_a_v3_plugin_in_stoq_home(stoq: StoqRunner) -> None:
    write_legacy_plugin(stoq.home / "plugins", name="echo3")

    done = stoq("plugin", "check", "echo3")

    assert done.code == 0, done.err
    assert done.out.startswith("echo3: ok (version 3.0.1; plugin directory ")


def test_check_notes_an_entry_point_a_plugin_directory_hides(stoq: StoqRunner) -> None:
    write_legacy_plugin(stoq.home / "plugins", name="cli_echo")

    done = stoq("plugin", "check", "cli_echo")

    assert done.code == 0, done.err
    assert "plugin directory" in done.out
    assert f"note: hides the entry point from {DIST} {DIST_VERSION}" in done.out


def test_check_needs_a_name(stoq: StoqRunner) -> None:
    done = stoq("plugin", "check")

    assert done.code == 2
    assert done.err.startswith("stoq: error: Missing argument 'NAME...'")


def test_plugin_help_lists_new_and_check(stoq: StoqRunner) -> None:
    done = stoq("plugin", "--help")

    assert done.code == 0
    assert "new " in done.out and "check " in done.out
