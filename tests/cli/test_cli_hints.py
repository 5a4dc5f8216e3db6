"""What error messages and help suggest must be true: the spelling of the command line, a
plugin that exists, a version that was released (issue 15's slips)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import StoqRunner

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("more", [[], ["--consumers", "2"]])
def test_run_without_a_provider_says_how_in_the_command_lines_words(
    stoq: StoqRunner, more: list[str]
) -> None:
    done = stoq("run", "-a", "cli_echo", *more)

    assert (done.code, done.out) == (2, "")
    assert done.err == (
        "stoq: error: no provider plugins are loaded: name one with -P NAME, or with "
        "'providers = NAME' in the [core] section of stoq.cfg ('stoq list' shows the plugins "
        "with the ingest hook)\n"
    )


def test_a_provider_from_stoq_cfg_is_enough(stoq: StoqRunner, tmp_path: Path) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[core]\nproviders = cli_burst\n")

    done = stoq("run", "-a", "cli_echo")

    assert "no provider" not in done.err


def test_a_malformed_plugin_opt_is_shown_the_form_with_a_real_plugin_and_option(
    stoq: StoqRunner,
) -> None:
    done = stoq("scan", "-", "--plugin-opts", "nocolon", stdin=b"x")

    assert done.code == 2
    example = re.search(r"\(e\.g\. (\w+):(\w+)=\S+\)", done.err)
    assert example is not None, done.err
    plugin, option = example.groups()
    listed = stoq("list", "--json")
    assert plugin in {entry["name"] for entry in listed.json()}
    source = REPO / "packages" / f"stoq-plugin-{plugin}" / "src"
    assert any(f'"{option}"' in path.read_text() for path in source.rglob("*.py")), option


def test_the_wheels_in_install_help_have_versions_that_exist(stoq: StoqRunner) -> None:
    done = stoq("install", "--help")

    assert done.code == 0, done.err
    wheels = re.findall(r"stoq_plugin_(\w+)-([^-\s]+?)(?:-py3-none-any)?\.whl", done.out)
    assert wheels, "the help shows no wheel to install"
    for plugin, version in wheels:
        pyproject = REPO / "packages" / f"stoq-plugin-{plugin}" / "pyproject.toml"
        released = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M)
        assert released is not None, pyproject
        assert version in ("*", released[1]), (plugin, version, released[1])
