"""Configuration: ``stoq.cfg`` and the per-plugin ``StoqConfigParser``.

A plugin's options live in the ``options`` section. They are layered, highest first: options given
at the call (``--plugin-opts``, ``Stoq(plugin_opts=...)``), the ``[plugin_name]`` section of
stoq.cfg, and the plugin's own defaults (its declared ``Option`` defaults; a legacy plugin's
``[options]`` in its .stoq file; a plugin's ``fallback=`` values).

stoq.cfg and .stoq files take inline comments after whitespace (``timeout = 30  ; seconds``),
and a value written ``$env:NAME`` is the environment variable NAME (datasette's ``$env``).
"""

from __future__ import annotations

import configparser
import json
import os
import re
from collections.abc import Iterable, Mapping
from configparser import ConfigParser, InterpolationError
from typing import Any, Optional

from stoq_core.exceptions import StoqException

__all__ = [
    "INLINE_COMMENT_PREFIXES",
    "StoqConfigParser",
    "environment_value",
    "ini_parser",
    "option_text",
    "read_stoq_cfg",
    "section_values",
    "strip_inline_comment",
]

_UNSET: Any = object()

#: What starts an inline comment in stoq.cfg and .stoq files (issue 15: the README's own
#: example, ``timeout = 600 ; seconds``, failed as the value '600 ; seconds'); only after
#: whitespace, so ``url = http://h/#x`` and ``password = a;b`` keep theirs.
INLINE_COMMENT_PREFIXES = (";", "#")

_INLINE_COMMENT = re.compile(r"[ \t]+[;#]")
_ENVIRONMENT = re.compile(r"\$env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


def strip_inline_comment(line: str) -> str:
    """``line`` of an INI file without its inline comment, if it has one.

    A comment starts at a ``;`` or ``#`` that follows whitespace and some of the value: a value
    that starts with one is kept whole (``separator = ;``, as v3 read it), which
    configparser's own ``inline_comment_prefixes`` would have emptied.
    """
    text = line.lstrip()
    if not text or text[0] in INLINE_COMMENT_PREFIXES:
        return line  # blank, or a whole-line comment
    start = len(line) - len(text)  # a section header or a continued value: all of it
    if not start and not text.startswith("["):
        # ``key = value``: the value starts after the first delimiter, and its blanks.
        delimiters = [at for at in (line.find("="), line.find(":")) if at >= 0]
        if not delimiters:
            return line
        after = min(delimiters) + 1
        value = line[after:].lstrip()
        if not value.strip():
            return line
        start = len(line) - len(value)
    found = _INLINE_COMMENT.search(line, start)
    if found is None:
        return line
    return line[: found.start()] + ("\n" if line.endswith("\n") else "")


class _IniParser(ConfigParser):
    """v3's parser (basic interpolation), taking inline comments (``strip_inline_comment``)."""

    def read_file(self, f: Iterable[str], source: Optional[str] = None) -> None:
        name = source or getattr(f, "name", "<???>")
        super().read_file((strip_inline_comment(line) for line in f), name)


def ini_parser() -> ConfigParser:
    """A parser for stoq.cfg and .stoq files: v3's (``%%`` is ``%``), with inline comments."""
    return _IniParser()


def environment_value(value: Any, where: str, error: type[StoqException] = StoqException) -> Any:
    """``value``, or the environment variable it names if it is written ``$env:NAME``.

    Only a whole value is replaced (``$env:REDIS_PASSWORD``), so a secret need not be written in
    stoq.cfg or on a command line, where ``ps`` shows it.

    :param where: what holds the value, for the message: ``plugin 'redis': option 'password'``.
    :raises StoqException: (or ``error``) the variable is not set.
    """
    if not isinstance(value, str):
        return value
    match = _ENVIRONMENT.fullmatch(value.strip())
    if match is None:
        return value
    name = match["name"]
    found = os.environ.get(name)
    if found is None:
        raise error(f"{where} is {value.strip()}, but the environment variable {name} is not set")
    return found


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
    parser = ini_parser()
    try:
        with open(path, encoding="utf-8-sig") as handle:
            parser.read_file(handle)
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise StoqException(f"{path} is not a valid stoq.cfg: {first_line}") from None
    except OSError as exc:
        raise StoqException(f"cannot read {path}: {exc.strerror}") from None
    return {section: section_values(parser, section) for section in parser.sections()}
