"""Resolving ``$STOQ_HOME``, and building the ``Stoq`` a command's parsed options ask for.

``$STOQ_HOME`` (default ``~/.stoq``) holds ``stoq.cfg``, ``plugins/`` (v3 plugin directories),
``logs/`` and ``cache/``. It need not exist: it is created on first use when it can be, and a home
that cannot be written only turns the file log off.

What is installed is read only through the core's own readers (``stoq_core._index`` for entry
points, ``stoq_core._legacy.discover`` for ``.stoq`` files), so ``stoq --version``, ``stoq list``
and a scan cannot disagree about a home.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from stoq_cli._errors import CliError
from stoq_cli._where import entry_point_index, home_path

if TYPE_CHECKING:
    from stoq_core import RequestMeta, Stoq

__all__ = [
    "EngineOptions",
    "StoqHome",
    "build_stoq",
    "check_workers",
    "config_path",
]


@dataclasses.dataclass(frozen=True)
class StoqHome:
    """stoQ's home directory for the command line."""

    path: Path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> StoqHome:
        """``$STOQ_HOME``, or ``~/.stoq`` when it is unset or blank."""
        return cls(Path(home_path(environ)))

    @property
    def config_file(self) -> Path:
        return self.path / "stoq.cfg"

    @property
    def plugins(self) -> Path:
        return self.path / "plugins"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def entry_point_index(self) -> Path:
        """Where the installed plugins' entry points are kept between runs."""
        return Path(entry_point_index(str(self.path)))

    def prepare(self) -> bool:
        """Create the home, ``plugins/`` and ``logs/`` if missing.

        :returns: whether ``logs/`` can be written (else the file log is turned off).
        """
        try:
            # Explicit modes: under umask 002, plugins/ would be group-writable, and stoQ
            # refuses v3 plugins that others can write.
            self.path.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.plugins.mkdir(mode=0o755, exist_ok=True)
            self.logs.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.logs, os.W_OK)


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """The parsed engine options of ``scan`` and ``run`` (``_params.engine_options``)."""

    start_dispatch: Optional[list[str]] = None
    always_dispatch: Optional[list[str]] = None
    dispatchers: Optional[list[str]] = None
    connectors: Optional[list[str]] = None
    decorators: Optional[list[str]] = None
    dest_archivers: Optional[list[str]] = None
    source_archivers: Optional[list[str]] = None
    providers: Optional[list[str]] = None
    max_recursion: Optional[int] = None
    timeout: Optional[float] = None
    deadline: Optional[float] = None
    cache: Optional[bool] = None  #: --cache / --no-cache; None: stoq.cfg's
    plugin_opts: Optional[dict[str, dict[str, str]]] = None
    request_source: Optional[str] = None
    request_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    plugin_dirs: Sequence[str] = ()
    config_file: Optional[str] = None
    log_level: Optional[str] = None
    tracing: Optional[bool] = None
    #: None: stoq.cfg's. Only ``stoq run`` leaves it None: a command that does not serve
    #: (a one-off scan beside a running service) would otherwise take the service's port.
    metrics_port: Optional[int] = 0
    metrics_host: Optional[str] = None
    timings: bool = False

    @classmethod
    def without_roles(cls, **kwargs: Any) -> EngineOptions:
        """Options that load no plugin at start (empty role lists, not None), for commands that
        inspect plugins: the ones stoq.cfg names for a run are not theirs to load."""
        return cls(
            always_dispatch=[], dispatchers=[], connectors=[], decorators=[],
            dest_archivers=[], source_archivers=[], providers=[], **kwargs,
        )  # fmt: skip

    def named_plugins(self) -> list[str]:
        """Every plugin name given on the command line."""
        lists = (
            self.start_dispatch, self.always_dispatch, self.dispatchers, self.connectors,
            self.decorators, self.dest_archivers, self.source_archivers, self.providers,
        )  # fmt: skip
        return [name for names in lists for name in names or ()]

    def request_meta(self) -> RequestMeta:
        """A new ``RequestMeta`` per request, so no scan sees another's changes."""
        from stoq_core import RequestMeta

        return RequestMeta(source=self.request_source, extra_data=dict(self.request_extra))


def config_path(home: StoqHome, given: Optional[str]) -> str:
    """The stoq.cfg to read: ``--config-file`` (click checked it exists) or the home's.

    :raises CliError: it is not a regular file (a directory, a FIFO...).
    """
    path = Path(given) if given else home.config_file
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return str(path)  # a missing stoq.cfg means stoQ's defaults, said nowhere
    except OSError as exc:
        raise CliError(f"cannot read the config file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise CliError(f"the config file {path} is {kind}")
    return str(path)


def build_stoq(
    home: StoqHome,
    options: EngineOptions,
    fresh: bool = False,
    engine: Optional[type[Stoq]] = None,
) -> Stoq:
    """The engine for ``options``, every named plugin loaded; raises saying which failed.

    :param fresh: read the installed plugins' metadata, not the index kept in the home.
    :param engine: a subclass of ``Stoq`` to build (``stoq run --jobs``'s) [default: Stoq].
    """
    from stoq_core import Stoq, refresh_entry_points, use_entry_point_index

    writable = home.prepare()
    use_entry_point_index(home.entry_point_index)  # a home that cannot be written: not kept
    if fresh:
        refresh_entry_points()
    kwargs: dict[str, Any] = {}
    if not writable:
        kwargs["log_dir"] = None  # else stoq.cfg's log_dir, or $STOQ_HOME/logs
    return (engine or Stoq)(
        base_dir=str(home.path),
        config_file=config_path(home, options.config_file),
        log_level=options.log_level,
        plugin_dir_list=[str(home.plugins), *options.plugin_dirs],
        plugin_opts=options.plugin_opts,
        providers=options.providers,
        source_archivers=options.source_archivers,
        dest_archivers=options.dest_archivers,
        connectors=options.connectors,
        dispatchers=options.dispatchers,
        decorators=options.decorators,
        always_dispatch=options.always_dispatch,
        max_recursion=options.max_recursion,
        timeout=options.timeout,
        deadline=options.deadline,
        cache=options.cache,
        tracing=options.tracing,
        metrics_port=options.metrics_port,
        metrics_host=options.metrics_host,
        timings=options.timings,
        **kwargs,
    )


def check_workers(stoq: Stoq, names: Sequence[str], option: str) -> None:
    """Load the ``-s`` workers now, so a wrong name stops the command before any scan.

    :raises StoqException: a name is not installed or fails to load.
    :raises CliError: the plugin is not a worker.
    """
    for name in names:
        plugin = stoq.plugins.load(name)
        if "scan" not in plugin.hooks:
            hooks = ", ".join(plugin.hooks) or "none"
            raise CliError(
                f"plugin {name!r} cannot be used with {option}: it is not a worker "
                f"(it implements {hooks}, not scan)"
            )
