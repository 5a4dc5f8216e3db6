"""Commands that plugin distributions add through ``stoq.commands`` entry points (issue 14).

``tests/commandplugin`` is a real third-party distribution, built and installed by pip: ``greet``
works, ``broken``'s module fails to import, ``notacommand`` names a string. Every test runs the
installed ``stoq`` as a user would.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from cli_support import Done, StoqRunner

from stoq_core import _index

SRC = Path(__file__).parents[2] / "src"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Created when the command module ``greet`` is imported."""
    return tmp_path / "greet-imported"


def with_sites(stoq: StoqRunner, *sites: Path, **env: str) -> StoqRunner:
    python_path = os.pathsep.join([*map(str, sites), stoq.env["PYTHONPATH"]])
    return attrs.evolve(stoq, env={**stoq.env, "PYTHONPATH": python_path, **env})


@pytest.fixture
def added(stoq: StoqRunner, command_site: Path, marker: Path) -> StoqRunner:
    """``stoq`` with the command distribution installed."""
    return with_sites(stoq, command_site, STOQ_TEST_COMMAND_MARKER=str(marker))


def claim(site: Path, dist: str, commands: dict[str, str]) -> Path:
    """Another installed distribution (its metadata only) publishing ``commands``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in commands.items())
    (info / "entry_points.txt").write_text(f"[stoq.commands]\n{lines}")
    return site


def one_line_error(done: Done) -> str:
    assert done.code == 2, done.err
    assert done.out == ""
    assert len(done.err.splitlines()) == 1, done.err
    assert "Traceback" not in done.err
    return done.err


def test_help_lists_plugin_commands_with_their_distribution_without_importing_them(
    added: StoqRunner, marker: Path
) -> None:
    done = added("--help")

    assert done.code == 0, done.err
    commands = done.out.split("Plugin commands:")[1]
    assert "greet        from stoq-plugin-commandtest 0.2.0" in commands
    assert "broken       from stoq-plugin-commandtest 0.2.0" in commands
    assert "scan" in done.out.split("Plugin commands:")[0]
    assert not marker.exists()  # listed from the index, not imported


def test_a_plugin_command_runs_with_stoq_home_and_its_config_section(
    added: StoqRunner, marker: Path
) -> None:
    added.home.mkdir()
    (added.home / "stoq.cfg").write_text("[greet]\nsender = the lab\n")

    done = added("greet", "world")

    assert done.code == 0, done.err
    assert done.json() == {"hello": "world", "from": "the lab", "home": str(added.home)}
    assert marker.exists()


def test_a_plugin_commands_own_help_and_exit_code(added: StoqRunner) -> None:
    helped = added("greet", "--help")
    failed = added("greet", "world", "--fail")

    assert helped.code == 0 and "Greet NAME as one JSON line." in helped.out
    assert failed.code == 1 and failed.json()["hello"] == "world"


def test_a_plugin_commands_cli_error_is_one_line(added: StoqRunner) -> None:
    assert one_line_error(added("greet", " ")) == "stoq: error: NAME must not be blank\n"


def test_a_plugin_commands_usage_error_is_one_line(added: StoqRunner) -> None:
    err = one_line_error(added("greet"))

    assert "Missing argument 'NAME'" in err and "stoq greet --help" in err


def test_a_bad_stoq_cfg_is_one_line_for_a_plugin_command(added: StoqRunner) -> None:
    added.home.mkdir()
    (added.home / "stoq.cfg").write_text("this is not ini\n")

    assert "is not a valid stoq.cfg" in one_line_error(added("greet", "world"))


def test_a_command_that_fails_to_import_is_one_line_and_the_rest_still_works(
    added: StoqRunner,
) -> None:
    err = one_line_error(added("broken"))

    assert err.startswith(
        "stoq: error: command 'broken' of stoq-plugin-commandtest 0.2.0 cannot be imported: "
        "ModuleNotFoundError: No module named 'stoq_no_such_dependency'"
    )
    assert added("greet", "world").code == 0
    assert added("--help").code == 0


def test_an_entry_point_that_is_not_a_click_command_is_one_line(added: StoqRunner) -> None:
    err = one_line_error(added("notacommand"))

    assert "command 'notacommand' of stoq-plugin-commandtest 0.2.0 is not a click command" in err


def test_two_distributions_publishing_one_command_is_a_clear_error(
    stoq: StoqRunner, command_site: Path, tmp_path: Path
) -> None:
    other = claim(tmp_path / "other", "stoq-plugin-othergreet", {"greet": "elsewhere:greet"})
    both = with_sites(stoq, command_site, other)

    err = one_line_error(both("greet", "world"))
    listing = both("--help")

    assert "command 'greet' is published by " in err
    assert "stoq-plugin-commandtest 0.2.0" in err and "stoq-plugin-othergreet 1.0" in err
    assert "uninstall all but one" in err
    listed = " ".join(listing.out.split("Plugin commands:")[1].split())  # unwrapped
    assert (
        "greet from stoq-plugin-commandtest 0.2.0, stoq-plugin-othergreet 1.0 (conflict: "
        "uninstall one)" in listed
    )
    assert both("broken", "--help").code == 2  # other commands are unaffected: still broken


def test_a_built_in_command_keeps_its_name(stoq: StoqRunner, tmp_path: Path) -> None:
    site = claim(tmp_path / "shadow", "stoq-plugin-shadow", {"scan": "nowhere:scan"})
    shadowed = with_sites(stoq, site)

    done = shadowed("scan", "--help")
    listing = shadowed("--help")

    assert done.code == 0 and "Scan files, directories or stdin" in done.out
    assert "stoq-plugin-shadow" not in listing.out


def test_an_unknown_command_is_one_line(stoq: StoqRunner) -> None:
    assert "No such command 'nosuch'" in one_line_error(stoq("nosuch"))


def test_the_index_carries_commands_beside_plugins(
    command_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stoq_core.testing import published

    index = tmp_path / "index.json"
    with published(command_site):
        _index.use_index_file(index)
        try:
            monkeypatch.setattr(_index, "_is_still", lambda fingerprint: True)
            commands = _index.command_entry_points()
            assert commands["greet"][0].value == "stoq_plugin_commandtest.greet:greet"
            assert "greet" not in _index.entry_points()  # a command is not a plugin
            saved = json.loads(index.read_text())
            assert saved["commands"]["greet"][0]["dist_name"] == "stoq-plugin-commandtest"
        finally:
            _index.use_index_file(None)


def code_words(path: Path) -> Iterator[tuple[int, str]]:
    """The strings (help texts included) and names of ``path``'s code; docstrings and
    comments, which may explain a plugin, are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.alias):
            yield node.lineno, node.name


def test_the_core_names_no_plugin_command() -> None:
    # The core's command line knows plugin commands only through their entry points: no help
    # text, default or import of the Redis plugin's (issue 14).
    mentions = [
        f"{path.relative_to(SRC)}:{line}: {word!r}"
        for path in sorted(SRC.rglob("*.py"))
        for line, word in code_words(path)
        if "redis" in word.lower()
    ]
    assert mentions == []


def test_the_help_kept_for_each_lazy_command_is_its_own() -> None:
    # `stoq --help` shows it without importing the command's module (pathlib, dataclasses...).
    import importlib

    from stoq_cli import main

    for name, (target, short_help) in main._LAZY_COMMANDS.items():
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert command.get_short_help_str(limit=len(short_help)) == short_help, name
