"""``stoq plugin``: commands for plugin authors, ``new``, ``check`` and ``info``.

Imported with the ``stoq`` group, so it imports only click here: the scaffold and the core are
imported by the command that runs.

``new`` writes a complete plugin distribution (``_scaffold``, from the templates under
``templates/plugin/``); ``check`` loads plugins exactly as a scan would (import, construct with
their options, register, validate the hooks) and says either what loaded or, in one line, why
not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError
from stoq_cli._params import (
    LOG_LEVELS,
    Invocation,
    parse_plugin_opts,
    plugin_dir_option,
    remember_log_level,
)
from stoq_core._printable import printable

if TYPE_CHECKING:
    from stoq_core import Option, PluginInfo, Stoq

__all__ = ["plugin_group"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

_NEW_EPILOG = """\
\b
Writes DIR/stoq-plugin-NAME/:
  pyproject.toml          hatchling; the stoq.plugins entry point NAME; the
                          stoq-core range of this core's major version
  src/stoq_plugin_NAME/   plugin.py (a commented, working example of each
                          hook), __init__.py, py.typed
  tests/                  tests that pass as generated, using the fixtures of
                          stoq_core.testing (pytest_plugins in conftest.py)
  README.md               install, use, options, develop, publish

\b
NAME is lowercase letters and digits, words joined by '-' or '_' ('pe_info'):
the plugin is 'pe_info' (stoq scan FILE -s pe_info), the distribution
'stoq-plugin-pe-info', the package 'stoq_plugin_pe_info'.

\b
Hooks (--hooks, comma-separated or repeated; 'all' for every one):
  ingest, get, get_dispatches, scan, archive, decorate, save
  and command (not a hook; not in 'all'): a 'stoq NAME' command of the
  plugin's own, in commands.py, with its stoq.commands entry point and tests

\b
Examples
  stoq plugin new pe_info
  stoq plugin new mailbox --hooks ingest,save --dir ~/src
  stoq plugin new peek --hooks scan,command
  cd stoq-plugin-pe-info && pip install -e '.[test]' && pytest
"""

_CHECK_EPILOG = """\
\b
Each NAME is loaded as 'stoq scan' would load it: from its entry point (or a
v3 plugin directory), constructed with its options (stoq.cfg's [NAME] section,
--plugin-opts), registered, its hooks validated. Prints 'NAME: ok (...)' or
'NAME: failed: <why>' per plugin; exits 1 if any failed. --log-level debug
adds the traceback.

\b
Examples
  stoq plugin check yara
  stoq plugin check yara --plugin-opts yara:worker_rules=/etc/stoq/rules
  stoq plugin check mything --log-level debug
"""


@click.group("plugin", context_settings=_CONTEXT)
def plugin_group() -> None:
    """Write and check plugins: 'new' scaffolds one, 'check' says why one does not load,
    'info' shows one's roles and options."""


@plugin_group.command(
    "new",
    context_settings=_CONTEXT,
    epilog=_NEW_EPILOG,
    short_help="Create stoq-plugin-NAME: code, tests and packaging.",
)
@click.argument("name")
@click.option(
    "--hooks",
    "hooks",
    multiple=True,
    metavar="HOOK[,HOOK...]",
    help="The hooks to implement, and 'command' for a command of its own [default: scan].",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    default=".",
    show_default="the current directory",
    help="Where to create stoq-plugin-NAME/.",
)
@click.option(
    "--description",
    metavar="TEXT",
    default="",
    help="One line for the package metadata and README [default: from the hooks].",
)
def new(name: str, hooks: tuple[str, ...], directory: Path, description: str) -> int:
    """Create a new plugin distribution, stoq-plugin-NAME, ready to test and publish."""
    from stoq_cli._scaffold import (
        Scaffold,
        ScaffoldError,
        core_requirement,
        installed_core_source,
        parse_hooks,
        parse_name,
        write_scaffold,
    )
    from stoq_core import __version__

    try:
        scaffold = Scaffold(
            name=parse_name(name),
            hooks=parse_hooks(hooks or ("scan",)),
            requirement=core_requirement(__version__),
            description=" ".join(description.split()).rstrip("."),
            # Where this stoq-core came from, so the README's steps work before it is on an index.
            core_source=installed_core_source(),
        )
        target = write_scaffold(scaffold, directory)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    # The folder's name may hold bytes that are not UTF-8 (--dir $'\xff'): shown escaped.
    shown = printable(str(target))
    click.echo(f"created {shown} ({scaffold.distribution}: {', '.join(scaffold.parts)})")
    click.echo(
        f"next: the steps under 'Develop' in {printable(str(target / 'README.md'))}", err=True
    )
    return EXIT_OK


@plugin_group.command(
    "check",
    context_settings=_CONTEXT,
    epilog=_CHECK_EPILOG,
    short_help="Load plugins as a scan would; say why one does not.",
)
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option(
    "--plugin-opts",
    "plugin_opts",
    multiple=True,
    callback=parse_plugin_opts,
    metavar="NAME:OPTION=VALUE",
    help="A plugin option, as for 'stoq scan'. Repeat for more.",
)
@plugin_dir_option("Also look in this directory of v3 plugins. Repeat for more.")
@click.option(
    "--config-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="The stoq.cfg to read [default: $STOQ_HOME/stoq.cfg, if it exists].",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    callback=remember_log_level,
    help="'debug' also prints the traceback of a plugin that fails to load.",
)
def check(
    names: tuple[str, ...],
    plugin_opts: Optional[dict[str, dict[str, str]]],
    plugin_dirs: tuple[str, ...],
    config_file: Optional[str],
    log_level: Optional[str],
) -> int:
    """Load plugins as a scan would and say whether each loads, and if not why."""
    from stoq_cli._home import EngineOptions, StoqHome, build_stoq

    options = EngineOptions.without_roles(
        plugin_opts=plugin_opts,
        plugin_dirs=plugin_dirs,
        config_file=config_file,
        log_level=log_level,
    )
    stoq = build_stoq(StoqHome.from_environment(), options, fresh=True)
    debug = Invocation.of(click.get_current_context()).debug
    failed = 0
    for name in dict.fromkeys(names):
        line, ok = _check_one(stoq, name, debug)
        click.echo(line)
        failed += not ok
    return EXIT_FAILED if failed else EXIT_OK


def _check_one(stoq: Stoq, name: str, debug: bool) -> tuple[str, bool]:
    """One plugin's verdict line, and whether it loaded (``debug``: print a failure's traceback)."""
    from stoq_core import StoqException
    from stoq_core.hookspecs import HOOK_NAMES

    try:
        stoq.load_plugin(name)
    except StoqException as exc:
        return _failure(name, exc, debug), False
    except Exception as exc:  # the core wraps plugin failures; anything else is a core bug
        return _failure(name, exc, debug, f"{type(exc).__name__}: "), False
    loaded = stoq.plugins.loaded[name]
    info: Optional[PluginInfo] = stoq.list_plugins().get(name)
    details = [f"version {info.version or '-'}" if info is not None else "version -"]
    if info is not None:
        details.append(f"{_kind(info)} {info.origin}")
    details.append("hooks " + ", ".join(hook for hook in HOOK_NAMES if hook in loaded.hooks))
    line = f"{name}: ok ({'; '.join(details)})"
    if info is not None and info.shadows:
        line += f"; note: {info.shadows}"
    return line, True


def _kind(info: PluginInfo) -> str:
    return "distribution" if info.kind == "entry point" else "plugin directory"


def _failure(name: str, exc: BaseException, debug: bool, prefix: str = "") -> str:
    if debug:
        import traceback  # only when a traceback is asked for: it costs ~15 ms to import

        traceback.print_exception(exc, file=sys.stderr)
    message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{name}: failed: {prefix}{message}"


_INFO_EPILOG = """\
\b
Shows where plugin NAME comes from (version, distribution or plugin directory),
its description, the roles it can play and the options it declares, each with
its type, default and help. Nothing is constructed: a plugin whose options are
missing still shows. Exits 1 if the plugin cannot load (the reason is shown).

\b
Examples
  stoq plugin info hash
  stoq plugin info carve --plugin-dir ./plugins
"""


@plugin_group.command(
    "info",
    context_settings=_CONTEXT,
    epilog=_INFO_EPILOG,
    short_help="Show a plugin's version, roles and options.",
)
@click.argument("name")
@plugin_dir_option("Also look in this directory of v3 plugins. Repeat for more.")
def info(name: str, plugin_dirs: tuple[str, ...]) -> int:
    """Show a plugin's version, description, roles and declared options."""
    from stoq_cli._home import EngineOptions, StoqHome, build_stoq
    from stoq_core import StoqException

    options = EngineOptions.without_roles(plugin_dirs=plugin_dirs)
    stoq = build_stoq(StoqHome.from_environment(), options, fresh=True)
    about = stoq.list_plugins().get(name)
    if about is None:
        raise stoq.plugins.not_found(name)
    lines = [f"{name} {about.version or '-'} ({_kind(about)} {about.origin})"]
    if about.description:
        lines.append(f"  {about.description}")
    if about.shadows:
        lines.append(f"  note: {about.shadows}")
    lines.append(f"roles: {_roles(about.hooks)}")
    error = about.error
    declared = None
    if error is None:
        try:
            declared = stoq.plugins.declared_options(name)
        except StoqException as exc:
            error = str(exc)
    if error is None:
        lines += _option_lines(name, declared)
    for line in lines:
        click.echo(line)
    if error is not None:
        click.echo(f"error: {' '.join(error.split())}")
        return EXIT_FAILED
    return EXIT_OK


def _roles(hooks: list[str]) -> str:
    from stoq_core.plugins import HOOK_ROLES

    roles = [f"{HOOK_ROLES[hook].name} ({hook})" for hook in hooks if hook in HOOK_ROLES]
    return ", ".join(roles) or "none"


def _option_lines(name: str, declared: Optional[Sequence[Option]]) -> list[str]:
    """The ``options`` part of ``plugin info``: one line per option, its help under it."""
    from stoq_core.options import CORE_OPTIONS

    core = ", ".join(option.name for option in CORE_OPTIONS)
    if declared is None:
        return [
            "options: not declared (any option is passed to the plugin unchecked; see its README)",
            f"  and the core's, for every plugin: {core}",
        ]
    if not declared:
        lines = ["options: none of its own"]
    else:
        lines = [f"options (--plugin-opts {name}:OPTION=VALUE, or [{name}] in stoq.cfg):"]
        width = max(len(option.name) for option in declared)
        for option in declared:
            default = _default_text(option)
            lines.append(f"  {option.name:<{width}}  {option.type.__name__:<5}  {default}")
            if option.help:
                lines.append(f"  {'':<{width}}  {option.help}")
    lines.append(f"  and the core's, for every plugin: {core}")
    return lines


def _default_text(option: Option) -> str:
    """The default as a user would write it in stoq.cfg: ``sha256, md5, sha1``, ``true``."""
    import json

    value = option.default
    if value is None:
        return "[no default]"
    if isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(item, str) and "," not in item for item in value
    ):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return f"[default: {', '.join(items)}]"
    if isinstance(value, bool):
        return f"[default: {'true' if value else 'false'}]"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"[default: {json.dumps(value)}]"
    return f"[default: {value}]" if value != "" else "[default: empty]"
