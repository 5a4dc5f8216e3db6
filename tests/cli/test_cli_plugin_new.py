"""``stoq plugin new``: a new plugin distribution that installs, passes its own tests and scans.

The quick tests run the generated tests in a child process that sees the generated package on
``PYTHONPATH`` and its entry point through a ``.dist-info`` beside it (what pip would write).
The slow test does what an author does: build, install into a fresh venv with the core built
from this checkout, run the plugin's tests there, and ``stoq scan`` with it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import tomllib
from cli_support import StoqRunner

import stoq_core
from stoq_cli import _scaffold
from stoq_cli._scaffold import (
    BUILTIN_COMMANDS,
    HOOK_ORDER,
    PARTS,
    Scaffold,
    ScaffoldError,
    core_requirement,
    core_source,
    parse_hooks,
    render,
    write_scaffold,
)
from stoq_core.hookspecs import HOOK_NAMES

ROOT = Path(__file__).resolve().parents[2]
MAJOR = int(stoq_core.__version__.split(".")[0])

RUN_TIMEOUT = 120


def _project(stoq: StoqRunner, name: str) -> Path:
    return stoq.cwd / f"stoq-plugin-{name.replace('_', '-')}"


def _new(stoq: StoqRunner, name: str, *args: str) -> Path:
    done = stoq("plugin", "new", name, *args)
    assert done.code == 0, done.err
    return _project(stoq, name)


def _pyproject(project: Path) -> dict[str, Any]:
    with open(project / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "STOQ_HOME", "STOQ_DEBUG")
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _publish(project: Path, site: Path) -> None:
    """Write the project's ``.dist-info`` (entry points included) under ``site``, as pip would."""
    meta = _pyproject(project)["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    groups = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in meta["entry-points"].items()
    )
    (info / "entry_points.txt").write_text(groups)


def _run_generated_tests(project: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    site = tmp_path / f"site-{project.name}"
    _publish(project, site)
    env = _clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(project / "src")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


# -- what is written -----------------------------------------------------------------------


def test_new_writes_a_hatchling_project_with_the_entry_point_and_this_cores_range(
    stoq: StoqRunner,
) -> None:
    project = _new(stoq, "nulcount")

    meta = _pyproject(project)
    assert meta["build-system"]["build-backend"] == "hatchling.build"
    assert meta["project"]["name"] == "stoq-plugin-nulcount"
    assert meta["project"]["dependencies"] == [f"stoq-core>={MAJOR},<{MAJOR + 1}"]
    assert meta["project"]["entry-points"]["stoq.plugins"] == {
        "nulcount": "stoq_plugin_nulcount.plugin:NulcountPlugin"
    }
    assert meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "src/stoq_plugin_nulcount"
    ]


def test_new_writes_the_package_tests_readme_and_py_typed(stoq: StoqRunner) -> None:
    project = _new(stoq, "nulcount")

    package = project / "src" / "stoq_plugin_nulcount"
    assert (package / "py.typed").is_file()
    assert "NulcountPlugin" in (package / "__init__.py").read_text()
    assert 'pytest_plugins = ["stoq_core.testing"]' in (project / "tests/conftest.py").read_text()
    assert (project / "tests" / "test_plugin.py").is_file()
    readme = (project / "README.md").read_text()
    assert readme.startswith("# stoq-plugin-nulcount\n")
    assert "stoq scan FILE -s nulcount" in readme


def test_new_writes_a_license_a_gitignore_with_the_venv_and_a_ci_workflow(
    stoq: StoqRunner,
) -> None:
    project = _new(stoq, "nulcount")

    assert (project / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert _pyproject(project)["project"]["license"] == "Apache-2.0"
    assert _pyproject(project)["project"]["license-files"] == ["LICENSE"]
    # The README's first step makes .venv in the project folder.
    assert ".venv/" in (project / ".gitignore").read_text().splitlines()
    workflow = (project / ".github" / "workflows" / "test.yml").read_text()
    assert "on: [push, pull_request]" in workflow
    assert "      - run: python -m pip install -e '.[test]'\n" in workflow
    assert "      - run: python -m pytest\n" in workflow
    assert "python-version: ${{ matrix.python-version }}" in workflow


def _develop_block(project: Path) -> list[str]:
    readme = (project / "README.md").read_text()
    develop = readme.split("\n## Develop\n", 1)[1].split("\n### ", 1)[0]
    return [line[4:] for line in develop.splitlines() if line.startswith("    ")]


def test_new_writes_the_step_that_installs_this_core_from_where_it_came(
    stoq: StoqRunner,
) -> None:
    # The stoq under test runs this interpreter's stoq-core: an editable install of this
    # checkout in the dev venv and in nox (its direct_url.json names the folder).
    source = _scaffold.installed_core_source()
    project = _new(stoq, "nulcount")

    steps = _develop_block(project)

    if source:
        assert steps[1:] == [f"pip install {shlex.quote(source)}", "pip install -e '.[test]'"]
    else:
        assert steps[1:] == ["pip install -e '.[test]'"]


def test_a_core_from_a_path_is_installed_first_and_quoted_for_the_shell(tmp_path: Path) -> None:
    core = tmp_path / "my clone"
    scaffold = Scaffold(name="nulcount", hooks=("scan",), requirement="stoq-core>=4,<5",
                        core_source=str(core))  # fmt: skip

    project = write_scaffold(scaffold, tmp_path)

    assert _develop_block(project) == [
        "python -m venv .venv && . .venv/bin/activate",
        f"pip install '{core}'",
        "pip install -e '.[test]'",
    ]
    assert "stoq-core is installed first" in (project / "README.md").read_text()


def test_a_core_from_the_index_needs_no_step_of_its_own(tmp_path: Path) -> None:
    scaffold = Scaffold(name="nulcount", hooks=("scan",), requirement="stoq-core>=4,<5")

    project = write_scaffold(scaffold, tmp_path)

    assert _develop_block(project) == [
        "python -m venv .venv && . .venv/bin/activate",
        "pip install -e '.[test]'",
    ]
    assert "stoq-core comes from the package index" in (project / "README.md").read_text()


def test_core_source_is_a_local_folder_or_wheel_while_it_exists(tmp_path: Path) -> None:
    wheel = tmp_path / "stoq_core-4.0.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    folder = tmp_path / "a clone"
    folder.mkdir()
    url = folder.as_uri()

    assert core_source(json.dumps({"url": url, "dir_info": {"editable": True}})) == str(folder)
    assert core_source(json.dumps({"url": url, "dir_info": {}})) == str(folder)
    assert core_source(json.dumps({"url": wheel.as_uri(), "archive_info": {}})) == str(wheel)
    gone = (tmp_path / "gone.whl").as_uri()
    assert core_source(json.dumps({"url": gone, "archive_info": {}})) == ""


def test_core_source_pins_a_version_control_checkout_and_keeps_a_remote_archive() -> None:
    vcs = {"url": "https://example.org/stoq.git", "vcs_info": {"vcs": "git", "commit_id": "ab12"}}
    remote = {"url": "https://example.org/stoq_core-4.0.0.tar.gz", "archive_info": {}}

    assert core_source(json.dumps(vcs)) == "stoq-core @ git+https://example.org/stoq.git@ab12"
    assert core_source(json.dumps(remote)) == (
        "stoq-core @ https://example.org/stoq_core-4.0.0.tar.gz"
    )


@pytest.mark.parametrize("direct_url", [None, "", "not json", "[]", '{"dir_info": {}}'])
def test_core_source_of_an_index_install_or_unreadable_metadata_is_empty(
    direct_url: str | None,
) -> None:
    assert core_source(direct_url) == ""


def test_new_without_hooks_writes_a_worker(stoq: StoqRunner) -> None:
    project = _new(stoq, "nulcount")

    plugin = (project / "src" / "stoq_plugin_nulcount" / "plugin.py").read_text()
    defined = re.findall(r"^    (?:async )?def (\w+)\(", plugin, re.MULTILINE)
    assert defined == ["__init__", "scan"]


def test_new_writes_an_async_hookimpl_example_reading_an_option(stoq: StoqRunner) -> None:
    project = _new(stoq, "nulcount", "--hooks", "scan")

    plugin = (project / "src" / "stoq_plugin_nulcount" / "plugin.py").read_text()
    assert "    @hookimpl\n    async def scan(self, payload: Payload, request: Request)" in plugin
    # Declared with its type and default (stoq_core.Option), read through the typed getter.
    assert 'Option("preview_bytes", int, default=16, ' in plugin
    assert 'config.getint("options", "preview_bytes")' in plugin


def test_new_writes_one_example_per_chosen_hook_in_scan_order(stoq: StoqRunner) -> None:
    project = _new(stoq, "both", "--hooks", "save,scan", "--hooks", "get_dispatches")

    plugin = (project / "src" / "stoq_plugin_both" / "plugin.py").read_text()
    marked = re.findall(r"@hookimpl\n    (?:async )?def (\w+)\(", plugin)
    assert marked == ["get_dispatches", "scan", "save"]


def test_new_maps_a_hyphenated_name_to_its_distribution_and_package(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "pe-info")

    assert done.code == 0, done.err
    project = stoq.cwd / "stoq-plugin-pe-info"
    assert (project / "src" / "stoq_plugin_pe_info" / "plugin.py").is_file()
    points = _pyproject(project)["project"]["entry-points"]["stoq.plugins"]
    assert points == {"pe-info": "stoq_plugin_pe_info.plugin:PeInfoPlugin"}


def test_new_takes_the_distribution_name_for_the_plugin_name(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "stoq-plugin-pe_info")

    assert done.code == 0, done.err
    points = _pyproject(stoq.cwd / "stoq-plugin-pe-info")["project"]["entry-points"]
    assert list(points["stoq.plugins"]) == ["pe_info"]


def test_new_writes_into_the_dir_option_creating_it(stoq: StoqRunner, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "deeper"

    done = stoq("plugin", "new", "nulcount", "--dir", str(target))

    assert done.code == 0, done.err
    assert (target / "stoq-plugin-nulcount" / "pyproject.toml").is_file()
    assert str(target / "stoq-plugin-nulcount") in done.out
    assert not list(stoq.cwd.iterdir())


def test_new_leaves_no_staging_directory_behind(stoq: StoqRunner) -> None:
    _new(stoq, "nulcount")

    assert [p.name for p in stoq.cwd.iterdir()] == ["stoq-plugin-nulcount"]


def test_new_with_the_command_part_writes_a_command_its_entry_point_and_tests(
    stoq: StoqRunner,
) -> None:
    project = _new(stoq, "nulcount", "--hooks", "command,scan")

    meta = _pyproject(project)["project"]
    assert meta["entry-points"]["stoq.commands"] == {
        "nulcount": "stoq_plugin_nulcount.commands:preview"
    }
    assert "click>=8.1" in meta["dependencies"]
    commands = (project / "src" / "stoq_plugin_nulcount" / "commands.py").read_text()
    assert "from stoq_cli.commands import (" in commands
    assert "config_section(SECTION)" in commands and 'SECTION = "nulcount"' in commands
    assert "raise CliError(" in commands
    assert (project / "tests" / "test_commands.py").is_file()
    assert "## Its command\n\n    stoq nulcount FILE..." in (project / "README.md").read_text()


def test_the_command_part_is_not_a_hook_of_the_plugin() -> None:
    requirement = core_requirement(stoq_core.__version__)
    alone = Scaffold(name="nulcount", hooks=("scan",), requirement=requirement).files()
    both = Scaffold(name="nulcount", hooks=("scan", "command"), requirement=requirement).files()

    # The plugin and its tests (info.hooks == ["scan"]) are those of the hooks alone.
    for path in ("src/stoq_plugin_nulcount/plugin.py", "tests/test_plugin.py"):
        assert both[path] == alone[path]
    assert "hooks `scan`, and needs" in both["README.md"]


def test_new_without_the_command_part_writes_no_command(stoq: StoqRunner) -> None:
    project = _new(stoq, "nulcount", "--hooks", "all")

    meta = _pyproject(project)["project"]
    assert list(meta["entry-points"]) == ["stoq.plugins"]
    assert meta["dependencies"] == [f"stoq-core>={MAJOR},<{MAJOR + 1}"]
    assert not (project / "src" / "stoq_plugin_nulcount" / "commands.py").exists()
    assert not (project / "tests" / "test_commands.py").exists()
    assert "stoq nulcount" not in (project / "README.md").read_text()


def test_parse_hooks_puts_the_command_after_the_hooks_and_all_leaves_it_out() -> None:
    assert parse_hooks(["command,save", "scan"]) == ("scan", "save", "command")
    assert parse_hooks(["all"]) == HOOK_ORDER
    assert parse_hooks(["all,command"]) == (*HOOK_ORDER, "command")


def test_parse_hooks_suggests_the_command_part_and_lists_it_as_valid() -> None:
    with pytest.raises(ScaffoldError) as raised:
        parse_hooks(["scan,comand"])

    assert str(raised.value).startswith("unknown hook 'comand'; did you mean 'command'?")
    assert str(raised.value).endswith("or all; and command)")


def test_a_scaffold_sorts_the_parts_it_is_given_into_hooks_and_extras() -> None:
    scaffold = Scaffold(name="x", hooks=("command", "save", "scan"), requirement="stoq-core")

    assert scaffold.hooks == ("scan", "save")
    assert scaffold.extras == ("command",)
    assert scaffold.parts == ("scan", "save", "command")


def test_new_refuses_a_command_without_a_hook_in_one_line(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "nulcount", "--hooks", "command")

    assert done.code == 2
    [line] = done.err.strip().splitlines()
    assert line.startswith("stoq: error: no hook given: command belongs to a plugin")
    assert "--hooks scan,command" in line
    assert not list(stoq.cwd.iterdir())


def test_new_refuses_a_command_named_as_a_builtin_command(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "scan", "--hooks", "scan,command")

    assert done.code == 2
    [line] = done.err.strip().splitlines()
    assert line.startswith("stoq: error: a plugin named 'scan' cannot add a command")
    assert not list(stoq.cwd.iterdir())
    # Without a command the name is free: 'stoq scan FILE -s scan' is unambiguous.
    assert stoq("plugin", "new", "scan").code == 0


def test_the_scaffold_knows_the_builtin_commands() -> None:
    import click

    from stoq_cli.main import cli

    builtin = cli._builtin_names(click.Context(cli))  # type: ignore[attr-defined]
    assert set(BUILTIN_COMMANDS) == builtin
    with pytest.raises(ScaffoldError):
        Scaffold(name="plugin", hooks=("scan", "command"), requirement="stoq-core")


def test_the_scaffold_knows_every_hook_in_the_cores_order() -> None:
    from stoq_cli._scaffold import HOOK_ORDER

    assert HOOK_ORDER == HOOK_NAMES


def test_the_help_of_new_lists_every_hook(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "--help")

    assert done.code == 0
    assert ", ".join(HOOK_NAMES) in done.out


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad", "has space", "9lives", "a__b", "trailing-", "é", ""])
def test_new_refuses_an_invalid_name_in_one_line(stoq: StoqRunner, name: str) -> None:
    done = stoq("plugin", "new", name)

    assert done.code == 2
    assert done.err.startswith("stoq: error: plugin name")
    assert len(done.err.strip().splitlines()) == 1
    assert not list(stoq.cwd.iterdir())


def test_new_suggests_the_lowercase_name(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "PeInfo")

    assert done.code == 2
    assert "did you mean 'peinfo'?" in done.err


def test_new_refuses_an_unknown_hook_listing_the_valid_ones(stoq: StoqRunner) -> None:
    done = stoq("plugin", "new", "nulcount", "--hooks", "scan,scann")

    assert done.code == 2
    [line] = done.err.strip().splitlines()
    assert line.startswith("stoq: error: unknown hook 'scann'; did you mean 'scan'?")
    for hook in HOOK_NAMES:
        assert hook in line
    assert not list(stoq.cwd.iterdir())


def test_new_refuses_an_existing_directory_and_leaves_it_alone(stoq: StoqRunner) -> None:
    existing = stoq.cwd / "stoq-plugin-nulcount"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep")

    done = stoq("plugin", "new", "nulcount")

    assert done.code == 2
    [line] = done.err.strip().splitlines()
    assert line.startswith("stoq: error: ") and "already exists" in line
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
    assert [p.name for p in stoq.cwd.iterdir()] == ["stoq-plugin-nulcount"]


def test_new_refuses_a_dir_option_that_is_a_file(stoq: StoqRunner) -> None:
    (stoq.cwd / "afile").write_text("x")

    done = stoq("plugin", "new", "nulcount", "--dir", "afile")

    assert done.code == 2
    assert done.err.startswith("stoq: error: ")
    assert len(done.err.strip().splitlines()) == 1


# -- the generated tests pass ------------------------------------------------------------------


def test_the_generated_tests_of_a_plugin_with_every_hook_and_a_command_pass(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    project = _new(stoq, "everything", "--hooks", "all,command")

    result = _run_generated_tests(project, tmp_path)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # One test per hook at least, plus the entry-point test; and the command's, through stoq.
    passed = re.findall(r"^tests/(test_\w+)\.py::\w+ PASSED", result.stdout, re.MULTILINE)
    assert passed.count("test_plugin") >= len(HOOK_NAMES) + 1
    assert passed.count("test_commands") == 4


# A child pytest per plugin costs seconds; the plugin with every hook covers the examples
# in the quick run, and the ruff test each one-hook module's imports.
@pytest.mark.slow
@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_the_generated_tests_of_a_plugin_with_one_hook_pass(
    stoq: StoqRunner, tmp_path: Path, hook: str
) -> None:
    project = _new(stoq, f"only_{hook}", "--hooks", hook)

    result = _run_generated_tests(project, tmp_path)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    plugin = (project / "src" / f"stoq_plugin_only_{hook}" / "plugin.py").read_text()
    assert re.findall(r"@hookimpl\n    (?:async )?def (\w+)\(", plugin) == [hook]


# ruff and mypy come with the test extra (pyproject.toml), so these run wherever the tests do.
_RUFF_RULES = "E,F,W,I,B,UP,RUF"


def _tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_the_generated_code_passes_ruff_with_its_default_settings(stoq: StoqRunner) -> None:
    _new(stoq, "everything", "--hooks", "all,command")
    # Every other subset of the parts with a hook in it, written in-process (253 child
    # processes would take long), and each part alone (command with scan) under a name of
    # the longest length allowed.
    for size in range(1, len(PARTS)):
        for parts in itertools.combinations(PARTS, size):
            if set(parts) & set(HOOK_ORDER):
                _write(stoq.cwd, "x_" + "_".join(parts), parts)
    for hook in HOOK_ORDER:
        _write(stoq.cwd, hook[0] * (60 - len(hook) - 1) + "_" + hook, (hook,))
    _write(stoq.cwd, "c" * 52 + "_command", ("scan", "command"))

    checked = _tool(
        "ruff", "check", "--isolated", "--select", _RUFF_RULES, "--target-version", "py310",
        "--no-cache", ".", cwd=stoq.cwd,
    )  # fmt: skip
    formatted = _tool(
        "ruff", "format", "--isolated", "--no-cache", "--check", "--diff", ".", cwd=stoq.cwd
    )

    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert formatted.returncode == 0, formatted.stdout[-4000:] + formatted.stderr[-2000:]


# Every hook and the command (commands.py and its tests do not vary with the hooks), and the
# hook whose module imports least.
@pytest.mark.parametrize("hooks", ["all,command", "decorate"])
def test_the_generated_package_and_tests_pass_mypy_strict(
    stoq: StoqRunner, tmp_path: Path, hooks: str
) -> None:
    project = _new(stoq, "everything", "--hooks", hooks)

    # The package ships py.typed, so its users type-check against it: strict, tests included.
    checked = _tool(
        "mypy", "--strict", "--python-version", "3.10", "--cache-dir", str(tmp_path / "cache"),
        "src", "tests", cwd=project,
    )  # fmt: skip

    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert "Success: no issues found" in checked.stdout


def _write(parent: Path, name: str, hooks: tuple[str, ...]) -> Path:
    # Scaffold takes what parse_hooks gives, extras included.
    scaffold = Scaffold(name=name, hooks=hooks, requirement=core_requirement(stoq_core.__version__))
    return write_scaffold(scaffold, parent)


# -- the templates ---------------------------------------------------------------------------


def test_every_template_file_is_rendered_into_the_project() -> None:
    shipped = resources.files("stoq_cli") / "templates" / "plugin"
    found = sorted(_template_files(shipped))

    assert found == sorted(template for template, _, _ in _scaffold._FILES)


def _template_files(folder: Any, prefix: str = "") -> list[str]:
    names: list[str] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            names += _template_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".tmpl"):
            names.append(prefix + entry.name)
    return names


_TEMPLATE = """\
head $name
import os  #% if scan save
#% if get
get only
#% else
not get
#% end
$$STOQ_HOME
"""


def test_render_keeps_the_lines_and_blocks_of_the_chosen_hooks() -> None:
    assert render(_TEMPLATE, ("scan",), {"name": "x"}) == "head x\nimport os\nnot get\n$STOQ_HOME\n"
    assert render(_TEMPLATE, ("get",), {"name": "x"}) == "head x\nget only\n$STOQ_HOME\n"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("a  #% if scann\n", "'#% if' needs names from ingest"),
        ("#% if\nx\n#% end\n", "'#% if' needs names from ingest"),
        ("#% else\n", "'#% else' without its '#% if'"),
        ("#% end\n", "'#% end' without its '#% if'"),
        ("#% if scan\nx\n", "never ended"),
        ("$missing\n", "cannot fill in 'missing'"),
    ],
)
def test_render_names_the_template_and_line_of_a_mistake(template: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        render(template, ("scan",), {}, name="t.tmpl")

    assert str(raised.value).startswith("t.tmpl")
    assert problem in str(raised.value)


# -- the generated archiver and connector are safe to copy (issue 12) -----------------------
#
# They used to default to fixed names in the shared temporary directory and to write through
# whatever was at those names: another local user's link made them overwrite a file of that
# user's choosing with bytes of that user's choosing (the payload), as whoever ran stoq.


def _with_plugin(stoq: StoqRunner, project: Path, tmp_path: Path) -> dict[str, str]:
    """``stoq``'s environment with the generated plugin installed, as pip would."""
    site = tmp_path / f"site-{project.name}"
    _publish(project, site)
    env = dict(stoq.env)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(project / "src"), env["PYTHONPATH"]])
    return env


def _run_stoq(
    stoq: StoqRunner, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        stoq.command(*args),
        cwd=stoq.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_a_generated_command_is_a_stoq_command_once_installed(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    project = _new(stoq, "peek", "--hooks", "scan,command")
    env = _with_plugin(stoq, project, tmp_path)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"\x00\x01\x02\x03\x04")
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[peek]\npreview_bytes = 3\n")

    listed = _run_stoq(stoq, env, "--help")
    done = _run_stoq(stoq, env, "peek", str(sample))
    (stoq.home / "stoq.cfg").write_text("[peek]\npreview_bytes = -3\n")
    refused = _run_stoq(stoq, env, "peek", str(sample))

    assert "peek" in listed.stdout.split("Plugin commands:")[1]
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"path": str(sample), "preview": "000102"}
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "stoq: error: preview_bytes in the [peek] section of stoq.cfg must be a whole "
        "number of bytes, not '-3'"
    ]


def test_a_generated_archiver_and_connector_keep_their_files_in_stoq_home(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    project = _new(stoq, "keeper", "--hooks", "archive,save")
    env = _with_plugin(stoq, project, tmp_path)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"sample bytes")

    done = _run_stoq(stoq, env, "scan", str(sample), "-A", "keeper", "-C", "keeper")

    assert done.returncode == 0, done.stderr
    sha256 = hashlib.sha256(b"sample bytes").hexdigest()
    archived = stoq.home / "archive" / "keeper" / sha256
    assert archived.read_bytes() == b"sample bytes"
    [saved] = (stoq.home / "results" / "keeper").iterdir()
    response = json.loads(saved.read_text())
    assert response["results"][0]["archivers"]["keeper"]["path"] == str(archived)
    # Readable by the user alone: payloads may be malware, or someone's documents.
    for path in (archived, saved):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("target_exists", [False, True], ids=["dangling link", "link to a file"])
def test_a_generated_archiver_never_writes_through_a_link_another_user_planted(
    stoq: StoqRunner, tmp_path: Path, target_exists: bool
) -> None:
    project = _new(stoq, "keeper", "--hooks", "archive")
    env = _with_plugin(stoq, project, tmp_path)
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"bytes the attacker chose")
    # An archive directory anyone may write to, as the temporary directory is.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim.conf"
    if target_exists:
        victim.write_bytes(b"precious")
    planted = shared / hashlib.sha256(b"bytes the attacker chose").hexdigest()
    planted.symlink_to(victim)

    done = _run_stoq(
        stoq, env, "scan", str(sample), "-A", "keeper",
        "--plugin-opts", f"keeper:archive_dir={shared}",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    if target_exists:
        assert victim.read_bytes() == b"precious"
    else:
        assert not victim.exists()
    # The archive holds the payload itself, in place of the link.
    assert not planted.is_symlink()
    assert planted.read_bytes() == b"bytes the attacker chose"
    archived = json.loads(done.stdout)["results"][0]["archivers"]["keeper"]
    assert archived["path"] == str(planted)


_GET = """
import json, sys
from stoq_core import ArchiverResponse, Stoq
from stoq_core.testing import call_hook

base_dir, archive_dir, sha256 = sys.argv[1:]
options = {"keeper": {"archive_dir": archive_dir}}
stoq = Stoq(base_dir=base_dir, log_dir=None, plugin_dir_list=[], plugin_opts=options)
outcome = call_hook(stoq, "keeper", "get", ArchiverResponse({"sha256": sha256}))
content = None if outcome.value is None else outcome.value.content.decode()
print(json.dumps({"content": content, "errors": [e.error for e in outcome.errors]}))
"""


def test_a_generated_source_archiver_never_reads_through_a_link(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    project = _new(stoq, "keeper", "--hooks", "get")
    env = _with_plugin(stoq, project, tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"another user's secret")
    archive = tmp_path / "archive"
    archive.mkdir()
    sha256 = hashlib.sha256(b"what the task asks for").hexdigest()
    (archive / sha256).symlink_to(secret)

    done = subprocess.run(
        [sys.executable, "-c", _GET, str(tmp_path), str(archive), sha256],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["content"] is None
    [error] = outcome["errors"]
    assert f"{archive / sha256} is a symbolic link" in error


# -- end to end: a fresh virtual environment -------------------------------------------------


def _run(args: list[Any], cwd: Path, timeout: int, **env: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env={**_clean_env(), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout}s: {' '.join(map(str, args))}")
    if result.returncode != 0:
        pytest.fail(
            f"exit {result.returncode}: {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def _build_wheel(source: Path, outdir: Path) -> Path:
    before = set(outdir.glob("*.whl"))
    # Offline and fast when hatchling is already here; else build fetches it in isolation.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    _run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", outdir, source],
        outdir,
        300,
    )
    [wheel] = set(outdir.glob("*.whl")) - before
    return wheel


#: The README's sections whose steps the end-to-end test runs, in order; Publish (an upload)
#: is the one it leaves out.
_README_STEPS = ("Develop", "Test", "Build", "Install the build")


def _readme_steps(readme: str) -> dict[str, list[str]]:
    """The shell lines of each subsection of the README's "Develop" section, by heading."""
    develop = readme.split("\n## Develop\n", 1)[1].split("\n## ", 1)[0]
    steps: dict[str, list[str]] = {"Develop": []}
    heading = "Develop"
    for line in develop.splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
            steps[heading] = []
        elif line.startswith("    ") and line.strip():
            steps[heading].append(line[4:])
    return steps


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_generated_readmes_develop_test_build_and_install_steps_work_as_written(
    stoq: StoqRunner, tmp_path: Path
) -> None:
    # stoq-core as a user has it before it is on the package index: a wheel built from a clone.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    core = _build_wheel(ROOT, wheels)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, 120)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", core], tmp_path, 600)
    # Written by the installed core: its wheel must carry the templates.
    home = tmp_path / "home"
    new = [venv / "bin" / "stoq", "plugin", "new", "everything", "--hooks", "all,command"]
    _run(new, stoq.cwd, 120, STOQ_HOME=str(home))
    project = _project(stoq, "everything")
    steps = _readme_steps((project / "README.md").read_text())
    assert list(steps) == [*_README_STEPS, "Publish"]
    # The README names the very wheel this stoq-core was installed from.
    assert f"pip install {core}" in steps["Develop"]

    # Run as written, one shell, in order, from the project folder; the only Python on PATH
    # is a bare interpreter (no stoq, no pytest), so every tool comes from the steps.
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    (bare / "python").symlink_to(os.path.realpath(sys.executable))
    script = "\n".join(["set -euxo pipefail", *(s for h in _README_STEPS for s in steps[h])])
    done = _run(
        ["bash", "-c", script], project, 1500, PATH=f"{bare}:/usr/bin:/bin", STOQ_HOME=str(home)
    )
    assert re.search(r"^=+ \d+ passed in ", done.stdout, re.MULTILINE), done.stdout[-3000:]
    assert " failed" not in done.stdout
    assert re.search(r"Checking dist/\S+\.whl: \S*PASSED", done.stdout)  # twine check
    assert "everything: ok" in done.stdout  # stoq plugin check, from the wheel

    # What "Install the build" left in .venv is the wheel, not the editable install.
    dev = project / ".venv"
    [info] = dev.glob("lib/python*/site-packages/stoq_plugin_everything-0.1.0.dist-info")
    assert "archive_info" in json.loads((info / "direct_url.json").read_text())
    [license_file] = (info / "licenses").glob("LICENSE")
    assert license_file.read_text() == (ROOT / "LICENSE").read_text()

    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"hello from a new plugin")
    scanned = _run(
        [dev / "bin" / "stoq", "scan", sample, "-s", "everything", "--format", "json"],
        tmp_path,
        120,
        STOQ_HOME=str(home),
    )
    response = json.loads(scanned.stdout)
    assert response["errors"] == []
    assert response["results"][0]["workers"]["everything"] == {
        "size": len(b"hello from a new plugin"),
        "preview": b"hello from a new plugin"[:16].hex(),
        "filename": "sample.txt",
    }
    # The plugin's own command, through the entry point the wheel installed.
    command = _run([dev / "bin" / "stoq", "everything", sample], tmp_path, 120, STOQ_HOME=str(home))
    assert json.loads(command.stdout) == {
        "path": str(sample),
        "preview": b"hello from a new plugin"[:16].hex(),
    }
