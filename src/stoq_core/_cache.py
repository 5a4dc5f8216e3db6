"""The result cache: a worker's response to the same bytes, at the same version, with the same
options, is reused instead of scanning again (issue 16).

A cached response is keyed by the payload's sha256, the worker's name and its identity: its
version (the distribution's, or a v3 plugin's ``.stoq`` Version), a hash of the file of the
module that defines it (an editable install or a v3 plugin edited in place changes it too) and a
hash of its effective options. Any change of these is a miss. What is kept is what the worker
returned (results, errors, ``dispatch_to`` and its extracted payloads, at most
``MAX_EXTRACTED_BYTES`` of them), written as the response's JSON writes it; on a hit it is filed
exactly as a fresh response would be (``Rounds._take_worker``), so the limits and the rounds
treat it the same, and the payload's results say which workers were reused (``cached``).

Not cached: a call that failed or timed out, a response whose results were refused, a lazily
extracted (iterator) or larger extraction, and workers whose results may depend on more than the
bytes: those with ``required_workers`` and those that declare ``cacheable = False``.

A backend that fails never fails a scan: the lookup is a miss, one warning is logged, and the
backend is left alone for ``RETRY_AFTER`` seconds (a Redis that is down would otherwise cost
every payload a connection attempt).
"""

from __future__ import annotations

import abc
import base64
import binascii
import datetime
import hashlib
import inspect
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

import attrs

from stoq_core.data_classes import Error, ExtractedPayload, Payload, PayloadMeta, WorkerResponse
from stoq_core.exceptions import StoqException
from stoq_core.helpers import dumps

if TYPE_CHECKING:
    from stoq_core._manager import LoadedPlugin, PluginManager

__all__ = [
    "BACKENDS",
    "CACHE_ENTRY_POINT_GROUP",
    "MAX_EXTRACTED_BYTES",
    "RETRY_AFTER",
    "CacheBackend",
    "CacheSettings",
    "ResultCache",
    "open_cache",
]

#: Cache backends of installed distributions, by the name ``[core] cache`` gives them
#: (stoq-plugin-redis declares ``redis``).
CACHE_ENTRY_POINT_GROUP = "stoq.cache"

#: The core's own values of ``[core] cache``: none, and sqlite in ``$STOQ_HOME/cache``.
BACKENDS = ("off", "local")

#: Bytes of extracted payloads one cached response may hold; a worker that extracts more is
#: run again each time (its payloads would make the cache a second archive).
MAX_EXTRACTED_BYTES = 1 << 20

#: Seconds a backend that failed is left alone before it is tried again.
RETRY_AFTER = 30.0

# Options that change how a plugin runs, not what it returns: not part of its identity.
_HOW_OPTIONS = frozenset(
    {"timeout", "isolate", "isolate_memory", "isolate_recycle", "isolate_processes"}
)
_FORMAT = 1  # of a cached entry; bumped when its layout changes (older entries are misses)
_FIELDS = frozenset({"results", "errors", "dispatch_to", "extracted", "stored"})

log = logging.getLogger("stoq")


@attrs.frozen
class CacheSettings:
    """The ``[core]`` cache settings, as a backend is given them.

    :param backend: ``local``, or the name of a backend in the ``stoq.cache`` entry-point group.
    :param ttl: seconds an entry is kept; 0: until the backend drops it.
    :param plugins: the workers whose results are cached; ``None``: every cacheable worker.
    :param url: where the backend keeps entries (a directory for ``local``, a URL for Redis);
        ``""``: the backend's default.
    :param max_bytes: about how large the ``local`` backend's file may grow.
    :param home: stoQ's home (``Stoq.base_dir``); ``local`` keeps its file under it by default.
    """

    backend: str
    ttl: float = 0.0
    plugins: Optional[frozenset[str]] = None
    url: str = ""
    max_bytes: int = 1 << 30
    home: str = "."


class CacheBackend(abc.ABC):
    """Where cached worker responses are kept: keys and values are opaque to a backend.

    A backend is named by ``[core] cache`` and found in the ``stoq.cache`` entry-point group;
    the entry point names a callable (the class itself, usually) taking ``CacheSettings``.
    Its methods are called from the event loop, once per scan round, so they must be quick
    and bounded (a short socket timeout); whatever they raise is a miss, never a scan error.
    """

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> Sequence[Optional[bytes]]:
        """The value kept for each of ``keys``, ``None`` for those it does not hold (or that
        expired), in the order of ``keys``."""

    @abc.abstractmethod
    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        """Keep each ``(key, value)`` for ``ttl`` seconds (0: no expiry of its own)."""

    def close(self) -> None:  # noqa: B027 (optional: most backends hold nothing to release)
        """Release connections and files; the backend is not used after."""


@attrs.define(eq=False)
class _Identity:
    """What a worker's cache keys are made of; ``key`` is ``None`` for a worker not cached."""

    key: Optional[str]
    plugin: Any  # the LoadedPlugin it was made for (a v3 plugin's requirements may change)


class ResultCache:
    """The engine's side of the cache: keys, entries, and a backend that may fail."""

    __slots__ = ("_failing", "_identities", "_resume_at", "backend", "plugins", "settings")

    def __init__(
        self, settings: CacheSettings, backend: CacheBackend, plugins: PluginManager
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.plugins = plugins
        self._identities: dict[str, _Identity] = {}
        self._failing = False
        self._resume_at = 0.0

    # -- keys ------------------------------------------------------------------------------

    def key(self, payload: Payload, worker: LoadedPlugin) -> Optional[str]:
        """The key of ``worker``'s response to ``payload``, or ``None`` if it is not cached."""
        identity = self._identities.get(worker.name)
        if identity is None or identity.plugin is not worker:
            try:
                made = self._identify(worker)
            except Exception as exc:  # a plugin's odd config must cost its caching, not the scan
                log.warning("result cache: not caching %s: %s", worker.name, exc)
                made = None
            identity = self._identities[worker.name] = _Identity(made, worker)
        if identity.key is None or (worker.late and worker.requirements()):
            return None
        return f"{payload.digest()}/{worker.name}/{identity.key}"

    def _identify(self, worker: LoadedPlugin) -> Optional[str]:
        """The hash of ``worker``'s version, module file and options; ``None``: not cached."""
        wanted = self.settings.plugins
        if wanted is not None and worker.name not in wanted:
            return None
        source = worker.source if worker.source is not None else worker.obj
        if getattr(source, "cacheable", True) is False or worker.requirements():
            return None
        config = worker.config
        version, options = "", []
        if config is not None:
            version = config.get("Documentation", "version", fallback="") or ""
            if config.has_section("options"):
                options = sorted(
                    (key, value)
                    for key, value in config.items("options")
                    if key not in _HOW_OPTIONS
                )
        legacy = self.plugins.legacy.get(worker.name)
        module_file = str(legacy.module_file) if legacy is not None else _module_file(source)
        text = json.dumps([version, _file_hash(module_file), options])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    # -- the backend -----------------------------------------------------------------------

    def get(self, keys: Sequence[Optional[str]]) -> list[Optional[dict[str, Any]]]:
        """The entry kept for each key (``None``: a miss, or no key)."""
        found: list[Optional[dict[str, Any]]] = [None] * len(keys)
        asked = [(index, key) for index, key in enumerate(keys) if key is not None]
        if not asked or not self._usable():
            return found
        try:
            values = self.backend.get_many([key for _, key in asked])
            if len(values) != len(asked):
                raise StoqException(f"returned {len(values)} values for {len(asked)} keys")
        except Exception as exc:
            self._failed("a lookup", exc)
            return found
        self._answered()
        for (index, key), value in zip(asked, values):
            if value is not None:
                found[index] = _decode(key, value)
        return found

    def put(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Keep ``items``; a backend that fails only costs the next scan a miss."""
        if not items or not self._usable():
            return
        try:
            self.backend.set_many(items, self.settings.ttl)
        except Exception as exc:
            self._failed("storing results", exc)
            return
        self._answered()

    def _usable(self) -> bool:
        return not self._failing or time.monotonic() >= self._resume_at

    def _failed(self, doing: str, exc: Exception) -> None:
        self._resume_at = time.monotonic() + RETRY_AFTER
        if not self._failing:  # one warning per outage, not one per payload
            self._failing = True
            log.warning(
                "result cache %r: %s failed (%s: %s); scanning without the cache, trying it "
                "again in %g s",
                self.settings.backend,
                doing,
                type(exc).__name__,
                exc,
                RETRY_AFTER,
            )

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("result cache %r: answering again", self.settings.backend)

    def close(self) -> None:
        """Close the backend (its errors are logged, not raised)."""
        try:
            self.backend.close()
        except Exception as exc:
            log.warning("result cache %r: closing failed: %s", self.settings.backend, exc)

    # -- entries ---------------------------------------------------------------------------

    @staticmethod
    def capture(payload: Payload, outcome: Any) -> Optional[dict[str, Any]]:
        """What to keep of a worker's ``outcome`` for ``payload``; ``None``: not cacheable.

        Called before the response is filed (filing reads an iterator of extracted payloads,
        which could not be read again), so the results are checked after (``store``).
        """
        if not isinstance(outcome, WorkerResponse):
            return None
        extracted, errors = outcome.extracted, outcome.errors
        if type(extracted) is not list or type(errors) is not list:
            return None
        dispatch_to = outcome.dispatch_to
        if type(dispatch_to) is not list or not all(type(n) is str for n in dispatch_to):
            return None
        kept = []
        held = 0
        for child in extracted:
            if not isinstance(child, ExtractedPayload) or not isinstance(
                child.payload_meta, PayloadMeta
            ):
                return None  # filing reports it; the next scan should too
            try:
                content = bytes(child.content)
            except TypeError:
                return None
            held += len(content)
            if held > MAX_EXTRACTED_BYTES:
                return None
            meta = child.payload_meta
            kept.append(
                {
                    "content": base64.b64encode(content).decode("ascii"),
                    "should_archive": meta.should_archive,
                    "should_scan": meta.should_scan,
                    "extra_data": meta.extra_data,
                    "dispatch_to": meta.dispatch_to if type(meta.dispatch_to) is list else None,
                }
            )
        own = payload.results.payload_id if errors else None
        return {
            "format": _FORMAT,
            "results": outcome.results,
            "errors": [_error_entry(error, own) for error in errors],
            "dispatch_to": dispatch_to,
            "extracted": kept,
        }

    @staticmethod
    def encode(entry: dict[str, Any], stored: str) -> bytes:
        """The backend's value for ``entry``: its JSON, as the response's JSON writes it."""
        entry["stored"] = stored
        return dumps(entry, compactly=True).encode()

    @staticmethod
    def replay(entry: dict[str, Any], payload: Payload, key: str) -> Optional[WorkerResponse]:
        """The ``WorkerResponse`` a cached ``entry`` stands for, made for ``payload``; ``None``
        (a miss) if the entry is not laid out as this stoQ writes them: a shared backend may
        hold what another program, or a buggy version, wrote under the right format."""
        try:
            return _replay(entry, payload)
        except (TypeError, ValueError, KeyError, binascii.Error):
            log.debug("result cache: entry %s is not one this stoQ wrote; scanning again", key)
            return None


def _replay(entry: dict[str, Any], payload: Payload) -> WorkerResponse:
    if type(entry["stored"]) is not str:
        raise TypeError("stored is not a time")
    for name in ("errors", "extracted"):
        if type(entry[name]) is not list:
            raise TypeError(f"{name} is not a list")
    errors: list[Any] = []
    for error in entry["errors"]:
        if isinstance(error, str):
            errors.append(error)
        else:
            text, plugin_name, same, payload_id = error
            if type(text) is not str or not all(
                part is None or type(part) is str for part in (plugin_name, payload_id)
            ):
                raise TypeError("an error is not text and names")
            errors.append(
                Error(text, plugin_name, payload.results.payload_id if same else payload_id)
            )
    extracted = [
        ExtractedPayload(
            base64.b64decode(child["content"], validate=True),
            PayloadMeta(
                _flag(child["should_archive"]),
                _flag(child["should_scan"]),
                _mapping(child["extra_data"]),
                _names(child["dispatch_to"]),
            ),
        )
        for child in entry["extracted"]
    ]
    return WorkerResponse(entry["results"], extracted, errors, _names(entry["dispatch_to"]))


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError("not true or false")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError("not an object")
    return value


def _names(value: Any) -> list[str]:
    # A string is iterable too: "abc" once dispatched to plugins a, b and c.
    if type(value) is not list or not all(type(name) is str for name in value):
        raise TypeError("not a list of plugin names")
    return value


def stored_now() -> str:
    """When entries stored now were made, as a cached mark says it (ISO 8601, UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _error_entry(error: Any, own: Optional[str]) -> Any:
    """An error a worker returned, kept so that it names the payload it is replayed for."""
    if isinstance(error, Error):
        same = own is not None and error.payload_id == own
        return [error.error, error.plugin_name, same, None if same else error.payload_id]
    return error if isinstance(error, str) else str(error)


def _decode(key: str, value: bytes) -> Optional[dict[str, Any]]:
    """A backend's value as an entry; ``None`` (a miss) if it is not one this version wrote."""
    try:
        entry = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        entry = None
    if type(entry) is dict and entry.get("format") == _FORMAT and _FIELDS <= entry.keys():
        return entry
    log.debug("result cache: entry %s is not one this stoQ wrote; scanning again", key)
    return None


def _module_file(source: Any) -> Optional[str]:
    module = source if inspect.ismodule(source) else sys.modules.get(_module_name(source))
    return getattr(module, "__file__", None)


def _module_name(source: Any) -> str:
    cls = source if inspect.isclass(source) else type(source)
    return str(getattr(cls, "__module__", ""))


def _file_hash(path: Optional[str]) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return ""


# -- opening ---------------------------------------------------------------------------------


def backend_name(given: Any, configured: Any) -> str:
    """The backend a ``Stoq`` uses: its ``cache`` argument, else ``[core] cache``.

    ``True`` (``--cache``) is stoq.cfg's backend, or ``local`` if it names none; ``False``
    (``--no-cache``) is ``off``.
    """
    configured = str(configured or "off").strip().lower()
    if given is True:
        return configured if configured != "off" else "local"
    if given is False:
        return "off"
    return configured if given is None else str(given).strip().lower()


def plugin_names(value: Any) -> Optional[frozenset[str]]:
    """``[core] cache_plugins`` (``all``, or names) as names; ``None``: every worker."""
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(name).strip() for name in names if str(name).strip()]
    if names == ["all"]:
        return None
    return frozenset(names)


def open_cache(settings: CacheSettings, plugins: PluginManager) -> Optional[ResultCache]:
    """The cache ``settings`` describe, or ``None`` when it is off.

    The backend is found now, so that a misspelt name stops the run before any scan; it
    connects (or makes its file) on first use.

    :raises StoqException: no backend has that name, or it cannot be made.
    """
    name = settings.backend
    if name == "off":
        return None
    for plugin in sorted(settings.plugins or ()):
        if plugin not in plugins.available():
            raise StoqException(f"[core] cache_plugins: {plugins.not_found(plugin)}")
    if name == "local":
        from stoq_core._cache_local import LocalCache

        return ResultCache(settings, LocalCache(settings), plugins)
    factory = _installed_backends().get(name)
    if factory is None:
        import difflib  # only for this message

        known = sorted({*BACKENDS, *_installed_backends()})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise StoqException(
            f"[core] cache: no cache backend {name!r}{hint} (known: {', '.join(known)}; "
            "plugin distributions add others through the 'stoq.cache' entry points)"
        )
    try:
        backend = factory.load()(settings)
    except StoqException:
        raise
    except Exception as exc:
        raise StoqException(
            f"[core] cache: backend {name!r} ({factory.value}) failed to start: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(backend, CacheBackend):
        raise StoqException(
            f"[core] cache: backend {name!r} ({factory.value}) made a {type(backend).__name__}, "
            "not a stoq_core.CacheBackend"
        )
    return ResultCache(settings, backend, plugins)


def _installed_backends() -> Mapping[str, Any]:
    # Read only when a backend of a distribution is named: importlib.metadata costs 25-30 ms.
    import importlib.metadata

    return {ep.name: ep for ep in importlib.metadata.entry_points(group=CACHE_ENTRY_POINT_GROUP)}
