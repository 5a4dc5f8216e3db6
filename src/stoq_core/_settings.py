"""The engine's ``[core]`` settings: their defaults, how stoq.cfg is read, and their checks.

An argument of ``Stoq`` beats the file, even a falsy one (v3 used ``arg or config``); every
number is checked before anything starts (issue 12: a negative ``max_recursion`` scanned
nothing and exited 0, and ``timeout = nan`` switched the limit off).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from stoq_core.config import StoqConfigParser, read_stoq_cfg
from stoq_core.exceptions import StoqException

__all__ = ["DEFAULTS", "LOG_SYNTAXES", "check_log_settings", "checked_number", "read_config"]

# [core] defaults, as v3 had them.
DEFAULTS = {
    "max_queue": 100,
    "provider_consumers": 2,
    "max_recursion": 10,
    "max_required_worker_depth": 10,
    "log_level": "INFO",
    "log_maxbytes": 1500000,
    "log_backup_count": 5,
    "log_syntax": "text",
    "timeout": 600.0,
    "deadline": 0.0,
    "max_payloads": 10_000,
    "max_extracted_bytes": 1 << 30,
    "max_payload_size": 256 << 20,
    "max_result_size": 64 << 20,
    "max_errors": 1000,
    "max_error_length": 4096,
}

LOG_SYNTAXES = ("text", "json")


def checked_number(key: str, value: Any, kind: type, least: int, source: Any) -> Any:
    """``value`` as ``kind`` if it is a finite number >= ``least``; else a StoqException.

    :param source: the config file the value came from, or a false value for an argument.
    """
    where = f"{source}: [core] {key}" if source else key
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and number != float(value)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number) or number < least:
        what = "a whole number" if kind is int else "a number of seconds"
        raise StoqException(f"{where} must be {what} >= {least}, not {value!r}")
    return number


def check_log_settings(level: Any, syntax: Any, config_file: str) -> None:
    if not isinstance(level, str) or not isinstance(logging.getLevelName(level.upper()), int):
        raise StoqException(
            f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {level!r} "
            f"(from the argument or {config_file})"
        )
    if str(syntax).lower() not in LOG_SYNTAXES:
        raise StoqException(
            f"log_syntax must be {' or '.join(LOG_SYNTAXES)}, not {syntax!r} (from {config_file})"
        )


def read_config(path: str) -> StoqConfigParser:
    """stoq.cfg, read as v3 read it (``%%`` is ``%``), if it exists."""
    config = StoqConfigParser()
    for section, values in read_stoq_cfg(path).items():
        config.set_options(section, values)
    return config
