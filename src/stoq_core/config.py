"""Configuration: ``stoq.cfg`` and the per-plugin ``StoqConfigParser``.

A plugin's options live in the ``options`` section. They are layered, highest first: options given
at the call (``--plugin-opts``, ``Stoq(plugin_opts=...)``), the ``[plugin_name]`` section of
stoq.cfg, and the plugin's own defaults (a legacy plugin's ``[options]`` in its .stoq file; a
plugin's ``fallback=`` values).
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from configparser import ConfigParser, InterpolationError
from typing import Any

from stoq_core.exceptions import StoqException

__all__ = ["StoqConfigParser", "option_text", "read_stoq_cfg", "section_values"]

_UNSET: Any = object()


def option_text(value: Any) -> str:
    """The text form a value takes in a config, so the typed getters read it back.

    Lists, sets and dicts become JSON (``getlist`` and ``getjson`` both read a JSON array), booleans
    ``true``/``false``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=str)
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value, default=str)
    if value is None:
        return ""
    return str(value)


class StoqConfigParser(ConfigParser):
    """A ``ConfigParser`` with v3's typed getters: ``getlist``, ``getset`` and ``getjson``.

    Interpolation is off: option values such as ``%Y/%m/%d`` are taken literally.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("interpolation", None)
        super().__init__(*args, **kwargs)

    def set_options(self, section: str, values: Mapping[str, Any]) -> None:
        """Set several options of ``section`` (created if missing), any value type accepted."""
        if not self.has_section(section):
            self.add_section(section)
        for key, value in values.items():
            self.set(section, str(key), option_text(value))

    def getlist(self, section: str, option: str, *, fallback: Any = _UNSET, **kwargs: Any) -> Any:
        """``a, b , c`` as ``['a', 'b', 'c']`` (blank items dropped); ``fallback`` if unset.

        A JSON array (``["a", "b"]``, what a Python list given in ``plugin_opts`` becomes) is
        read as that list.
        """
        value = self.get(section, option, fallback=None, **kwargs)
        if value is None:
            if fallback is _UNSET:
                self.get(section, option)  # raises the usual NoOptionError / NoSectionError
            return fallback
        if value.lstrip().startswith("["):
            try:
                items = json.loads(value)
            except ValueError:
                pass
            else:
                if isinstance(items, list):
                    return items
        return [item.strip() for item in value.split(",") if item.strip()]

    def getset(self, section: str, option: str, *, fallback: Any = _UNSET, **kwargs: Any) -> Any:
        """Like ``getlist``, as a set."""
        value = self.getlist(section, option, fallback=None, **kwargs)
        if value is None:
            if fallback is _UNSET:
                self.get(section, option)
            return fallback
        return set(value)

    def getjson(self, section: str, option: str, *, fallback: Any = _UNSET, **kwargs: Any) -> Any:
        """The option parsed as JSON; ``fallback`` (or ``{}``) if unset or blank."""
        value = self.get(section, option, fallback=None, **kwargs)
        if value is None or not value.strip():
            return {} if fallback is _UNSET else fallback
        return json.loads(value)


def section_values(parser: ConfigParser, section: str) -> dict[str, str]:
    """A section's values as v3 read them: ``%%`` is ``%``, ``%(key)s`` expands.

    v3 read stoq.cfg and .stoq files with ConfigParser's basic interpolation, so their authors
    wrote ``%%Y`` for ``%Y``; a value that does not interpolate (a bare ``%``) is taken as written
    rather than failing the whole file.
    """
    if not parser.has_section(section):
        return {}
    values = {}
    for key in parser.options(section):
        try:
            values[key] = parser.get(section, key)
        except InterpolationError:
            values[key] = parser.get(section, key, raw=True)
    return values


def read_stoq_cfg(path: str) -> dict[str, dict[str, str]]:
    """The sections of the stoq.cfg at ``path`` as v3 read them (``%%`` is ``%``); ``{}`` if
    there is no such file.

    :raises StoqException: it cannot be read or parsed (one line saying why).
    """
    if not os.path.isfile(path):
        return {}
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8-sig") as handle:
            parser.read_file(handle)
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise StoqException(f"{path} is not a valid stoq.cfg: {first_line}") from None
    except OSError as exc:
        raise StoqException(f"cannot read {path}: {exc.strerror}") from None
    return {section: section_values(parser, section) for section in parser.sections()}
