"""Plugin options through the installed ``stoq``: declared options checked at load, ``$env:``
values, ``stoq plugin info``, and the README's own stoq.cfg example (issue 15, items 1 and 4)."""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import StoqRunner

TESTS = Path(__file__).resolve().parents[1]
README = TESTS.parent / "README.md"


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_hash = pytest.mark.skipif(
    not _installed("stoq-plugin-hash"), reason="stoq-plugin-hash is not installed"
)
needs_hash_and_yara = pytest.mark.skipif(
    not (_installed("stoq-plugin-hash") and _installed("stoq-plugin-yara")),
    reason="stoq-plugin-hash and stoq-plugin-yara are not both installed",
)


@pytest.fixture
def with_option_fakes(stoq: StoqRunner, install_plugins: Callable[..., Path]) -> StoqRunner:
    """``stoq`` that also sees the fakes of ``tests/option_fakes.py`` as installed plugins."""
    from option_fakes import OPTION_FAKES

    site = install_plugins(OPTION_FAKES, dist="stoq-plugin-optionfakes")
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS), stoq.env["PYTHONPATH"]])
    return stoq


def write_config(stoq: StoqRunner, text: str) -> Path:
    stoq.home.mkdir(mode=0o755, exist_ok=True)
    path = stoq.home / "stoq.cfg"
    path.write_text(text)
    return path


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stoq: error: "), err
    return lines[0]


# -- item 1: the README's stoq.cfg, inline comments and all ----------------------------------


def readme_stoq_cfg() -> str:
    """The ini block of the README's Configuration section, as a user would paste it."""
    section = re.search(r"^## Configuration\n(.*?)(?=^## )", README.read_text(), re.M | re.S)
    assert section is not None, "README.md has no '## Configuration' section"
    block = re.search(r"^```ini\n(.*?)^```", section.group(1), re.M | re.S)
    assert block is not None, "README.md's Configuration section has no ini block"
    return block.group(1)


@needs_hash_and_yara
def test_the_readmes_stoq_cfg_works_as_pasted(stoq: StoqRunner, sample: Path) -> None:
    text = readme_stoq_cfg()
    assert re.search(r"\S[ \t]+;", text), "the example no longer has an inline comment"
    write_config(stoq, text)
    # The example's rule directory is the user's own; the README's every other line is kept.
    rules = stoq.cwd / "rules.yar"
    rules.write_text('rule stoq_sample { strings: $a = "stoq" condition: $a }\n')

    done = stoq("scan", str(sample), "--plugin-opts", f"yara:worker_rules={rules}")

    assert done.code == 0, done.err
    workers = done.json()["results"][0]["workers"]
    assert set(workers["hash"]) == {"sha256", "md5", "sha1"}  # always_dispatch = hash
    checked = stoq("plugin", "check", "yara", "--plugin-opts", f"yara:worker_rules={rules}")
    assert checked.code == 0, checked.out + checked.err  # its 'timeout = 30 ; ...' is 30


# -- item 4: declared options ----------------------------------------------------------------


@needs_hash
def test_a_misspelt_option_on_the_command_line_is_one_line_with_did_you_mean(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "hash", "--plugin-opts", "hash:algoritms=sha1")

    assert done.code == 2
    assert done.out == ""
    line = one_error_line(done.err)
    assert "plugin 'hash' has no option 'algoritms' (from --plugin-opts / plugin_opts)" in line
    assert "did you mean 'algorithms'?" in line


@needs_hash
def test_a_misspelt_option_in_stoq_cfg_names_the_section(stoq: StoqRunner, sample: Path) -> None:
    write_config(stoq, "[hash]\nalgoritms = sha1\n")

    done = stoq("scan", str(sample), "-s", "hash")

    assert done.code == 2
    line = one_error_line(done.err)
    assert "has no option 'algoritms' (from stoq.cfg [hash]); did you mean 'algorithms'?" in line


@needs_hash
def test_options_for_a_plugin_that_is_not_installed_are_one_line_with_did_you_mean(
    stoq: StoqRunner, sample: Path
) -> None:
    done = stoq("scan", str(sample), "-s", "hash", "--plugin-opts", "hsah:algorithms=sha1")

    assert done.code == 2
    line = one_error_line(done.err)
    assert line.startswith(
        "stoq: error: options are given for plugin 'hsah', which is not installed; "
        "did you mean 'hash'?"
    )


def test_a_value_of_the_wrong_type_is_one_line(with_option_fakes: StoqRunner, sample: Path) -> None:
    done = with_option_fakes(
        "scan", str(sample), "-s", "declared", "--plugin-opts", "declared:threshold=lots"
    )

    assert done.code == 2
    assert one_error_line(done.err) == (
        "stoq: error: plugin 'declared': option 'threshold' must be a whole number (int), "
        "not 'lots'"
    )


def test_declared_defaults_and_given_values_reach_the_plugin(
    with_option_fakes: StoqRunner, sample: Path
) -> None:
    done = with_option_fakes(
        "scan", str(sample), "-s", "declared", "--plugin-opts", "declared:strict=on"
    )

    assert done.code == 0, done.err
    seen = done.json()["results"][0]["workers"]["declared"]
    assert (seen["threshold"], seen["strict"], seen["mode"]) == (16, True, "fast")


def test_a_plugin_without_declarations_takes_any_option_as_before(
    with_option_fakes: StoqRunner, sample: Path
) -> None:
    done = with_option_fakes(
        "scan", str(sample), "-s", "undeclared", "--plugin-opts", "undeclared:anything=1"
    )

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["undeclared"] == {"anything": "1"}


def test_a_misspelt_core_key_is_one_line_with_did_you_mean(
    with_option_fakes: StoqRunner, sample: Path
) -> None:
    config = write_config(with_option_fakes, "[core]\nalways_dispach = declared\n")

    done = with_option_fakes("scan", str(sample))

    assert done.code == 2
    assert one_error_line(done.err) == (
        f"stoq: error: {config}: [core] has no key 'always_dispach'; "
        "did you mean 'always_dispatch'?"
    )


# -- values from the environment -------------------------------------------------------------


def test_env_values_come_from_the_environment_on_the_command_line_and_in_stoq_cfg(
    with_option_fakes: StoqRunner, sample: Path
) -> None:
    write_config(with_option_fakes, "[declared]\nmode = $env:STOQ_TEST_MODE\n")
    with_option_fakes.env.update(STOQ_TEST_MODE="careful", STOQ_TEST_THRESHOLD="3")

    done = with_option_fakes(
        "scan",
        str(sample),
        "-s",
        "declared",
        "--plugin-opts",
        "declared:threshold=$env:STOQ_TEST_THRESHOLD",
    )

    assert done.code == 0, done.err
    seen = done.json()["results"][0]["workers"]["declared"]
    assert (seen["threshold"], seen["mode"]) == (3, "careful")


def test_an_unset_env_variable_is_one_line_naming_it(
    with_option_fakes: StoqRunner, sample: Path
) -> None:
    with_option_fakes.env.pop("STOQ_TEST_MISSING", None)

    done = with_option_fakes(
        "scan",
        str(sample),
        "-s",
        "declared",
        "--plugin-opts",
        "declared:mode=$env:STOQ_TEST_MISSING",
    )

    assert done.code == 2
    assert one_error_line(done.err) == (
        "stoq: error: plugin 'declared': option 'mode' is $env:STOQ_TEST_MISSING, but the "
        "environment variable STOQ_TEST_MISSING is not set"
    )


# -- stoq plugin info ------------------------------------------------------------------------


def test_plugin_info_shows_version_roles_and_each_option_with_type_default_and_help(
    with_option_fakes: StoqRunner,
) -> None:
    done = with_option_fakes("plugin", "info", "declared")

    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == "declared 1.0 (distribution stoq-plugin-optionfakes)"
    assert "roles: worker (scan)" in lines
    at = lines.index("  threshold  int    [default: 16]")
    assert lines[at + 1].strip() == "NUL bytes from which a payload is padded"
    assert "  labels     list   [no default]" in lines
    assert "  kinds      set    [default: a, b]" in lines
    assert "  strict     bool   [default: false]" in lines
    assert lines[-1].startswith("  and the core's, for every plugin: timeout, required_workers")


def test_plugin_info_of_a_plugin_without_declarations_says_so(
    with_option_fakes: StoqRunner,
) -> None:
    done = with_option_fakes("plugin", "info", "undeclared")

    assert done.code == 0, done.err
    assert "options: not declared (any option is passed to the plugin unchecked" in done.out


def test_plugin_info_of_a_name_not_installed_is_one_line_with_did_you_mean(
    with_option_fakes: StoqRunner,
) -> None:
    done = with_option_fakes("plugin", "info", "declard")

    assert done.code == 2
    assert "plugin 'declard' is not installed; did you mean 'declared'?" in one_error_line(done.err)


def test_plugin_info_of_a_plugin_with_malformed_declarations_shows_the_error(
    with_option_fakes: StoqRunner,
) -> None:
    done = with_option_fakes("plugin", "info", "mixed")

    assert done.code == 1
    assert done.out.splitlines()[-1] == (
        "error: plugin 'mixed': its options must all be stoq_core.Option objects"
    )


@needs_hash
def test_plugin_info_hash_lists_its_algorithms_option(stoq: StoqRunner) -> None:
    done = stoq("plugin", "info", "hash")

    assert done.code == 0, done.err
    assert "  algorithms  list   [default: sha256, md5, sha1]" in done.out.splitlines()


def test_a_plugin_commands_stoq_cfg_section_reads_env_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stoq_cli.commands import CliError, config_section

    (tmp_path / "stoq.cfg").write_text("[redis]\npassword = $env:STOQ_TEST_PW  ; secret\n")
    monkeypatch.setenv("STOQ_HOME", str(tmp_path))
    monkeypatch.setenv("STOQ_TEST_PW", "hunter2")
    assert config_section("redis") == {"password": "hunter2"}

    monkeypatch.delenv("STOQ_TEST_PW")
    with pytest.raises(CliError, match="environment variable STOQ_TEST_PW is not set"):
        config_section("redis")
