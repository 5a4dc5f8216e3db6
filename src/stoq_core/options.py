"""Plugin options declared by the plugin: name, type, default and help, checked once at load.

A plugin lists what it takes in an attribute named ``options`` (of its class, or of its module
for a module plugin)::

    class NulCounter:
        options = (
            Option("threshold", int, 16, "NUL bytes from which a payload counts as padded"),
        )

        def __init__(self, config: StoqConfigParser) -> None:
            self.threshold = config.getint("options", "threshold")  # 16 unless set

When such a plugin loads, before it is constructed, the options it was given (``--plugin-opts``,
``Stoq(plugin_opts=...)``, its stoq.cfg section) are checked against the declarations: an option
it does not declare (and the core does not read, ``CORE_OPTIONS``) is refused with a "did you
mean", a value that does not parse as its type is refused in one line, and each unset option
with a default gets that default, so the typed getters need no ``fallback``. A plugin without an
``options`` attribute (every v3 plugin) is given whatever it is given, unchecked, as before.

The values stay text in the ``options`` section of the plugin's ``StoqConfigParser``: a plugin
reads them through the same getters whether it declares its options or not.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import attrs

from stoq_core.config import StoqConfigParser, option_text
from stoq_core.exceptions import StoqPluginException

__all__ = ["CORE_OPTIONS", "OPTION_TYPES", "Option", "check_options", "declared_options"]

#: The types an option may have, and how a value of each is described in messages: the getter
#: a plugin reads it with is ``get``, ``getint``, ``getfloat``, ``getboolean``, ``getlist``,
#: ``getset`` and ``getjson`` respectively.
OPTION_TYPES: dict[type, str] = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list (a, b or a JSON array)",
    set: "a list (a, b or a JSON array)",
    dict: "a JSON object",
}

_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]*")


def _check_name(instance: Option, attribute: Any, name: str) -> None:
    # configparser lowercases option names, so 'MaxSize' could never be told apart from 'maxsize'.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"option name {name!r} must be lowercase letters, digits, '_', '-' or '.'")


def _check_type(instance: Option, attribute: Any, kind: type) -> None:
    if kind not in OPTION_TYPES:
        names = ", ".join(kind.__name__ for kind in OPTION_TYPES)
        raise ValueError(f"option {instance.name!r}: type must be one of {names}, not {kind!r}")


def _check_default(instance: Option, attribute: Any, default: Any) -> None:
    if default is None:
        return
    kind = instance.type
    accepted: tuple[type, ...] = {
        float: (int, float),
        list: (list, tuple),
        set: (set, frozenset, list, tuple),
    }.get(kind, (kind,))
    if not isinstance(default, accepted) or (kind in (int, float) and isinstance(default, bool)):
        raise ValueError(f"option {instance.name!r}: default {default!r} is not a {kind.__name__}")


@attrs.frozen
class Option:
    """One option a plugin takes.

    :param name: as users write it: ``--plugin-opts NAME:name=...``, ``name = ...`` in stoq.cfg.
    :param type: ``str``, ``int``, ``float``, ``bool``, ``list``, ``set`` or ``dict`` (a JSON
        object); a given value must parse as it (``getint``, ``getboolean``...).
    :param default: the value when the option is not given; ``None``: no default (the plugin
        decides what unset means).
    :param help: one line for ``stoq plugin info``: what the option does.
    """

    name: str = attrs.field(validator=_check_name)
    type: builtins.type = attrs.field(default=str, validator=_check_type)
    default: Any = attrs.field(default=None, validator=_check_default)
    help: str = ""

    @property
    def expected(self) -> str:
        """What a value must be, as messages say it: ``a whole number (int)``."""
        return f"{OPTION_TYPES[self.type]} ({self.type.__name__})"

    def default_text(self) -> Optional[str]:
        """The default as the text stoq.cfg would hold (lists as JSON); ``None`` if none."""
        return None if self.default is None else option_text(self.default)


#: The options the core reads for every plugin (``configuration.md``): always accepted, and
#: checked by the core itself, whether or not a plugin declares options.
CORE_OPTIONS: tuple[Option, ...] = (
    Option("timeout", float, None, "seconds one call may take; beats [core] timeout (0: none)"),
    Option("required_workers", set, None, "workers that must run on a payload before this one"),
    Option("isolate", bool, None, "run the hooks in processes of their own"),
    Option("isolate_memory", str, None, "with isolate: the memory each process may use (512M)"),
    Option("isolate_recycle", int, None, "with isolate: calls before a process is replaced"),
    Option("isolate_processes", int, None, "with isolate: processes serving calls at once"),
)
_CORE_NAMES = frozenset(option.name for option in CORE_OPTIONS)


def declared_options(target: Any, plugin: str = "") -> Optional[tuple[Option, ...]]:
    """The options ``target`` (a plugin class, module or object) declares; ``None`` if it does
    not declare them (no ``options`` attribute of ``Option`` objects: a v3 plugin).

    An empty tuple declares that the plugin takes no options of its own.

    :raises StoqPluginException: ``options`` mixes ``Option`` objects with other things, or
        names one option twice.
    """
    declared = getattr(target, "options", None)
    if not isinstance(declared, (list, tuple)):
        return None
    if not all(isinstance(option, Option) for option in declared):
        if not any(isinstance(option, Option) for option in declared) and declared:
            return None  # some other use of the name, in a plugin that declares nothing
        raise StoqPluginException(
            f"plugin {plugin!r}: its options must all be stoq_core.Option objects"
        )
    names = [option.name for option in declared]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise StoqPluginException(f"plugin {plugin!r} declares option {twice[0]!r} twice")
    return tuple(declared)


def check_options(
    plugin: str,
    declared: Sequence[Option],
    config: StoqConfigParser,
    sources: Mapping[str, str],
) -> None:
    """Check the ``options`` section of a plugin's ``config`` against what it declares, and
    give each unset option its default.

    :param sources: where each option given was set (``stoq.cfg [hash]``), for messages.
    :raises StoqPluginException: an option is not declared, or a value is not of its type;
        one line naming the plugin, the option and what is wrong.
    """
    by_name = {option.name: option for option in declared}
    for key in config.options("options") if config.has_section("options") else ():
        option = by_name.get(key)
        if option is None:
            if key not in _CORE_NAMES:
                raise _unknown(plugin, key, by_name, sources.get(key))
            continue
        if not _parses(config, option):
            value = config.get("options", key)
            raise StoqPluginException(
                f"plugin {plugin!r}: option {key!r} must be {option.expected}, not {value!r}"
            )
    unset = {
        option.name: text
        for option in declared
        if (text := option.default_text()) is not None
        and not config.has_option("options", option.name)
    }
    if unset:
        config.set_options("options", unset)


def _parses(config: StoqConfigParser, option: Option) -> bool:
    getters: dict[type, Callable[..., Any]] = {
        int: config.getint,
        float: config.getfloat,
        bool: config.getboolean,
        dict: config.getjson,
    }
    getter = getters.get(option.type)
    if getter is None:
        return True  # text, and lists (comma-separated or JSON), are always readable
    try:
        value = getter("options", option.name)
    except ValueError:  # json.JSONDecodeError is a ValueError too
        return False
    return option.type is not dict or isinstance(value, dict)


def _unknown(
    plugin: str, key: str, declared: Mapping[str, Option], source: Optional[str]
) -> StoqPluginException:
    import difflib  # only for this message

    where = f" (from {source})" if source else ""
    close = difflib.get_close_matches(key, [*declared, *sorted(_CORE_NAMES)], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(declared) or "none of its own"
    return StoqPluginException(
        f"plugin {plugin!r} has no option {key!r}{where}{hint} "
        f"(its options: {known}; see 'stoq plugin info {plugin}')"
    )
