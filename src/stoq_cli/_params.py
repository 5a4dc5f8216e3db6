"""The options ``scan`` and ``run`` share, and the parsing that keeps FILEs out of plugin lists.

stoQ v3 declared its plugin lists with argparse's ``nargs='+'``, so ``stoq scan -s hash FILE``
took FILE as a second plugin name. Here each option takes one value and may be repeated
(``-s hash -s yara``) or given a comma-separated list (``-s hash,yara``). The v3 spelling
``-s hash yara FILE`` still works: ``StoqCommand`` takes the plain words after such an option as
more of its values while they look like what the option expects and do not name an existing
file, and leaves the rest (FILE) positional.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

__all__ = [
    "ContinuedOption",
    "Invocation",
    "PROCESSES_PER_CPU",
    "Jobs",
    "Processes",
    "Seconds",
    "StoqCommand",
    "engine_options",
    "jobs_option",
    "parse_plugin_opts",
    "parse_request_extra",
    "plugin_dir_option",
    "split_names",
    "usable_cpus",
]

F = TypeVar("F", bound=Callable[..., Any])

_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_PLUGIN_OPT = re.compile(r"(?P<plugin>[^\s:=]+):(?P<option>[^\s=]+)=(?P<value>.*)", re.DOTALL)
_KEY_VALUE = re.compile(r"(?P<key>[^\s=-][^\s=]*)=(?P<value>.*)", re.DOTALL)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _names_word(word: str) -> bool:
    # No '.' or '/': a word like 'bad.exe' or 'samples/x' is a FILE, never a plugin name.
    parts = [part for part in word.split(",") if part]
    return bool(parts) and all(_PLUGIN_NAME.fullmatch(part) for part in parts)


def _plugin_opt_word(word: str) -> bool:
    return _PLUGIN_OPT.fullmatch(word) is not None


def _key_value_word(word: str) -> bool:
    return _KEY_VALUE.fullmatch(word) is not None


class ContinuedOption(click.Option):
    """A repeatable option that, as in v3, also takes the plain words after its value.

    :param continues: whether a following word has the shape of this option's values.
    :param paths: its values are existing paths (``--plugin-dir``); a word that is one may
        continue it. Other options' continuations stop at an existing path: it is an input.
    """

    def __init__(
        self,
        *args: Any,
        continues: Callable[[str], bool] = _names_word,
        paths: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self.continues = continues
        self.paths = paths


class StoqCommand(click.Command):
    """A command whose ``ContinuedOption`` values may run on over several words (v3 style)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        continued: list[str] = []
        rewritten = _spell_out(args, self._continued_options(), self._value_options(), continued)
        Invocation.of(ctx).continued = continued
        return super().parse_args(ctx, rewritten)

    def _continued_options(self) -> dict[str, ContinuedOption]:
        return {
            opt: param
            for param in self.params
            if isinstance(param, ContinuedOption)
            for opt in param.opts
        }

    def _value_options(self) -> set[str]:
        # Options whose next word is their value, whatever it looks like.
        return {
            opt
            for param in self.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for opt in param.opts
        }


def _spell_out(
    args: Sequence[str],
    continued_options: dict[str, ContinuedOption],
    value_options: set[str],
    continued: list[str],
) -> list[str]:
    """``-s a b FILE`` becomes ``-s a -s b FILE``; everything else is left as it is.

    A word is taken as one more value of the option before it while it has the shape that
    option expects and is not an existing path; the first word that fails stops the run.
    ``--`` ends options, as usual.
    """
    out: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            out.extend(args[index:])
            break
        index += 1
        out.append(word)
        option = _option_of(word, continued_options)
        if option is None:
            if word in value_options and index < len(args):
                out.append(args[index])  # another option's value, even if it reads '-s'
                index += 1
            continue
        flag, param = option
        if flag == word:  # the value is the next word
            if index >= len(args):
                break
            out.append(args[index])
            index += 1
        while index < len(args) and _continues(args[index], param):
            out.extend((flag, args[index]))
            continued.append(args[index])
            index += 1
    return out


def _option_of(
    word: str, continued_options: dict[str, ContinuedOption]
) -> tuple[str, ContinuedOption] | None:
    """The continued option ``word`` starts (``-s``, ``-shash``, ``--start-dispatch=hash``)."""
    if word in continued_options:
        return word, continued_options[word]
    if word.startswith("--"):
        flag = word.split("=", 1)[0]
        if flag != word and flag in continued_options:
            return flag, continued_options[flag]
        return None
    if word.startswith("-") and word[:2] in continued_options:
        return word[:2], continued_options[word[:2]]
    return None


def _continues(word: str, param: ContinuedOption) -> bool:
    if word.startswith("-") or not param.continues(word):
        return False
    return param.paths or not os.path.lexists(word)


#: Entries ``_holds_plugins`` looks at before it gives up: a word after ``--plugin-dir DIR``
#: may be a large directory given to scan.
_PLUGIN_LOOK = 5000


def _holds_plugins(word: str) -> bool:
    """Whether ``word`` is a directory of v3 plugins: a ``.stoq`` file in it, or one or two
    levels down (``plugins/hash/hash.stoq``; a plugin repository's ``hash/hash/hash.stoq``).

    v3 took every word after ``--plugin-dir`` as another directory (``--plugin-dir d1 d2``);
    here only one that holds plugins is, so ``stoq scan --plugin-dir d1 samples/`` still scans
    ``samples/``.
    """
    if not os.path.isdir(word):
        return False
    looked = 0
    stack = [(word, 0)]
    while stack:
        top, depth = stack.pop()
        try:
            listing = os.scandir(top)
        except OSError:
            continue
        with listing:
            for entry in listing:
                looked += 1
                if looked > _PLUGIN_LOOK:
                    return False
                try:
                    if entry.name.endswith(".stoq") and entry.is_file():
                        return True
                    if depth < 2 and entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, depth + 1))
                except OSError:
                    continue
    return False


# -- value parsing ---------------------------------------------------------------------------


def split_names(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> list[str] | None:
    """``('hash,yara', 'hash')`` -> ``['hash', 'yara']``; none given -> ``None`` (stoq.cfg's)."""
    if not values:
        return None
    names: dict[str, None] = {}
    for value in values:
        parts = [part.strip() for part in value.split(",")]
        if not any(parts):
            raise click.BadParameter(f"{value!r} names no plugin", ctx, param)
        names.update(dict.fromkeys(part for part in parts if part))
    return list(names)


def parse_plugin_opts(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, dict[str, str]] | None:
    """``('filedir:source_dir=/tmp/in',)`` -> ``{"filedir": {"source_dir": "/tmp/in"}}``.

    Values stay text: the plugin's typed getters (``getint``, ``getboolean``...) parse them, and
    the core reads a ``$env:VAR`` value and checks names against a plugin's declared options when
    it loads (the CLI does not know them: plugins are imported only when used).
    """
    if not values:
        return None
    opts: dict[str, dict[str, str]] = {}
    for value in values:
        match = _PLUGIN_OPT.fullmatch(value)
        if match is None:
            raise click.BadParameter(
                f"{value!r} is not NAME:OPTION=VALUE (e.g. filedir:source_dir=/tmp/in)", ctx, param
            )
        opts.setdefault(match["plugin"], {})[match["option"]] = match["value"]
    return opts


def parse_request_extra(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, Any]:
    """``('server=mx1', 'postfix=true')`` -> ``{'server': 'mx1', 'postfix': True}``.

    As in v3, ``true`` and ``false`` (any case) become booleans; every other value stays text.
    """
    extra: dict[str, Any] = {}
    for value in values:
        match = _KEY_VALUE.fullmatch(value)
        if match is None:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE (e.g. server=mx1)", ctx, param)
        text = match["value"]
        extra[match["key"]] = {"true": True, "false": False}.get(text.lower(), text)
    return extra


# -- the shared options ----------------------------------------------------------------------


def _plugin_list(*decls: str, metavar: str = "NAME[,NAME...]", help: str) -> Callable[[F], F]:
    return click.option(
        *decls, cls=ContinuedOption, callback=split_names, metavar=metavar, help=help
    )


class Seconds(click.FloatRange):
    """A time limit: a finite number of seconds, at least 0.

    ``click.FloatRange(min=0)`` alone lets ``nan`` through (every comparison with it is false),
    and ``--timeout nan`` switched the limit off; ``inf`` is refused too, as 0 already means none.
    """

    name = "number of seconds"

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds (0: no limit)", param, ctx)
        return seconds


#: Processes ``--jobs`` and ``--consumers`` start per CPU at most. Each loads every plugin (tens
#: of MiB): a mistyped ``--jobs 100000`` started processes until the OOM killer stepped in.
PROCESSES_PER_CPU = 8


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, which a container or ``taskset``
    narrows, not every CPU of the host."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        return os.cpu_count() or 1


class Processes(click.IntRange):
    """A number of processes to start, at least ``min``; more than ``PROCESSES_PER_CPU`` per
    usable CPU is lowered to that, with a warning (the scan goes on)."""

    name = "number of processes"

    def __init__(self, min: int = 1) -> None:
        super().__init__(min=min)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        count = self.count(value, param, ctx)
        limit = PROCESSES_PER_CPU * usable_cpus()
        if count > limit:
            option = param.opts[-1] if param is not None and param.opts else "processes"
            click.echo(
                f"stoq: {option} {count} is more than {PROCESSES_PER_CPU} processes per CPU "
                f"({usable_cpus()} here): starting {limit}",
                err=True,
            )
            count = limit
        return count

    def count(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        return int(super().convert(value, param, ctx))


class Jobs(Processes):
    """``--jobs``: a number of worker processes; ``0`` or ``auto``: one per usable CPU."""

    def __init__(self) -> None:
        super().__init__(min=0)

    def count(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, str) and value.strip().lower() == "auto":
            value = 0
        return super().count(value, param, ctx) or usable_cpus()


def jobs_option(help: str) -> Callable[[F], F]:
    """``-j/--jobs N`` of ``scan`` and ``run`` (see ``_jobs``)."""
    return click.option(
        "-j", "--jobs", type=Jobs(), default=1, show_default=True, metavar="N", help=help
    )


def _seconds(*decls: str, help: str) -> Callable[[F], F]:
    return click.option(*decls, type=Seconds(), metavar="SECONDS", help=help)


def plugin_dir_option(help_text: str) -> Callable[[F], F]:
    """``--plugin-dir DIR`` (repeatable, into ``plugin_dirs``), as every command spells it; in a
    ``StoqCommand``, ``--plugin-dir d1 d2`` as v3 wrote it too (see ``_holds_plugins``)."""
    return click.option(
        "--plugin-dir",
        "plugin_dirs",
        cls=ContinuedOption,
        continues=_holds_plugins,
        paths=True,
        type=click.Path(exists=True, file_okay=False),
        metavar="DIR",
        help=help_text,
    )


def engine_options(providers: bool = False) -> Callable[[F], F]:
    """The engine options ``scan`` and ``run`` share (with ``-P`` for run only)."""
    options: list[Callable[[F], F]] = []
    if providers:
        options.append(
            _plugin_list(
                "-P",
                "--providers",
                help="Provider plugins that queue the payloads to scan; run ends when all finish.",
            )
        )
    options += [
        _plugin_list(
            "-s",
            "--start-dispatch",
            help="Workers to run on each submitted payload (not on what is extracted from it).",
        ),
        _plugin_list(
            "-a",
            "--always-dispatch",
            help="Workers to run on every payload, extracted ones included.",
        ),
        _plugin_list(
            "-R",
            "--dispatchers",
            help="Dispatcher plugins that choose workers for each payload (e.g. yara rules).",
        ),
        _plugin_list(
            "-C",
            "--connectors",
            help="Connector plugins that save each response; given, stdout stays empty "
            "unless a connector fails.",
        ),
        _plugin_list(
            "-D",
            "--decorators",
            help="Decorator plugins that add to each finished response.",
        ),
        _plugin_list(
            "-A",
            "--dest-archivers",
            help="Archiver plugins that save every payload's bytes after the scan.",
        ),
        _plugin_list(
            "-S",
            "--source-archivers",
            help="Archiver plugins that load the payloads providers point to.",
        ),
        click.option(
            "--max-recursion",
            type=click.IntRange(min=0),
            metavar="N",
            help="Scan rounds per request: how deep extracted payloads are followed "
            "[default: stoq.cfg, else 10].",
        ),
        _seconds(
            "--timeout",
            help="Seconds one plugin call may take before it is abandoned with an error; 0: "
            "no limit; a plugin's own timeout option beats it [default: stoq.cfg, else 600].",
        ),
        click.option(
            "--cache/--no-cache",
            default=None,
            help="Reuse workers' results for bytes they have scanned before (stoq.cfg's "
            "backend, else sqlite in $STOQ_HOME/cache), or not; see docs/cache.md "
            "[default: stoq.cfg, else off].",
        ),
        _seconds(
            "--deadline",
            help="Seconds one request's scan may take in all; at the deadline the response "
            "holds what was done; 0: no limit [default: stoq.cfg, else 0].",
        ),
        click.option(
            "--plugin-opts",
            cls=ContinuedOption,
            continues=_plugin_opt_word,
            callback=parse_plugin_opts,
            metavar="NAME:OPTION=VALUE",
            help="A plugin option; beats stoq.cfg's [NAME] section. A VALUE of '$env:VAR' "
            "(quoted for the shell) is environment variable VAR. Repeat for more.",
        ),
        click.option(
            "--request-source",
            metavar="TEXT",
            help="Recorded as request_meta.source (where the payloads came from).",
        ),
        click.option(
            "--request-extra",
            cls=ContinuedOption,
            continues=_key_value_word,
            callback=parse_request_extra,
            metavar="KEY=VALUE",
            help="Recorded in request_meta.extra_data; 'true'/'false' become booleans. "
            "Repeat for more.",
        ),
        plugin_dir_option(
            "A directory of v3 plugins (.stoq files), searched after $STOQ_HOME/plugins. "
            "Repeat for more."
        ),
        click.option(
            "--config-file",
            type=click.Path(exists=True, dir_okay=False),
            metavar="FILE",
            help="The stoq.cfg to read [default: $STOQ_HOME/stoq.cfg, if it exists].",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LOG_LEVELS, case_sensitive=False),
            callback=remember_log_level,
            help="Level of the log on stderr and in $STOQ_HOME/logs; 'debug' also shows each "
            "plugin loaded, the workers each payload got and why, each plugin call's time, and "
            "the traceback of a failure [default: stoq.cfg, else info].",
        ),
        click.option(
            "--trace/--no-trace",
            "tracing",
            default=None,
            help="Make an OpenTelemetry span per request and per plugin call, for the tracer "
            "provider that exports them (e.g. under opentelemetry-instrument); needs "
            "opentelemetry-api [default: stoq.cfg's tracing, else off].",
        ),
    ]
    # Observability (issue 16): each response's timings, for scan and run; metrics, served
    # only by a run.
    options.append(
        click.option(
            "--timings",
            is_flag=True,
            help="Print on stderr each plugin call's time per payload, and each plugin's "
            "total, after each response.",
        )
    )
    if providers:
        options += [
            click.option(
                "--metrics-port",
                type=click.IntRange(0, 65535),
                metavar="PORT",
                help="Serve Prometheus metrics on this port while the run lasts; 0: none; "
                "needs prometheus_client [default: stoq.cfg's metrics_port, else 0].",
            ),
            click.option(
                "--metrics-host",
                metavar="ADDRESS",
                help="The address metrics are served on [default: stoq.cfg's metrics_host, "
                "else 127.0.0.1, this machine only].",
            ),
        ]

    def apply(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return apply


# The key of the ``Invocation`` in ``ctx.meta``, which every context of one command line shares.
_INVOCATION = f"{__name__}.invocation"


class Invocation:
    """What the error handler needs to know about the command line it failed on.

    One per ``stoq`` run, kept in click's ``ctx.meta`` (``StoqGroup.main`` puts it there, and
    keeps it to report a failure once click's contexts are gone).
    """

    def __init__(self) -> None:
        #: --log-level debug was given, or STOQ_DEBUG is set
        self.debug = os.environ.get("STOQ_DEBUG", "") not in ("", "0")
        self.continued: list[str] = []  #: words StoqCommand took as more option values

    def remember(self, ctx: click.Context) -> None:
        """Keep this invocation in ``ctx.meta`` for the options and commands under ``ctx``."""
        ctx.meta[_INVOCATION] = self

    @classmethod
    def of(cls, ctx: click.Context) -> Invocation:
        """The invocation ``ctx`` belongs to (a new one for a command run outside ``stoq``)."""
        found = ctx.meta.get(_INVOCATION)
        if not isinstance(found, Invocation):
            found = cls()
            found.remember(ctx)
        return found


def remember_log_level(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Note ``--log-level debug`` (a failure then prints its traceback); return it upper-cased."""
    if value is None:
        return None
    Invocation.of(ctx).debug = value.lower() == "debug"
    return value.upper()
