"""The ``stoq`` logger's handlers, installed once per process however many ``Stoq`` objects exist.

v3 added a new pair of handlers for every ``Stoq()``, so each log line was repeated once per
instance ever made; here a new instance replaces the handlers the previous one installed.
"""

from __future__ import annotations

import json
import logging
import os
from logging.handlers import RotatingFileHandler
from typing import Optional

__all__ = ["configure"]

_installed: dict[str, logging.Handler] = {}

_TEXT_FORMAT = "[%(asctime)s %(levelname)s] %(name)s: %(message)s"


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
    logger = logging.getLogger("stoq")
    logger.setLevel(level.upper())
    formatter: logging.Formatter = (
        _JsonFormatter() if syntax == "json" else logging.Formatter(_TEXT_FORMAT)
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
