"""The ``stoq`` logger: its handlers, and the debug lines of a scan (loading, routing, timings).

The handlers are installed once per process however many ``Stoq`` objects exist: v3 added a new
pair for every ``Stoq()``, so each log line was repeated once per instance ever made; here a new
instance replaces the handlers the previous one installed.

At debug level a scan says which workers each payload got and why (``Routing``), and how long
each plugin call took (``timed``). Off, that must cost a scan nothing: ``isEnabledFor`` costs
about 900 instructions, 2% of a whole scan, so the scan path reads ``debugging``, set here
when the level is, and the call timings are a wrapper put on a plugin's hooks only when it is
loaded at debug level (issue 15).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from logging.handlers import RotatingFileHandler
from typing import TYPE_CHECKING, Any, Optional

from stoq_core._printable import printable

if TYPE_CHECKING:
    from stoq_core.data_classes import Payload

__all__ = ["Routing", "configure", "debugging", "timed"]

_installed: dict[str, logging.Handler] = {}

#: The ``stoq`` logger shows debug lines, as ``configure`` last set its level. A program that
#: changes the level by hand afterwards calls ``configure`` again (a new ``Stoq`` does).
debugging = False

log = logging.getLogger("stoq")

_TEXT_FORMAT = "[%(asctime)s %(levelname)s] %(name)s: %(message)s"


class _TextFormatter(logging.Formatter):
    """The text log lines, made printable (``printable``): messages name files and payloads."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), newlines=True)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(
    level: str,
    log_dir: Optional[str],
    max_bytes: int,
    backup_count: int,
    syntax: str,
) -> logging.Logger:
    """Set the ``stoq`` logger's level, a stderr handler and, with ``log_dir``, a rotating file."""
    global debugging
    logger = logging.getLogger("stoq")
    logger.setLevel(level.upper())
    debugging = logger.isEnabledFor(logging.DEBUG)
    formatter: logging.Formatter = (
        _JsonFormatter() if syntax == "json" else _TextFormatter(_TEXT_FORMAT)
    )
    wanted: dict[str, logging.Handler] = {"stderr": logging.StreamHandler()}
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.abspath(os.path.join(log_dir, "stoq.log"))
        wanted["file"] = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, delay=True
        )
    for key in set(_installed) | set(wanted):
        old = _installed.pop(key, None)
        if old is not None:
            logger.removeHandler(old)
            old.close()
        new = wanted.get(key)
        if new is not None:
            new.setFormatter(formatter)
            logger.addHandler(new)
            _installed[key] = new
    return logger


def _payload(payload: Payload) -> str:
    """A payload as a debug line names it: its id's first 8 characters, and its file name."""
    results = payload.results
    name = results.payload_meta.extra_data.get("filename")
    return results.payload_id[:8] + (f" ({name})" if name else "")


def _about(args: tuple[Any, ...]) -> str:
    """What a hook's first argument is about: a payload, a response, or nothing said."""
    if not args:
        return ""
    first = args[0]
    if hasattr(getattr(first, "results", None), "payload_meta"):  # a Payload
        return f" of payload {_payload(first)}"
    scan_id = getattr(first, "scan_id", None)
    if isinstance(scan_id, str):  # a StoqResponse
        return f" of scan {scan_id[:8]}"
    return ""


def timed(
    plugin: str, hook: str, caller: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``caller``, logging at debug level how long each call took and how it ended.

    Put on a plugin's hooks when it is loaded at debug level only: a call then costs one more
    coroutine, and none at all otherwise.
    """

    async def call(*args: Any) -> Any:
        began = time.perf_counter()
        ended = "took"
        try:
            return await caller(*args)
        except BaseException as exc:  # the engine records it; here only how long it ran
            ended = f"raised {type(exc).__name__} after"
            raise
        finally:
            took = (time.perf_counter() - began) * 1000
            log.debug("plugin %s: %s%s %s %.2f ms", plugin, hook, _about(args), ended, took)

    return call


class Routing:
    """The reasons one request's payloads get their workers, logged round by round at debug.

    Made per request only while ``debugging``; the rounds record the reasons they alone know
    (a dispatcher's pick, a ``required_workers`` dependency, a worker deferred until its
    requirements ran) and ``log_round`` adds those the work shows (start and always dispatch,
    ``dispatch_to``).
    """

    __slots__ = ("deferred", "reasons")

    def __init__(self) -> None:
        self.reasons: dict[tuple[Payload, str], list[str]] = {}
        self.deferred: set[tuple[Payload, str]] = set()

    def because(self, payload: Payload, worker: str, reason: str) -> None:
        """``worker`` is to run on ``payload`` for ``reason`` (a dispatcher picked it...)."""
        self.reasons.setdefault((payload, worker), []).append(reason)

    def defer(self, payload: Payload, worker: str) -> None:
        """``worker`` waits a round for the ``required_workers`` it lacks on ``payload``."""
        self.deferred.add((payload, worker))

    def log_round(
        self,
        round_number: int,
        payloads: Iterable[Payload],
        work: Iterable[tuple[Payload, str]],
        owed: Mapping[Payload, Iterable[str]],
        always: Iterable[str],
    ) -> None:
        """Log each payload's workers this round with their reasons; in the first round, the
        payloads that got none too."""
        always = set(always)
        got: dict[Payload, list[str]] = {}
        for payload, worker in work:
            got.setdefault(payload, []).append(worker)
        for payload, workers in got.items():
            requested = set(owed.get(payload, ()))
            described = []
            for worker in workers:
                key = (payload, worker)
                why = self.reasons.pop(key, [])
                if worker in requested:
                    if key in self.deferred:
                        self.deferred.discard(key)
                        why.insert(0, "its required_workers ran first")
                    elif round_number == 1 and not payload.results.extracted_from:
                        why.insert(0, "start dispatch")
                    else:
                        why.insert(0, "dispatch_to")
                if worker in always:
                    why.append("always dispatch")
                described.append(f"{worker} ({', '.join(why) or 'requested'})")
            log.debug(
                "round %d: payload %s gets %s",
                round_number,
                _payload(payload),
                ", ".join(described),
            )
        if round_number == 1:
            for payload in payloads:
                if payload not in got and payload.results.payload_meta.should_scan:
                    log.debug(
                        "round 1: payload %s gets no worker (no start dispatch, always dispatch "
                        "or dispatcher chose one)",
                        _payload(payload),
                    )
        # A dispatcher's picks that did not run (already run, or given up) are not carried on.
        self.reasons.clear()
