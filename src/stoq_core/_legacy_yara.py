"""yara-python 4.2's match API for v3 plugins, under yara-python 4.3 and later.

v3 plugins (stoq-plugins-public's ``yara`` among them) read ``match.strings`` as
``(offset, identifier, data)`` tuples. yara-python 4.3 made each entry a ``StringMatch`` with
``instances``: such a plugin's results then hold objects JSON cannot write (dropped with an
error) and its dispatcher fails unpacking them. A v3 plugin module that imported ``yara`` gets
this module's view of it instead (``_legacy``'s import for plugin folders asks for it), so it
reads the tuples it was written for, while plugins installed as distributions see yara-python
unchanged; nothing in yara-python itself is patched.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

__all__ = ["yara_for_v3"]


def yara_for_v3(yara: ModuleType) -> ModuleType:
    """yara-python as a v3 plugin expects it: ``yara`` itself up to 4.2, a 4.2-style view after."""
    # StringMatch came with the new match API, in 4.3.
    return _Yara(yara) if hasattr(yara, "StringMatch") else yara


class _Yara(ModuleType):
    """yara-python, except that ``compile`` and ``load`` give rules with 4.2-style matches."""

    def __init__(self, yara: ModuleType) -> None:
        super().__init__(yara.__name__, yara.__doc__)
        self._yara = yara

    def __getattr__(self, name: str) -> Any:
        return getattr(self._yara, name)

    def compile(self, *args: Any, **kwargs: Any) -> _Rules:
        return _Rules(self._yara.compile(*args, **kwargs))

    def load(self, *args: Any, **kwargs: Any) -> _Rules:
        return _Rules(self._yara.load(*args, **kwargs))


class _Rules:
    """Compiled rules whose ``match`` returns matches with tuple ``strings``."""

    def __init__(self, rules: Any) -> None:
        self._rules = rules

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rules)

    def match(self, *args: Any, **kwargs: Any) -> list[_Match]:
        return [_Match(match) for match in self._rules.match(*args, **kwargs)]


class _Match:
    """A ``yara.Match`` whose ``strings`` are ``(offset, identifier, data)`` tuples, in yara's
    order (by string, then by offset), as yara-python 4.2 gave them."""

    def __init__(self, match: Any) -> None:
        self._match = match
        self.strings = [
            (instance.offset, string.identifier, instance.matched_data)
            for string in match.strings
            for instance in string.instances
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._match, name)

    def __repr__(self) -> str:
        return repr(self._match)
