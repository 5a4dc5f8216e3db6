"""The engine's ``[core]`` settings: their defaults, how stoq.cfg is read, and their checks.

An argument of ``Stoq`` beats the file, even a falsy one (v3 used ``arg or config``); every
number is checked before anything starts (issue 12: a negative ``max_recursion`` scanned
nothing and exited 0, and ``timeout = nan`` switched the limit off), and so is every key: a
misspelt one (``always_dispach = hash``) silently left a plugin out (issue 15).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Optional

from stoq_core.config import StoqConfigParser, environment_value, read_stoq_cfg
from stoq_core.exceptions import StoqException
from stoq_core.plugins import ROLES

__all__ = [
    "CORE_KEYS",
    "DEFAULTS",
    "LOG_SYNTAXES",
    "check_log_settings",
    "checked_number",
    "default_log_dir",
    "read_config",
]

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
    # Observability (issue 16), off unless asked for: see docs/observability.md.
    "metrics_port": 0,
    "metrics_host": "127.0.0.1",
    "tracing": False,
    # The result cache (issue 16), off unless asked for: see docs/cache.md.
    "cache": "off",
    "cache_ttl": 604800.0,
    "cache_plugins": "all",
    "cache_max_bytes": 1 << 30,
}

LOG_SYNTAXES = ("text", "json")

#: Every key ``[core]`` may hold: the settings above, each role's plugin list, and the paths.
#: ``read_config`` refuses or warns of any other, so a new ``[core]`` key goes in ``DEFAULTS``.
CORE_KEYS = frozenset(
    {*DEFAULTS, *(role.plugin_list for role in ROLES), "log_dir", "plugin_dir_list", "cache_url"}
)


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


def default_log_dir(given_base_dir: Optional[str], base_dir: str) -> Optional[str]:
    """Where the file log goes when neither the argument nor ``[core] log_dir`` says.

    v3 wrote ``base_dir/logs`` even when ``base_dir`` was only the current directory, so any
    script that made a ``Stoq()`` left a ``logs/`` behind it (issue 15). That default now
    holds only where ``base_dir`` is stoQ's: given (as the ``stoq`` command gives
    ``$STOQ_HOME``), or holding a stoq.cfg.

    :returns: ``base_dir/logs``, or ``None``: no file log, only stderr.
    """
    if given_base_dir or os.path.isfile(os.path.join(base_dir, "stoq.cfg")):
        return os.path.join(base_dir, "logs")
    return None


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
    """stoq.cfg, read as v3 read it (``%%`` is ``%``), if it exists; ``[core]`` checked.

    ``$env:NAME`` values of ``[core]`` are read now; a plugin section's when the plugin loads,
    so a variable only an unused plugin needs may be unset.

    :raises StoqException: the file is malformed, a ``[core]`` key looks like a misspelt one,
        or a ``$env:`` variable is not set.
    """
    config = StoqConfigParser()
    for section, values in read_stoq_cfg(path).items():
        if section == "core":
            check_core_keys(values, path)
            values = {
                key: environment_value(value, f"{path}: [core] {key}")
                for key, value in values.items()
            }
        config.set_options(section, values)
    return config


def check_core_keys(values: dict[str, str], path: str) -> None:
    """Refuse a ``[core]`` key that is close to a known one; warn of any other unknown key.

    A typo is refused: ``always_dispach = hash`` taken silently runs a scan without its worker,
    which is worse than not starting. A key like no known one is only logged, as v3 ignored
    unknown keys and a v3 stoq.cfg may hold some.
    """
    for key in values:
        if key in CORE_KEYS:
            continue
        import difflib  # only for this message

        close = difflib.get_close_matches(key, sorted(CORE_KEYS), n=1)
        if close:
            raise StoqException(f"{path}: [core] has no key {key!r}; did you mean {close[0]!r}?")
        logging.getLogger("stoq").warning(
            "%s: [core] %s is not a stoQ setting; it is ignored (see docs/configuration.md)",
            path,
            key,
        )
