"""Entry point of the ``stoq`` console script: ``scan``, ``run``, ``list``, ``install``...

Only click and the standard library are imported up front; the core, rich and the plugins are
imported by the commands that use them, so ``stoq --help`` and ``stoq --version`` stay instant.
Plugin distributions add commands of their own through ``stoq.commands`` entry points
(``_added_commands``), each imported only when it runs.

Exit codes: 0 success; 1 the work ran but something failed (an error in a response, a failing
connector or provider, pip); 2 usage or input error (nothing was scanned); 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Optional

import click

from stoq_cli._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError, OutputError
from stoq_cli._params import (
    Invocation,
    Processes,
    StoqCommand,
    engine_options,
    jobs_option,
    plugin_dir_option,
)
from stoq_cli._streams import flush_results, results_stream, silence_results, take_over
from stoq_core._printable import printable

__all__ = ["cli", "main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

_OPTIONS_NOTE = """\
\b
Plugin lists
  -s, -a, -R, -C, -D, -A, -S and -P each take one plugin name; repeat the option
  or separate names with commas: '-s hash -s yara' and '-s hash,yara' are the
  same. As in stoQ v3, '-s hash yara' works too: the plain words after a plugin
  name are taken as more names, up to the first word that is an option, contains
  '.' or '/', or names an existing file or directory. So 'stoq scan -s hash
  FILE' never takes FILE as a plugin; to be sure, put FILEs first or after '--'.
  --plugin-opts and --request-extra run on in the same way over NAME:OPT=VALUE
  and KEY=VALUE words.
"""

_FILES_NOTE = """\
\b
Environment
  STOQ_HOME  stoQ's home [default: ~/.stoq], created on first use: stoq.cfg
             (optional; its [core] section gives defaults for these options and
             its [NAME] sections plugin options), plugins/ (v3 plugin
             directories), logs/ (stoq.log), cache/ (installed plugins'
             entry points, reread whenever the import path changes).
  STOQ_DEBUG  set to 1, a failure prints its traceback (as --log-level debug).
  STOQ_ALLOW_UNSAFE_PLUGIN_DIRS  set to 1, v3 plugins others could have
             written load (with a warning) instead of being refused.

\b
Exit status
  0 every scan succeeded; 1 a scan ran but a response holds errors (a worker
  failed, a connector could not save...); 2 usage or input error, nothing was
  scanned; 130 interrupted. Add --log-level debug to see a failure's traceback.
"""

_SCAN_EPILOG = f"""\
Each FILE is scanned as its own request; extra_data.filename is its base name.
A DIRECTORY is walked (sorted, symlinked directories not followed) and each
file under it scanned; its responses also record extra_data.source_dir. '-'
(or no FILE, when stdin is not a terminal) reads stdin.

\b
Output
  Without -C, responses go to stdout, and nothing else does: what plugins
  print goes to stderr.
  --format json     one FILE or stdin: the response, indented (one line with
                    --compact); several FILEs or a DIRECTORY: one line per
                    response (JSON lines).
  --format jsonl    one line per payload: the response with only that
                    payload's results (request_meta, errors, scan_id... are
                    the response's).
  --format summary  for a person: one FILE or stdin: each payload with what
                    each worker found (sha256, rule names, other results cut
                    short) and the errors; several FILEs or a DIRECTORY: one
                    line per file, then a totals line.
  Without --format: summary when stdout is a terminal, else json (pipes and
  redirects get JSON, as in stoQ v3).
  With -C, responses go to the connectors only; a response a connector fails
  to save is printed as above, so it is not lost, and stoq exits 1.
  With several files, a progress bar is drawn on stderr when stderr is a
  terminal and stdout is not.

\b
Several processes
  --jobs N scans the files in N worker processes (0 or 'auto': one per CPU),
  each with the same plugins and options. The responses come in the order
  the workers finish them, each file's once; a worker that dies is reported,
  and the file it held gets a response with an error. One FILE or stdin is
  scanned in this process.

\b
Bad input
  A missing, unreadable or empty FILE (unless --allow-empty), a FIFO, an
  unknown or broken plugin, a malformed option or stoq.cfg: one line on stderr,
  exit 2, nothing scanned. Under a DIRECTORY, an unreadable entry is reported
  and skipped (exit 1); empty files and FIFOs are skipped with a note. An
  input over max_payload_size (stoq.cfg) is not read past it nor scanned: its
  response holds an error saying so (exit 1).

{_OPTIONS_NOTE}
\b
Examples
  stoq scan bad.exe -s hash                  hash one file
  stoq scan -s hash,yara -- bad.exe          the same with two workers
  stoq scan samples/ -a hash > results.jsonl every file under samples/
  cat bad.exe | stoq scan - -s hash          scan stdin
  stoq scan mail.eml -s decompress -a hash --request-source mail \\
      --request-extra server=mx1             hash everything extracted too
  stoq scan bad.exe -s yara --plugin-opts yara:worker_rules=rules.yar
  stoq scan samples/ -s hash -C filedir --plugin-opts filedir:results_dir=out

{_FILES_NOTE}"""

_RUN_EPILOG = f"""\
The providers (-P, or [core] providers in stoq.cfg) queue payloads; each is
scanned as its own request until every provider has finished and the queue is
empty. Without -C each response is printed to stdout as one JSON line; with
-C it goes to the connectors (and is printed only if one fails to save it).

\b
On a terminal, stderr shows a live line of counts: payloads ingested (queued
by the providers), scanned, responses with errors, and scans per second.

\b
Stopping
  The first Ctrl-C (or SIGTERM) stops the providers; the payloads already
  queued or being scanned are finished and saved, then stoq exits 130 (143
  for SIGTERM) after a line of counts on stderr. A second Ctrl-C aborts the
  scans in flight.

\b
Several processes
  --jobs N scans in N worker processes (0 or 'auto': one per CPU) while the
  providers run in this one, so each payload is ingested once, with any
  provider. Ctrl-C drains and aborts as above.
  --consumers N starts N 'stoq run' processes with the same options, to use N
  cores. Each runs its own providers, so use it with a provider that shares
  its work out, such as a queue's (with filedir, each would scan every file).
  Their responses are printed whole lines at a time; Ctrl-C and SIGTERM are
  passed on to each; the exit status is the worst of theirs.

{_OPTIONS_NOTE}
\b
Examples
  stoq run -P filedir -a hash -R yara \\
      --plugin-opts filedir:source_dir=/tmp/in > results.jsonl
  stoq run -P filedir -C filedir -a hash,yara \\
      --plugin-opts filedir:source_dir=/tmp/monitor \\
      --plugin-opts filedir:results_dir=/tmp/results
  stoq run -P QUEUE -C QUEUE -a hash --consumers 4

{_FILES_NOTE}"""


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from stoq_cli._home import StoqHome
    from stoq_cli._installed import installed_plugins, v3_plugins
    from stoq_core import __version__  # the distribution's version is read from this one

    lines = [f"stoq-core {__version__} (Python {sys.version.split()[0]})"]
    home_plugins = StoqHome.from_environment().plugins
    for title, plugins in (
        ("plugins", installed_plugins()),
        (f"v3 plugins in {home_plugins}", v3_plugins(home_plugins)),
    ):
        if not plugins:
            continue
        lines.append(f"{title}:")
        width = max(len(name) for name in plugins)
        for name, record in sorted(plugins.items()):
            line = f"  {name:<{width}}  {record.version or '-':<10} {record.origin}"
            lines.append(line + (f"  error: {record.error}" if record.error else ""))
    if len(lines) == 1:
        lines.append("plugins: none installed")
    click.echo("\n".join(lines))
    ctx.exit(0)


# Commands whose module is imported only when they run: module:attribute, and the short help
# ``stoq --help`` shows for them without importing it (a test checks it against the command's).
_LAZY_COMMANDS = {
    "plugin": (
        "stoq_cli._plugin_cmd:plugin_group",
        "Write and check plugins: 'new' scaffolds one, 'check' says why...",
    ),
    "uninstall": (
        "stoq_cli._uninstall:uninstall",
        "Uninstall plugin distributions (via pip) or v3 plugin folders.",
    ),
}


class StoqContext(click.Context):
    """A context that holds the run's ``Invocation`` from before any option is parsed."""

    def __init__(self, *args: Any, invocation: Optional[Invocation] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if invocation is not None:
            invocation.remember(self)


class StoqGroup(click.Group):
    """The ``stoq`` group: every failure becomes one ``stoq: error: ...`` line and an exit code.

    Besides its own commands it offers those plugin distributions publish as ``stoq.commands``
    entry points; a built-in command keeps its name over a plugin's.
    """

    context_class = StoqContext

    def _builtin_names(self, ctx: click.Context) -> set[str]:
        return {*super().list_commands(ctx), *_LAZY_COMMANDS}

    def list_commands(self, ctx: click.Context) -> list[str]:
        from stoq_cli._added_commands import listed

        builtin = self._builtin_names(ctx)
        return sorted(builtin | {name for name, _ in listed(builtin)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        lazy = _LAZY_COMMANDS.get(cmd_name)
        if lazy is not None and cmd_name not in self.commands:
            import importlib

            module, attribute = lazy[0].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is None:
            from stoq_cli._added_commands import load

            command = load(cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The built-in commands with their help, then plugin commands with their distribution
        (listing a plugin's command must not import it)."""
        from stoq_cli._added_commands import listed

        builtin = self._builtin_names(ctx)
        rows = []
        for name in sorted(builtin):
            lazy = _LAZY_COMMANDS.get(name)
            if lazy is not None and name not in self.commands:
                rows.append((name, lazy[1]))  # not imported for a line of help
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        added = listed(builtin)
        if added:
            with formatter.section("Plugin commands"):
                formatter.write_dl(added)

    def main(
        self,
        args: Optional[Sequence[str]] = None,
        prog_name: Optional[str] = None,
        complete_var: Optional[str] = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        # Made here, not in a context, so that a failure is reported after the contexts closed.
        invocation = Invocation()
        try:
            code = super().main(
                args,
                prog_name or "stoq",
                complete_var,
                standalone_mode=False,
                invocation=invocation,
                **extra,
            )
        except BaseException as exc:  # each kind is sorted out by _report
            code = _report(exc, invocation)
        if not isinstance(code, int):
            code = 0
        try:
            flush_results()  # so a full disk is an error and an exit code, not a lost result
        except (BrokenPipeError, OutputError) as exc:
            code = code or _report(exc, invocation)
            silence_results()
        if standalone_mode:
            sys.exit(code)
        return code


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _error(message: str) -> None:
    if sys.stderr is None:  # print() would fall back to stdout, which holds results
        return
    print(f"stoq: error: {printable(_one_line(message))}", file=sys.stderr, flush=True)


def _report(exc: BaseException, invocation: Optional[Invocation] = None) -> int:
    """Print ``exc`` for a user (one line; the traceback too with --log-level debug).

    :param invocation: what the command line said (``--log-level debug``...); none given, only
        ``STOQ_DEBUG``.
    """
    if invocation is None:
        invocation = Invocation()
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        click.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx is not None else "stoq"
        _error(f"{exc.format_message().rstrip('.')} (see '{command} --help')")
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        _error(exc.format_message())
        return exc.exit_code
    if isinstance(exc, (KeyboardInterrupt, click.Abort)):
        print("stoq: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        # The reader went away (stoq scan DIR | head): quiet the flush at exit.
        silence_results()
        return EXIT_FAILED
    if isinstance(exc, OutputError):
        silence_results()
    if invocation.debug:
        import traceback  # only when a traceback is asked for: it costs ~15 ms to import

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, CliError):
        _error(str(exc))
        return exc.exit_code
    # The core is imported only by commands that need it: no import, no StoqException.
    exceptions = sys.modules.get("stoq_core.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.StoqException):
        message = str(exc)
        hint = _file_hint(exc, invocation.continued)
        _error(message + hint)
        return EXIT_USAGE
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        return EXIT_USAGE
    if not isinstance(exc, Exception):
        raise exc
    hint = "" if invocation.debug else " (--log-level debug or STOQ_DEBUG=1 shows the traceback)"
    _error(f"unexpected {type(exc).__name__}: {exc}{hint}")
    return EXIT_FAILED


def _file_hint(exc: BaseException, continued: Sequence[str]) -> str:
    """When a word after ``-s NAME`` was taken as a plugin but is not one, say how to scan it.

    :param continued: the words taken as more plugin names (``Invocation.continued``).
    """
    for word in continued:
        if f"plugin {word!r} is not installed" in str(exc):
            return (
                f"; {word!r} followed a plugin option, so it was read as a plugin name: "
                "to scan a file of that name, put it before the options or after '--'"
            )
    return ""


@click.group(cls=StoqGroup, context_settings=_CONTEXT)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the core's version and every installed plugin's, then exit.",
)
def cli() -> None:
    """stoQ: route payloads through hashing, YARA, extraction and your own plugins.

    Plugins are Python distributions (stoq install stoq-plugin-hash) or v3
    plugin directories under $STOQ_HOME/plugins. 'stoq COMMAND --help' explains
    each command.
    """


@cli.command(cls=StoqCommand, epilog=_SCAN_EPILOG, context_settings=_CONTEXT)
@click.argument("files", nargs=-1, metavar="[FILE|DIRECTORY|-]...")
@engine_options()
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["json", "jsonl", "summary"]),
    default=None,
    help="json: the response(s); jsonl: one line per payload; summary: the findings, for a "
    "person [default: summary when stdout is a terminal, else json].",
)
@click.option(
    "--compact",
    is_flag=True,
    help="Print a single response on one line instead of indented.",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Scan empty files and empty stdin (a 0-byte payload) instead of refusing them.",
)
@jobs_option(
    "Scan the files in N worker processes, to use N cores; 0 or 'auto': one per CPU; 1: in "
    "this process."
)
def scan(
    files: tuple[str, ...],
    fmt: Optional[str],
    compact: bool,
    allow_empty: bool,
    jobs: int,
    **engine: Any,
) -> int:
    """Scan files, directories or stdin and print each response."""
    from stoq_cli._home import EngineOptions
    from stoq_cli._scan import scan_command

    return scan_command(files, EngineOptions(**engine), fmt, compact, allow_empty, jobs)


@cli.command(cls=StoqCommand, epilog=_RUN_EPILOG, context_settings=_CONTEXT)
@engine_options(providers=True)
@click.option(
    "--consumers",
    type=Processes(),
    default=1,
    show_default=True,
    metavar="N",
    help="Run N worker processes with these options (for a provider that shares out work).",
)
@jobs_option(
    "Scan in N worker processes, the providers running in this one; 0 or 'auto': one per "
    "CPU; 1: in this process."
)
def run(consumers: int, jobs: int, **engine: Any) -> int:
    """Scan what provider plugins queue until they finish (or Ctrl-C)."""
    from stoq_cli._home import EngineOptions
    from stoq_cli._run import run_command

    if consumers > 1 and jobs > 1:
        raise click.UsageError(
            "--consumers and --jobs cannot be combined: --jobs N shares one set of providers "
            "out to N processes, --consumers N starts N whole 'stoq run's"
        )
    if engine.get("timings") and jobs > 1:
        # This process's engine, whose timings would be shown, scans nothing with --jobs.
        raise CliError("--timings cannot be combined with --jobs: run in one process")
    if engine.get("timings") and consumers > 1:
        raise CliError(
            "--timings cannot be combined with --consumers: the processes' tables would mix "
            "on one stderr"
        )
    if consumers > 1:
        from stoq_cli._consumers import consumers_command

        if engine.get("metrics_port"):
            raise CliError(
                "--metrics-port cannot be used with --consumers: one port cannot serve the "
                "metrics of several processes"
            )
        engine["metrics_port"] = 0  # nor stoq.cfg's: see child_arguments
        return consumers_command(EngineOptions(**engine), consumers)
    return run_command(EngineOptions(**engine), jobs)


class ListCommand(StoqCommand):
    """``stoq list``, whose help shows each hook's role from the core's table
    (``stoq_core.plugins.ROLES``), imported only when the help is shown."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The columns, each hook with its role, then the examples."""
        from stoq_core.plugins import ROLES

        super().format_epilog(ctx, formatter)
        width = max(len(role.hook) for role in ROLES) + 2
        roles = "".join(f"\n  {role.hook:<{width}}{role.name}" for role in ROLES)
        for text in (f"\b\nHooks and the role a plugin plays through each{roles}", _LIST_EXAMPLES):
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(text)


_LIST_EXAMPLES = """\
\b
Examples
  stoq list
  stoq list --json | jq -r '.[] | select(.error) | .name'
"""


@cli.command(
    "list",
    cls=ListCommand,
    context_settings=_CONTEXT,
    epilog="""\
\b
Columns: the plugin's name (what -s, -C... take), its version, where it comes
from (a distribution, or the plugin directory of a v3 plugin), the hooks it
implements (below) and its description (its class's 'description', else its
distribution's summary). A plugin that cannot be imported, or whose hooks
break the rules, is listed with the error 'stoq plugin check' gives. Listing
imports each plugin's module to validate its hooks, but constructs nothing.
""",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of plugins instead.")
@plugin_dir_option("Also list the v3 plugins in DIR. Repeat for more.")
def list_(as_json: bool, plugin_dirs: tuple[str, ...]) -> int:
    """List installed plugins: name, version, origin, hooks, description."""
    from stoq_cli._home import EngineOptions, StoqHome, build_stoq
    from stoq_cli._output import print_plugins

    options = EngineOptions.without_roles(plugin_dirs=plugin_dirs)
    with results_stream() as out:  # listing imports plugin modules, which may print
        stoq = build_stoq(StoqHome.from_environment(), options, fresh=True)
        print_plugins(stoq.list_plugins(), as_json, out)
    return 0


def _pip_options(command: Any) -> Any:
    """pip's own options that ``stoq install`` passes on, each spelt as pip spells it."""
    options = [
        click.option("-i", "--index-url", metavar="URL", help="pip's package index."),
        click.option(
            "--extra-index-url", multiple=True, metavar="URL", help="Another index. Repeatable."
        ),
        click.option(
            "-f",
            "--find-links",
            multiple=True,
            metavar="URL|DIR",
            help="Look for archives here too. Repeatable.",
        ),
        click.option("--no-index", is_flag=True, help="Use no index (with --find-links)."),
        click.option("--no-deps", is_flag=True, help="Do not install dependencies."),
        click.option("--pre", is_flag=True, help="Take pre-release and development versions."),
        click.option("--force-reinstall", is_flag=True, help="Reinstall even when up to date."),
        click.option(
            "--no-build-isolation",
            is_flag=True,
            help="Build with the build tools installed here (offline -e installs).",
        ),
        click.option("--no-cache-dir", is_flag=True, help="Do not use pip's cache."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(
    context_settings=_CONTEXT,
    epilog="""\
\b
SPEC is what pip takes (a requirement such as stoq-plugin-yara, a wheel, an
sdist, a project directory): it is installed with the pip of the Python stoq
runs in ('python -m pip install'), so its plugins are found through their
entry points. pip's output goes to stderr; stdout lists each plugin that
became available, changed version, was reinstalled or went away.

\b
-e PATH installs the project at PATH in development mode ('pip install -e'):
its plugins run from its source, so an edit shows at the next scan.

\b
The pip options above are passed on to pip as they are. Any other pip option
can be set the way pip reads it from the environment, PIP_<OPTION>: e.g.
PIP_TRUSTED_HOST=mirror.example stoq install stoq-plugin-yara.

\b
A v3 plugin is installed as v3 did: its requirements.txt with that pip, then
the folder holding its .stoq file copied to $STOQ_HOME/plugins/<folder name>.
SPEC may be that folder or the v3 source folder around it (setup.py,
requirements.txt, the inner folder), which is not pip-installed itself. A
copy already there is refused; --upgrade (or --force-reinstall) replaces it.

\b
Examples
  stoq install stoq-plugin-hash stoq-plugin-yara
  stoq install ./packages/stoq-plugin-hash
  stoq install -e ~/src/stoq-plugin-mine
  stoq install --upgrade dist/stoq_plugin_yara-*.whl
  stoq install --no-index -f ./wheels stoq-plugin-yara
  stoq install ~/v3-plugins/peinfo
  stoq install ~/src/stoq-plugins-public/mraptor
""",
)
@click.argument("specs", nargs=-1, metavar="SPEC...")
@click.option(
    "-U", "--upgrade", is_flag=True, help="Upgrade installed distributions; replace v3 copies."
)
@click.option(
    "-e",
    "--editable",
    multiple=True,
    metavar="PATH",
    help="Install the project at PATH in development mode. Repeatable.",
)
@_pip_options
def install(specs: tuple[str, ...], upgrade: bool, editable: tuple[str, ...], **pip: Any) -> int:
    """Install plugin distributions (via pip) or v3 plugin directories."""
    from stoq_cli._install import install_command

    if not specs and not editable:
        raise click.UsageError(
            "Missing argument 'SPEC...' (or -e PATH)", click.get_current_context()
        )
    return install_command(specs, upgrade, editable, _pip_arguments(pip))


def _pip_arguments(values: dict[str, Any]) -> list[str]:
    """``{"index_url": "U", "pre": True}`` -> ``["--index-url", "U", "--pre"]``."""
    arguments: list[str] = []
    for key, value in values.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            arguments.append(option)
        elif isinstance(value, str):
            arguments += [option, value]
        elif isinstance(value, tuple):
            for each in value:
                arguments += [option, each]
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run the ``stoq`` command line and exit with its status."""
    take_over()  # before anything is opened or printed: stdout is for results only
    cli.main(args=argv, prog_name="stoq")
    raise SystemExit(0)  # unreachable: main() exits
