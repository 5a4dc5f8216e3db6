"""Meta-tests that keep the documentation honest (in the manner of datasette's).

Every hookspec appears in docs/writing-plugins.md with its exact signature and has a test of its
own named ``test_hook_<hook>``; every ``[core]`` key is documented with its default; every data
class, every command and option of ``stoq``, and the JSON's field order are in the docs; every
link between the docs resolves.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

import stoq_cli.commands
from stoq_cli.main import cli
from stoq_core import (
    Payload,
    PayloadMeta,
    Request,
    StoqResponse,
    _settings,
    data_classes,
    engine,
    hookspecs,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _spec_functions() -> dict[str, object]:
    """The functions pluggy takes as hookspecs: those the spec marker marked."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, marker)
    }


def _signature(name: str) -> str:
    parameters = inspect.signature(_spec_functions()[name]).parameters  # type: ignore[arg-type]
    return f"{name}({', '.join(parameters)})"


def test_hook_names_lists_every_hookspec() -> None:
    assert set(_spec_functions()) == set(hookspecs.HOOK_NAMES)


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_every_hook_is_documented_with_its_exact_signature(hook: str) -> None:
    signature = _signature(hook)

    assert f"### {signature}\n" in _text("writing-plugins.md"), (
        f"docs/writing-plugins.md has no section '### {signature}'"
    )


def _test_names() -> Iterator[str]:
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield node.name


def _hook_tested_by(test_name: str) -> str | None:
    """The hook a ``test_hook_<hook>[_more]`` test is for: the longest hook name that fits
    (``test_hook_get_dispatches`` is for get_dispatches, not get)."""
    rest = test_name.removeprefix("test_hook_")
    if rest == test_name:
        return None
    fitting = [h for h in hookspecs.HOOK_NAMES if rest == h or rest.startswith(f"{h}_")]
    return max(fitting, key=len, default=None)


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_every_hook_has_a_test_of_its_own(hook: str) -> None:
    tested = {_hook_tested_by(name) for name in _test_names()}

    assert hook in tested, f"no test under tests/ is named test_hook_{hook}"


def _core_rows() -> dict[str, str]:
    """The rows of the [core] table in docs/configuration.md: key -> default cell."""
    rows = {}
    for match in re.finditer(r"^\| `(\w+)` \| ([^|]*) \|", _text("configuration.md"), re.M):
        rows[match.group(1)] = match.group(2).strip()
    return rows


def _default_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("key", sorted(_settings.DEFAULTS))
def test_every_core_key_is_documented_with_its_default(key: str) -> None:
    rows = _core_rows()

    assert key in rows, f"docs/configuration.md has no row for [core] {key}"
    documented = re.match(r"`([^`]*)`", rows[key])
    assert documented is not None, f"[core] {key}: the default cell {rows[key]!r} has no `value`"
    assert documented.group(1) == _default_text(_settings.DEFAULTS[key])


@pytest.mark.parametrize("key", [*sorted(engine.ROLE_HOOKS), "log_dir", "plugin_dir_list"])
def test_every_core_plugin_list_and_path_is_documented(key: str) -> None:
    assert key in _core_rows(), f"docs/configuration.md has no row for [core] {key}"


@pytest.mark.parametrize("name", data_classes.__all__)
def test_every_data_class_has_a_section(name: str) -> None:
    assert f"\n## {name}\n" in _text("data-model.md")


def _documented_json() -> dict[str, Any]:
    block = re.search(r"```json\n(.*?)```", _text("data-model.md"), re.S)
    assert block is not None, "docs/data-model.md has no JSON example"
    parsed: dict[str, Any] = json.loads(block.group(1))
    return parsed


def test_the_documented_json_has_the_responses_field_order() -> None:
    meta = PayloadMeta(extra_data={"filename": "hello.txt"})
    real = StoqResponse(Request([Payload(b"hello", meta)])).to_dict()
    documented = _documented_json()

    assert list(documented) == list(real)
    [result] = documented["results"]
    assert list(result) == list(real["results"][0])
    assert list(result["payload_meta"]) == list(real["results"][0]["payload_meta"])
    assert list(documented["request_meta"]) == list(real["request_meta"])


def _commands(group: click.Group, path: str) -> Iterator[tuple[str, click.Command]]:
    # Through list_commands/get_command, as --help does: some commands are imported on demand.
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{path} {name}"
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")


def _cli_cases() -> list[tuple[str, str]]:
    cases = []
    for path, command in _commands(cli, "stoq"):
        if isinstance(command, click.Group):
            continue
        cases.append((path, ""))
        for param in command.params:
            if isinstance(param, click.Option) and "--help" not in param.opts:
                cases.append((path, max(param.opts, key=len)))
    return cases


@pytest.mark.parametrize(("command", "option"), _cli_cases())
def test_every_command_and_option_is_in_the_cli_docs(command: str, option: str) -> None:
    text = _text("cli.md")
    section = re.search(rf"^## {re.escape(command)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)

    assert section is not None, f"docs/cli.md has no section '## {command}'"
    if option:
        mentioned = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section.group(1))
        assert mentioned, f"docs/cli.md: the section on {command} does not mention {option}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _links() -> Iterator[tuple[str, str]]:
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+:", target):
                yield page.name, target


@pytest.mark.parametrize(("page", "target"), list(_links()))
def test_every_link_between_the_docs_resolves(page: str, target: str) -> None:
    file, _, anchor = target.partition("#")
    path = (DOCS / page) if not file else (DOCS / file).resolve()

    assert path.is_file(), f"docs/{page} links to {target}, which does not exist"
    if anchor and path.suffix == ".md":
        headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
        assert anchor in {_slug(h) for h in headings}, f"docs/{page}: no heading for #{anchor}"


def test_the_docs_index_links_every_page_and_the_v3_migration_guide() -> None:
    index = _text("README.md")
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")

    assert "migrating.md" in pages
    for page in pages:
        assert f"]({page})" in index, f"docs/README.md does not link {page}"


def _adding_a_command() -> str:
    section = re.search(
        r"^## Adding a command\n(.*?)(?=^## |\Z)", _text("writing-plugins.md"), re.M | re.S
    )
    assert section is not None, "docs/writing-plugins.md has no section '## Adding a command'"
    return section.group(1)


@pytest.mark.parametrize("name", stoq_cli.commands.__all__)
def test_every_name_command_authors_get_is_in_adding_a_command(name: str) -> None:
    assert re.search(rf"`{re.escape(name)}[(`]", _adding_a_command()), (
        f"docs/writing-plugins.md, 'Adding a command', does not describe stoq_cli.commands.{name}"
    )


def test_adding_a_command_names_the_entry_point_group() -> None:
    from stoq_core._index import COMMAND_ENTRY_POINT_GROUP

    assert f'[project.entry-points."{COMMAND_ENTRY_POINT_GROUP}"]' in _adding_a_command()
