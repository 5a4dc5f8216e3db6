"""Small helpers plugins have always used: JSON that never chokes on results, digests, dict merging."""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import math
import mmap
import re
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "check_results",
    "dumps",
    "get_md5",
    "get_sha1",
    "get_sha256",
    "get_sha512",
    "jsonable",
    "merge_dicts",
]


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview, mmap.mmap)):
        # Undecodable bytes stay visible as \xNN escapes instead of failing the whole response.
        return bytes(obj).decode("utf-8", errors="backslashreplace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        # v3 wrote str(value): "2020-01-02 03:04:05", a space where isoformat() has a T.
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if attrs.has(type(obj)):
        return attrs.asdict(obj, recurse=False)
    if hasattr(obj, "__dict__"):
        return vars(obj)
    return str(obj)


def jsonable(obj: Any, _active: frozenset[int] = frozenset()) -> Any:
    """``obj`` made of JSON types only: keys become str, bytes text, unknown objects their str().

    A container that contains itself is written as ``"<cycle>"`` where it recurs. Numbers that
    strict JSON (RFC 8259) cannot hold become strings: NaN and the infinities as ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``, an integer too long for ``str()`` (over 4,300 digits
    by default) in hexadecimal, ``"0x..."``.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _NON_FINITE[repr(obj)]
    if isinstance(obj, int):
        return _long_int(obj)
    if id(obj) in _active:
        return "<cycle>"
    active = _active | {id(obj)}
    try:
        if isinstance(obj, Mapping):
            return {_key(k): jsonable(v, active) for k, v in obj.items()}
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [jsonable(v, active) for v in obj]
        return jsonable(_default(obj), active)
    except Exception:
        # A mapping whose items() raises or changes while read, an object whose str() raises:
        # the response is written all the same, without it.
        return f"<unreadable {type(obj).__name__}>"


_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_TEXTUAL = (str, bytes, bytearray)
_WRITABLE = (
    *_SCALARS,
    bytes,
    bytearray,
    datetime.datetime,
    datetime.date,
    datetime.time,
    enum.Enum,
)
_MAX_DEPTH = 64


def check_results(results: Any, max_size: int) -> str | None:
    """Why ``results`` cannot go into a response, or None if it can.

    Results must be made of JSON's types (plus bytes, sets, tuples and datetimes, which
    ``dumps`` writes as text and lists), without reference cycles, with at most ``max_size``
    bytes of text in all.
    """
    if type(results) is dict:
        # The common case (hash, most workers): a flat dict of scalars, checked in one loop
        # (every payload takes this path; generator expressions cost more than the check).
        # Keys count as text too: a million long keys once passed any limit.
        size = 0
        for key, value in results.items():
            kind = type(value)
            if type(key) is not str or kind not in _SCALAR_TYPES:
                break
            if kind is str:
                size += len(key) + len(value)  # one addition: this loop runs for every result
            else:
                size += len(key)
                if kind is int and value.bit_length() > 64:
                    size += value.bit_length() // 3 + 1  # about its digits (hex if too long)
        else:
            return (
                None if size <= max_size else f"results are too large ({size} bytes > {max_size})"
            )
    try:
        # Anything larger: the C encoder accepts most results in a fraction of the walk's
        # time; only what it refuses (or finds too long) is walked, to say where the problem
        # is. An integer too long for it (written in hexadecimal) is walked too, and counted.
        try:
            text = _CHECKER.encode(results)
        except (TypeError, ValueError, RecursionError):
            pass
        else:
            if len(text) <= max_size:  # JSON text is at least as long as the text it holds
                return None
        return _check(results, "results", 0, [max_size])
    except Exception as exc:
        # A container whose items() raises, a set whose iteration does, a str subclass whose
        # repr does: results that cannot be read cannot be written either.
        return f"results cannot be read: {type(exc).__name__}: {_text(exc)[:200]}"


def _checked_default(obj: Any) -> Any:
    """``_CHECKER``'s stand-in for what ``dumps`` writes through ``_default``; raises for the rest."""
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("latin-1")  # as many characters as bytes, for the size check
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(type(obj).__name__)


_CHECKER = json.JSONEncoder(ensure_ascii=False, default=_checked_default)


def _check(value: Any, where: str, depth: int, budget: list[int]) -> str | None:
    if depth > _MAX_DEPTH:
        return f"{where} nests deeper than {_MAX_DEPTH} levels (a reference cycle?)"
    if isinstance(value, _TEXTUAL):
        budget[0] -= len(value)
        if budget[0] < 0:
            return f"results are too large (over {where})"
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        # About its digits: one too long for decimal is written in hexadecimal (``jsonable``).
        budget[0] -= value.bit_length() // 3 + 1
        if budget[0] < 0:
            return f"results are too large (over {where})"
        return None
    if isinstance(value, _WRITABLE):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (*_SCALARS, bytes)):
                return f"{where} has a key of type {type(key).__name__}"
            problem = _check(key, f"a key of {where}", depth + 1, budget) or _check(
                item, f"{where}[{_shown(key)}]", depth + 1, budget
            )
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            problem = _check(item, f"{where}[{index}]", depth + 1, budget)
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, which cannot be written as JSON"


def _shown(key: Any) -> str:
    """``key`` as an error message names it: its built-in type's repr (a subclass's own may
    raise), cut (a key may be megabytes)."""
    for kind in (str, bytes, bool, int, float):
        if isinstance(key, kind):
            text: str = kind.__repr__(key)
            break
    else:
        text = repr(key)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _text(thing: Any) -> str:
    try:
        return str(thing)
    except Exception:
        return f"<{type(thing).__name__} whose str() failed>"


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _long_int(number: int) -> Any:
    """``number``, or its hexadecimal text if Python refuses to write it in decimal."""
    try:
        str(number)
    except ValueError:  # sys.get_int_max_str_digits(): the decimal conversion is quadratic
        return hex(number)
    return number


def _key(key: Any) -> Any:
    if key is None or isinstance(key, (str, bool)):
        return key
    if isinstance(key, (int, float)):
        return jsonable(key)
    return jsonable(key) if isinstance(key, (bytes, bytearray)) else str(key)


def dumps(data: Any, indent: int | None = 4, compactly: bool = False) -> str:
    """Strict JSON text (RFC 8259) of ``data``, as v3 wrote it: non-ASCII characters as
    themselves (the text is meant to be written as UTF-8), bytes as text, sets lists,
    datetimes ``str(value)`` (``"2020-01-02 03:04:05"``), and numbers JSON cannot hold as
    strings (see ``jsonable``).

    A lone surrogate (a file name Python read with ``surrogateescape``) is written as its
    ``\\udcXX`` escape, so the text always encodes to UTF-8.

    :param indent: spaces per level; ``None`` or ``compactly=True`` gives one line.
    """
    if compactly or not indent:
        indent = None
    try:
        text = _encoder(indent).encode(data)
    except Exception:
        # Non-string keys, a reference cycle, NaN or an integer too long to write, or what a
        # plugin's object raised when read: rebuild from plain types rather than crash (or
        # write ``NaN``, which no JSON parser takes).
        text = _encoder(indent, str).encode(jsonable(data))
    if not text.isascii():
        try:
            text.encode("utf-8")  # 5 times quicker than searching for surrogates
        except UnicodeEncodeError:
            text = _SURROGATE.sub(_escape_surrogate, text)
    return text


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# Encoders are built once per indent and fallback: json.dumps() builds one per call when given
# options.
_ENCODERS: dict[tuple[int | None, Any], json.JSONEncoder] = {}


def _encoder(indent: int | None, default: Any = _default) -> json.JSONEncoder:
    """The strict encoder for ``indent``; ``default`` writes what JSON has no type for."""
    encoder = _ENCODERS.get((indent, default))
    if encoder is None:
        encoder = _ENCODERS[indent, default] = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, indent=indent, default=default
        )
    return encoder


def get_md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def get_sha1(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def get_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def get_sha512(content: bytes) -> str:
    return hashlib.sha512(content).hexdigest()


def merge_dicts(left: dict[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``right`` into ``left`` and return ``left``.

    As v3's ``merge_dicts``: a list in ``left`` is extended with ``right``'s items (and a
    ``defaultdict(list)`` gains the keys it lacks). Beyond v3, which raised on anything else:
    nested dicts are merged in turn, a key ``left`` lacks is added (a list as a copy), and any
    other value is replaced.
    """
    for key, value in right.items():
        if key in left:
            current = left[key]
        elif getattr(left, "default_factory", None) is not None:
            current = left[key]  # a defaultdict makes its default, as v3 relied on
        else:
            left[key] = list(value) if isinstance(value, list) else value
            continue
        if isinstance(current, list):
            current.extend(value)
        elif isinstance(current, dict) and isinstance(value, Mapping):
            merge_dicts(current, value)
        else:
            left[key] = value
    return left
