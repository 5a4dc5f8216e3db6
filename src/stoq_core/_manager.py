"""Finding, loading and registering plugins, one at a time and only those a run names.

Plugins come from two places: the ``stoq.plugins`` entry-point group (installed distributions)
and v3 plugin directories (``.stoq`` files). When both offer one name, the plugin directory wins:
a directory is named by the user for this run (``--plugin-dir``, ``plugin_dir_list``), so it is
the more specific choice, as a local file shadows an installed one. ``stoq list`` shows the
shadowed entry point.

A plugin that fails to import or construct is recorded with its name, origin and reason; every
other plugin still loads.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

import attrs
import pluggy

from stoq_core import _index, _legacy, _logging, hookspecs
from stoq_core._index import ENTRY_POINT_GROUP, PluginEntry
from stoq_core._threads import run_blocking
from stoq_core.config import StoqConfigParser, environment_value
from stoq_core.exceptions import StoqPluginException, StoqPluginNotFound
from stoq_core.options import Option, check_options, declared_options
from stoq_core.plugins import BasePlugin, role_hooks

if TYPE_CHECKING:
    from stoq_core import _isolation

__all__ = ["ENTRY_POINT_GROUP", "Interrupted", "LoadedPlugin", "PluginInfo", "PluginManager"]

log = logging.getLogger("stoq")

_Caller = Callable[..., Coroutine[Any, Any, Any]]


@attrs.define
class PluginInfo:
    """What ``Stoq.list_plugins()`` says of one available plugin."""

    name: str
    version: str
    origin: str  #: the distribution's name, or the plugin directory of a legacy plugin
    kind: str  #: ``"entry point"`` or ``"plugin directory"``
    #: Its class's (or module's) ``description``, else the distribution's summary or the
    #: ``.stoq`` file's ``Description``.
    description: str = ""
    hooks: list[str] = attrs.field(factory=list)
    error: Optional[str] = None  #: why the plugin cannot be loaded, if it cannot
    shadows: Optional[str] = None  #: an entry point this legacy plugin hides, and why

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define(eq=False)
class LoadedPlugin:
    """A registered plugin: the object, its hook implementations, and its worker dependencies."""

    name: str
    obj: Any
    hooks: dict[str, Callable[..., Any]]
    is_async: dict[str, bool]
    required_workers: frozenset[str]  #: as loaded; see ``requirements`` for a v3 plugin
    timeout: Optional[float] = None  #: the plugin's own ``timeout`` option; None: the core's
    #: A v3 plugin directory's plugin: its methods and ``required_workers`` are looked up at
    #: each use, as v3 did, so a program (or v3's tests) may change them after loading.
    late: bool = False
    #: Its configuration (``options`` as given) and the class or module it was made from:
    #: what the result cache keys its results by (``_cache``).
    config: Optional[StoqConfigParser] = attrs.field(default=None, repr=False)
    source: Any = attrs.field(default=None, repr=False)
    #: Wraps each hook's caller when metrics, traces or timings are on (``_observe``): given
    #: here, at load, so that a call costs nothing more when they are off.
    observe: Optional[Callable[[str, str, _Caller], _Caller]] = attrs.field(
        default=None, repr=False
    )

    #: Per hook, what ``call`` calls: the implementation itself when it is ``async def``.
    callers: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.callers = {
            hook: function if self.is_async[hook] else functools.partial(run_blocking, function)
            for hook, function in self.hooks.items()
        }
        if self.late:
            self.callers = {
                hook: functools.partial(_late_call, self.obj, hook, self.hooks[hook], caller)
                for hook, caller in self.callers.items()
            }
        if self.observe is not None:
            self.callers = {h: self.observe(self.name, h, c) for h, c in self.callers.items()}
        if log.isEnabledFor(logging.DEBUG):  # per call timings: a wrapper at debug only
            self.callers = {h: _logging.timed(self.name, h, c) for h, c in self.callers.items()}

    def requirements(self) -> frozenset[str]:
        """The workers that must run first: read now from a v3 plugin, else as loaded."""
        if self.late:
            current = getattr(self.obj, "required_workers", None)
            if current is not None:
                return frozenset(current)
        return self.required_workers

    def call(self, hook: str, *args: Any) -> Coroutine[Any, Any, Any]:
        """A coroutine of this plugin's ``hook``; a plain ``def`` runs in a daemon thread."""
        return self.callers[hook](*args)


async def _late_call(
    obj: Any,
    hook: str,
    loaded: Callable[..., Any],
    caller: Callable[..., Coroutine[Any, Any, Any]],
    *args: Any,
) -> Any:
    """Call a v3 plugin's ``hook`` as it is now: the method found at load time as loaded (a
    plain ``def`` in a thread), or whatever replaced it since (a mock, a coroutine function)."""
    method = getattr(obj, hook)
    if method == loaded:
        return await caller(*args)
    result = method(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _StoqPluggy(pluggy.PluginManager):
    """Also takes hook-named methods of the v3 base classes' subclasses as implementations.

    A subclass itself (not yet constructed) is taken the same way, so that ``stoq list`` can
    validate a plugin's hooks without running its ``__init__``.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        cls = plugin if inspect.isclass(plugin) else type(plugin)
        if (
            opts is None
            and issubclass(cls, BasePlugin)
            and name in role_hooks(cls)
            and inspect.isroutine(getattr(plugin, name, None))
        ):
            return {}
        return opts


class PluginManager:
    """Discovers plugins and registers the ones asked for; one instance per name.

    :param plugin_dirs: v3 plugin directories, later ones winning a name.
    :param config: the stoq.cfg parser; its ``[name]`` sections configure plugins.
    :param plugin_opts: per-plugin options given at the call; they beat stoq.cfg.
    """

    def __init__(
        self,
        plugin_dirs: Iterable[str] = (),
        config: Optional[StoqConfigParser] = None,
        plugin_opts: Optional[Mapping[str, Mapping[str, Any]]] = None,
        load_timeout: float = 0.0,
        max_error_length: int = 4096,
        observe: Optional[Callable[[str, str, _Caller], _Caller]] = None,
    ) -> None:
        self.load_timeout = load_timeout  #: seconds importing and starting a plugin may take
        self.observe = observe  #: see ``LoadedPlugin.observe``
        self.max_error_length = max_error_length
        self.pm = _StoqPluggy(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.config = config if config is not None else StoqConfigParser()
        self.plugin_opts = {name: dict(opts) for name, opts in (plugin_opts or {}).items()}
        self.legacy, self.broken_legacy = _legacy.discover(plugin_dirs)
        self.loaded: dict[str, LoadedPlugin] = {}
        for name in self.plugin_opts:
            # A misspelt name (``hsah:algorithms=sha1``) was once taken silently, unused.
            if name not in self.legacy and name not in _index.entry_points():
                raise self.not_found(name, options=True)

    # -- discovery -------------------------------------------------------------------------

    def available(self) -> list[str]:
        """Every plugin name that could be loaded (or tried), sorted."""
        return sorted(set(_index.entry_points()) | set(self.legacy) | set(self.loaded))

    def not_found(self, name: str, options: bool = False) -> StoqPluginNotFound:
        """The error for ``name``, not installed, with the closest installed name.

        :param options: the name is one options are given for, not one a run uses.
        """
        import difflib  # only for this message: a scan that finds its plugins never needs it

        installed = self.available()
        close = difflib.get_close_matches(name, installed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(installed) if installed else "none"
        subject = f"options are given for plugin {name!r}, which" if options else f"plugin {name!r}"
        return StoqPluginNotFound(
            f"{subject} is not installed{hint} (installed plugins: {listing})"
        )

    def info(self) -> dict[str, PluginInfo]:
        """Every available plugin, broken ones included with their error, by name.

        Each plugin's module is imported and its hooks validated as loading it would (an
        argument the hookspec lacks, a hook no spec defines, no hook at all), so a plugin
        listed without an error is one ``stoq plugin check`` passes, unless its ``__init__``
        or its options fail: listing constructs nothing.
        """
        infos: dict[str, PluginInfo] = {}
        # One pluggy manager for the validation only, so the plugins checked here are never
        # registered with the one that runs scans.
        checker = _StoqPluggy(hookspecs.PROJECT_NAME)
        checker.add_hookspecs(hookspecs)
        for name, eps in _index.entry_points().items():
            ep = eps[0]
            info = PluginInfo(
                name=name,
                version=ep.dist_version,
                origin=ep.dist_name,
                kind="entry point",
                description=ep.summary,
            )
            if len(eps) > 1:
                info.error = str(self._conflict(name, eps))
            else:
                try:
                    with self._bounded(name, f"importing {ep.value}", None):
                        target = ep.load()
                except Interrupted:
                    raise  # the user's Ctrl-C
                except BaseException as exc:  # SystemExit, KeyboardInterrupt: a module's own
                    info.error = self._describe(f"failed to import {ep.value}", exc)
                else:
                    self._check(checker, info, target, f"distribution {ep.dist_name}")
            infos[name] = info
        for name, legacy in self.legacy.items():
            doc = legacy.documentation
            info = PluginInfo(
                name=name,
                version=doc.get("version", ""),
                origin=str(legacy.directory),
                kind="plugin directory",
                description=doc.get("description", ""),
            )
            if name in infos:
                shadowed = infos[name]
                info.shadows = (
                    f"hides the entry point from {shadowed.origin} {shadowed.version}: "
                    "a plugin directory wins over an installed distribution"
                )
            try:
                with self._bounded(name, f"importing {legacy.directory}", None):
                    target = _legacy.load_class(legacy)
            except StoqPluginException as exc:
                info.error = self._cut(str(exc))
            except Interrupted:
                raise  # the user's Ctrl-C
            except BaseException as exc:
                info.error = self._describe(f"failed to import {legacy.directory}", exc)
            else:
                self._check(checker, info, target, f"plugin directory {legacy.directory}")
            infos[name] = info
        for stoq_file, reason in self.broken_legacy.items():
            infos[stoq_file] = PluginInfo(
                name=stoq_file, version="", origin=stoq_file, kind="plugin directory", error=reason
            )
        return dict(sorted(infos.items()))

    def _check(
        self, checker: pluggy.PluginManager, info: PluginInfo, target: Any, origin: str
    ) -> None:
        """Fill ``info``'s hooks (or error) and description from the imported ``target``."""
        description = _description_of(target)
        if description:
            info.description = description
        try:
            hooks = _hook_implementations(checker, target, info.name, origin)
        except StoqPluginException as exc:
            info.error = self._cut(str(exc))
            return
        checker.unregister(target)
        info.hooks = [hook for hook in hookspecs.HOOK_NAMES if hook in hooks]

    # -- loading ---------------------------------------------------------------------------

    def load(self, name: str) -> LoadedPlugin:
        """The plugin registered under ``name``, loading it on first use.

        :raises StoqPluginNotFound: nothing offers that name.
        :raises StoqPluginException: it exists but failed to import, construct or validate.
        """
        loaded = self.loaded.get(name)
        if loaded is not None:
            return loaded
        began = time.perf_counter()
        target, config, origin = self._import(name)
        loaded = self.register(name, target, config, origin, late=name in self.legacy)
        if log.isEnabledFor(logging.DEBUG):
            version = config.get("Documentation", "version", fallback="") or "(no version)"
            took = (time.perf_counter() - began) * 1000
            log.debug(
                "plugin %s: loaded from %s %s in %.1f ms (hooks: %s)",
                name,
                origin,
                version,
                took,
                ", ".join(loaded.hooks),
            )
        return loaded

    def declared_options(self, name: str) -> Optional[tuple[Option, ...]]:
        """The options plugin ``name`` declares (``stoq_core.Option``), imported but not
        constructed; ``None`` if it does not declare them (a v3 plugin).

        :raises StoqPluginNotFound: nothing offers that name.
        :raises StoqPluginException: it fails to import, or its declarations are malformed.
        """
        loaded = self.loaded.get(name)
        target = loaded.obj if loaded is not None else self._import(name)[0]
        return declared_options(target, name)

    def _import(self, name: str) -> tuple[Any, StoqConfigParser, str]:
        """Import plugin ``name``: its class (or module), its config, and where it is from."""
        if name in self.legacy:
            legacy = self.legacy[name]
            config = self._plugin_config(name, legacy.options, legacy.documentation)
            origin = f"plugin directory {legacy.directory}"
            try:
                with self._bounded(name, "importing", config):
                    target: Any = _legacy.load_class(legacy)
            except StoqPluginException:
                raise
            except Interrupted:
                raise  # the user's Ctrl-C
            except BaseException as exc:
                # The plugin's own exception stays reachable (v3 raised it as it was).
                raise StoqPluginException(
                    self._describe(f"plugin {name!r} from {origin} failed to import", exc)
                ) from exc
        else:
            eps = _index.entry_points().get(name)
            if not eps:
                raise self.not_found(name)
            if len(eps) > 1:
                raise self._conflict(name, eps)
            ep = eps[0]
            origin = f"distribution {ep.dist_name}"
            doc = {"version": ep.dist_version}
            config = self._plugin_config(name, {}, doc)
            try:
                with self._bounded(name, f"importing {ep.value}", config):
                    target = ep.load()
            except Interrupted:
                raise  # the user's Ctrl-C
            except BaseException as exc:  # SystemExit, KeyboardInterrupt: the module's own
                raise StoqPluginException(
                    self._describe(
                        f"plugin {name!r} from {origin} failed to import {ep.value}", exc
                    )
                ) from exc
        return target, config, origin

    def register(
        self,
        name: str,
        target: Any,
        config: Optional[StoqConfigParser] = None,
        origin: str = "code",
        *,
        late: bool = False,
    ) -> LoadedPlugin:
        """Register ``target`` under ``name``: a class is constructed with its config first.

        This is the one path every plugin takes, entry point, legacy or test.

        :param late: look the plugin's methods and ``required_workers`` up at each use, as v3
            did for its plugin directories (the engine does for them): a program may change
            them after loading. Others are bound now, which keeps each call cheap.
        """
        if config is None:
            config = self._plugin_config(name, {}, {})
        self._apply_options(name, target, config)
        if config.has_option("options", "isolate"):
            # Imported only then: sockets, subprocess and pickle cost every start otherwise.
            from stoq_core import _isolation

            isolation = _isolation.options(name, config)
            if isolation is not None:  # built and called in processes of its own
                return self._register_isolated(name, target, config, origin, isolation)
        if inspect.isclass(target):
            try:
                with self._bounded(name, "starting", config):
                    obj = _construct(target, name, config)
            except Interrupted:
                raise  # the user's Ctrl-C
            except BaseException as exc:  # a plugin's sys.exit() is its failure, not ours
                raise StoqPluginException(
                    self._describe(f"plugin {name!r} from {origin} failed to start", exc)
                ) from exc
            _give_v3_attributes(obj, name, config)
        else:
            obj = target
        hooks = _hook_implementations(self.pm, obj, name, origin)
        required = getattr(obj, "required_workers", None)
        if required is None:
            required = config.getset("options", "required_workers", fallback=set())
        loaded = LoadedPlugin(
            name=name,
            obj=obj,
            hooks={hook: function for hook, (function, _) in hooks.items()},
            is_async={hook: is_async for hook, (_, is_async) in hooks.items()},
            required_workers=frozenset(required),
            timeout=_timeout_option(name, config),
            late=late,
            observe=self.observe,
            config=config,
            source=target,
        )
        self.loaded[name] = loaded
        return loaded

    def _register_isolated(
        self,
        name: str,
        target: Any,
        config: StoqConfigParser,
        origin: str,
        isolation: _isolation.IsolationOptions,
    ) -> LoadedPlugin:
        """``register`` for ``isolate = true``: the first process builds the plugin now, so a
        plugin that cannot start fails to load here, as it would in-process."""
        timeout = _timeout_option(name, config)
        from stoq_core import _isolation

        recipe = _isolation.recipe(name, target, config, origin, self.legacy.get(name))
        try:
            with self._bounded(name, "starting", config):
                plugin = _isolation.IsolatedPlugin(recipe, isolation)
        except StoqPluginException as exc:
            raise StoqPluginException(self._cut(str(exc))) from None
        except KeyboardInterrupt:
            raise  # the user's: the plugin's own would have ended its process, not this one
        except BaseException as exc:  # the load timeout
            raise StoqPluginException(
                self._describe(f"plugin {name!r} from {origin} failed to start", exc)
            ) from None
        loaded = LoadedPlugin(
            name=name,
            obj=plugin,
            hooks=dict(plugin.callers),
            is_async=dict.fromkeys(plugin.callers, True),
            required_workers=plugin.required_workers,
            timeout=timeout,
            observe=self.observe,
            config=config,
            source=target,
        )
        self.loaded[name] = loaded
        return loaded

    @contextlib.contextmanager
    def _bounded(self, name: str, doing: str, config: Optional[StoqConfigParser]) -> Iterator[None]:
        """Bound importing or starting plugin ``name`` by its timeout (else ``load_timeout``),
        and tell the user's Ctrl-C from the plugin's own ``KeyboardInterrupt``.

        A plugin whose ``__init__`` never returned once hung the whole command. The work stays
        in the calling thread (a plugin may keep thread-bound objects, such as a sqlite3
        connection, from its ``__init__``); an interval timer interrupts it there. That needs
        the main thread of a Unix process and a SIGALRM nobody else uses; elsewhere loading is
        not bounded.

        A SIGINT that arrives meanwhile raises ``Interrupted`` when the work ends, whatever the
        plugin made of it: taken for a broken plugin, a Ctrl-C while ``stoq run --consumers``
        children were importing once left one child serving on and its parent waiting forever.
        """
        limit = self.load_timeout
        if config is not None:
            own = _timeout_option(name, config)
            if own is not None:
                limit = own
        main = (
            hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        )
        timed = (
            main
            and limit
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
            and not signal.getitimer(signal.ITIMER_REAL)[0]
        )
        # Only in place of Python's own handler: a program with its own keeps it.
        watch_interrupts = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        interrupted = False

        def expire(signum: int, frame: Any) -> None:
            raise _LoadTimeout(f"{doing} took longer than {limit:g} s (its timeout)")

        def interrupt(signum: int, frame: Any) -> None:
            nonlocal interrupted
            interrupted = True
            raise Interrupted

        if watch_interrupts:
            signal.signal(signal.SIGINT, interrupt)
        if timed:
            signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield
        except BaseException:
            if interrupted:
                raise Interrupted from None
            raise
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
            if watch_interrupts:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if interrupted:  # the plugin swallowed it
            raise Interrupted

    def _describe(self, what: str, exc: BaseException) -> str:
        if isinstance(exc, _LoadTimeout):
            return self._cut(f"{what}: {exc}")
        try:
            text = str(exc)
        except BaseException:
            text = "<its str() failed>"
        return self._cut(f"{what}: {type(exc).__name__}: {text}")

    def _cut(self, text: str) -> str:
        # A plugin's 50 MB exception message once became one 50 MB line on stderr.
        length = self.max_error_length
        if len(text) <= length:
            return text
        return f"{text[: length - 40]}... ({len(text) - length + 40} characters cut)"

    def _apply_options(self, name: str, target: Any, config: StoqConfigParser) -> None:
        """Read ``$env:NAME`` values, then check the options against what ``target`` declares
        (see ``stoq_core.options``): once, at load, never per payload."""
        values = config.items("options") if config.has_section("options") else []
        for key, value in values:
            where = f"plugin {name!r}: option {key!r}"
            expanded = environment_value(value, where, StoqPluginException)
            if expanded is not value:
                config.set("options", key, expanded)
        declared = declared_options(target, name)
        if declared is None:
            return
        # Where each option was set, lowest layer first, so that messages can say.
        layers: list[tuple[Iterable[str], str]] = []
        legacy = self.legacy.get(name)
        if legacy is not None:
            layers.append((legacy.options, str(legacy.stoq_file)))
        if self.config.has_section(name):
            layers.append((self.config.options(name), f"stoq.cfg [{name}]"))
        layers.append((self.plugin_opts.get(name, {}), "--plugin-opts / plugin_opts"))
        sources = {str(key).lower(): where for keys, where in layers for key in keys}
        check_options(name, declared, config, sources)

    def _plugin_config(
        self, name: str, defaults: Mapping[str, str], documentation: Mapping[str, str]
    ) -> StoqConfigParser:
        config = StoqConfigParser()
        config.set_options("Core", {"Name": name})
        config.set_options("Documentation", documentation)
        config.set_options("options", defaults)
        if self.config.has_section(name):
            config.set_options("options", dict(self.config.items(name)))
        config.set_options("options", self.plugin_opts.get(name, {}))
        return config

    def _conflict(self, name: str, eps: tuple[PluginEntry, ...]) -> StoqPluginException:
        claims = " and ".join(f"{ep.dist_name} ({ep.value})" for ep in eps)
        return StoqPluginException(
            f"plugin name {name!r} is claimed by more than one distribution: {claims}; "
            "uninstall one of them"
        )


def _hook_implementations(
    pm: pluggy.PluginManager, obj: Any, name: str, origin: str
) -> dict[str, tuple[Callable[..., Any], bool]]:
    """Register ``obj`` with ``pm`` as ``name`` and validate its hooks: for each hook it
    implements, the callable the engine calls and whether it is async.

    The one validation of a plugin's hooks, for loading and for ``stoq list`` alike.

    :raises StoqPluginException: the hooks break the rules; ``obj`` is then not registered.
    """
    try:
        pm.register(obj, name=name)
    except ValueError as exc:  # the same object registered under another name
        raise StoqPluginException(f"plugin {name!r} from {origin}: {exc}") from exc
    except pluggy.PluginValidationError as exc:
        # pluggy's message spans several lines; the CLI shows errors as one.
        reason = " ".join(str(exc).split())
        raise StoqPluginException(f"plugin {name!r} from {origin}: {reason}") from exc
    hooks: dict[str, tuple[Callable[..., Any], bool]] = {}
    for caller in pm.get_hookcallers(obj) or ():
        if caller.spec is None:
            pm.unregister(obj)
            raise StoqPluginException(
                f"plugin {name!r} from {origin} implements {caller.name!r}, which is not a "
                f"stoQ hook (hooks: {', '.join(hookspecs.HOOK_NAMES)})"
            )
        for impl in caller.get_hookimpls():
            if impl.plugin is obj:
                hooks[caller.name] = (
                    _taking(impl.function, impl.argnames, caller.spec.argnames),
                    inspect.iscoroutinefunction(impl.function),
                )
    if not hooks:
        pm.unregister(obj)
        raise StoqPluginException(
            f"plugin {name!r} from {origin} implements none of the stoQ hooks "
            f"({', '.join(hookspecs.HOOK_NAMES)}); mark its methods with @stoq_core.hookimpl"
        )
    return hooks


def _taking(
    function: Callable[..., Any], wanted: tuple[str, ...], offered: tuple[str, ...]
) -> Callable[..., Any]:
    """``function``, called with the hook's arguments it names (pluggy lets it take fewer)."""
    if wanted == offered:
        return function
    positions = [offered.index(name) for name in wanted]

    def adapter(*args: Any) -> Any:
        return function(*(args[i] for i in positions))

    return adapter


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) came while a plugin was importing or starting: the user's interrupt,
    never that plugin's failure."""


class _LoadTimeout(BaseException):
    """Importing or starting a plugin took longer than its timeout (a BaseException, so that a
    plugin's ``except Exception`` cannot swallow it)."""


def _timeout_option(name: str, config: StoqConfigParser) -> Optional[float]:
    try:
        timeout = config.getfloat("options", "timeout", fallback=None)
    except ValueError:
        timeout = math.nan
    if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
        # ``timeout = -5`` once timed every call out at once, and ``nan`` switched it off.
        raise StoqPluginException(
            f"plugin {name!r}: option timeout must be a number of seconds >= 0 "
            f"(0: no limit), not {config.get('options', 'timeout')!r}"
        )
    return timeout


def _description_of(target: Any) -> str:
    """A plugin's own one-line description: its ``description`` attribute (class or module),
    whitespace folded; ``""`` if it has none (then its distribution's summary is shown)."""
    text = getattr(target, "description", None)
    return " ".join(text.split()) if isinstance(text, str) else ""


def _construct(cls: type, name: str, config: StoqConfigParser) -> Any:
    """``cls(config)``, with ``plugin_name`` already set on the instance when ``__init__`` runs.

    A plain class's ``__init__`` may then use ``self.plugin_name`` as a v3 plugin's does (v3's
    base class set it from the config): it is the name the plugin is registered under. A class
    that makes its own instances (its own ``__new__`` or metaclass ``__call__``) is called as
    it is, and gets ``plugin_name`` after ``__init__``; so does one whose instances cannot
    take the attribute (``__slots__``, frozen).
    """
    own: Any = cls
    if (
        own.__new__ is not object.__new__
        or own.__init__ is object.__init__  # no __init__(config): let Python say so
        or type(cls).__call__ is not type.__call__
    ):
        return own(config)
    obj: Any = object.__new__(cls)  # raises for an abstract class, as cls(config) would
    with contextlib.suppress(AttributeError):
        obj.plugin_name = name
    own.__init__(obj, config)
    return obj


def _give_v3_attributes(obj: Any, name: str, config: StoqConfigParser) -> None:
    # v3's docs show plugins whose __init__ never calls super().__init__(config); they still
    # expect plugin_name, config and log, which v3's loader provided.
    for attr, value in (
        ("plugin_name", name),
        ("config", config),
        ("log", logging.getLogger(f"stoq.{name}")),
    ):
        if not hasattr(obj, attr):
            try:
                setattr(obj, attr, value)
            except AttributeError:  # slotted or frozen objects keep what they chose
                pass
