"""``stoq plugin``: commands for plugin authors, ``new`` and ``check``.

Imported with the ``stoq`` group, so it imports only click here: the scaffold and the core are
imported by the command that runs.

``new`` writes a complete plugin distribution (``_scaffold``, from the templates under
``templates/plugin/``); ``check`` loads plugins exactly as a scan would (import, construct with
their options, register, validate the hooks) and says either what loaded or, in one line, why
not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError
from stoq_cli._params import LOG_LEVELS, Invocation, parse_plugin_opts, remember_log_level

if TYPE_CHECKING:
    from stoq_core import PluginInfo, Stoq

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
    """Write and check plugins: 'new' scaffolds one, 'check' says why one does not load."""


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
        )
        target = write_scaffold(scaffold, directory)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"created {target} ({scaffold.distribution}: {', '.join(scaffold.parts)})")
    click.echo(f"next: cd {target} && pip install -e '.[test]' && pytest", err=True)
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
@click.option(
    "--plugin-dir",
    "plugin_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="Also look in this directory of v3 plugins. Repeat for more.",
)
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
