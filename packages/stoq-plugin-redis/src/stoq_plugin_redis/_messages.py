"""What goes into Redis: the task message, the key names, and the scripts that write atomically.

A task message is one stream entry with these fields (bytes in, bytes out):

- ``task_id``: the submission's id (a uuid4 the submitter makes), carried into the result;
- ``payload``: the payload's bytes, for a small payload; or, for one kept out of the stream,
- ``archiver`` and ``task``: a source archiver's name and its task as JSON (``{"sha256": ...}``
  for this plugin's own archiver);
- ``payload_meta`` (optional): JSON of ``PayloadMeta`` (``extra_data``, ``dispatch_to``, ...);
- ``request_meta`` (optional): JSON of ``RequestMeta`` (``source``, ``extra_data``, ...).

Anything else (another field, a name or a text field that is not UTF-8, JSON of the wrong shape,
a payload over ``max_payload_size``) makes it malformed: ``decode_task`` says why, and the
worker moves it to the dead-letter stream at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Optional, Union

import attrs

from stoq_core import PayloadMeta, RequestMeta

__all__ = [
    "DEFAULT_ARCHIVER",
    "DEFAULT_GROUP",
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_RESULTS_STREAM",
    "DEFAULT_STREAM",
    "DEFAULT_URL",
    "DEAD_LETTER_SCRIPT",
    "MAX_COPY_BYTES",
    "MAX_COPY_FIELDS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_SIZE",
    "MAX_JSON_VALUES",
    "MAX_NAME",
    "MESSAGE_ID_KEY",
    "STREAM_KEY",
    "TASK_FIELDS",
    "TASK_ID_KEY",
    "WRITE_RESULTS_SCRIPT",
    "WRITE_RESULTS_SHA",
    "MalformedTask",
    "Task",
    "check_sha256",
    "dead_letter_stream",
    "decode_task",
    "encode_task",
    "errors_key",
    "payload_key",
    "result_key",
    "show",
    "text",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "stoq:tasks"
DEFAULT_GROUP = "stoq"
DEFAULT_RESULTS_STREAM = "stoq:results"
DEFAULT_KEY_PREFIX = "stoq"
DEFAULT_ARCHIVER = "redis"
DEFAULT_INLINE_LIMIT = 1 << 20

#: ``request_meta.extra_data`` keys the provider adds so the connector can find the message.
TASK_ID_KEY = "task_id"
MESSAGE_ID_KEY = "redis_message_id"
STREAM_KEY = "redis_stream"

#: The fields a task message may have.
TASK_FIELDS = frozenset({"task_id", "payload", "archiver", "task", "payload_meta", "request_meta"})

#: Characters a task id or an archiver name may have (a uuid4 has 36).
MAX_NAME = 256
#: Bytes a JSON field (``payload_meta``, ``request_meta``, ``task``) may hold: metadata, parsed
#: into Python objects many times its size.
MAX_JSON_SIZE = 16 << 20
#: Levels of nesting a JSON field may have: the result holding it is written and read by
#: recursive encoders, which fail near 1,000.
MAX_JSON_DEPTH = 64
#: Values (objects, arrays, keys, strings, numbers...) a JSON field may hold. Each costs 30 to
#: 200 bytes once parsed, so a field of empty objects is held at 25 times its size: a 16 MiB
#: request_meta of ``{}`` raised a worker's memory by 800 MB, for each message it held at once.
MAX_JSON_VALUES = 100_000

#: A dead-letter entry copies its message's fields when they are at most this many and this
#: large; a larger message stays (acknowledged) in the task stream, and its entry says so.
#: The copy is made inside Redis, which holds it twice for a moment.
MAX_COPY_FIELDS = 1000
MAX_COPY_BYTES = 16 << 20

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # how one reaches JSON text
_SHOWN = 60  # characters of a quoted value in an error

# Field names and values as redis-py gives them (bytes) or as a caller may write them (str).
Fields = Mapping[Any, Any]


class MalformedTask(ValueError):
    """A stream entry that is not a task message; the text says what is wrong."""


@attrs.define
class Task:
    """A decoded task message."""

    task_id: str
    payload_meta: PayloadMeta
    request_meta: RequestMeta
    content: Optional[bytes] = None  #: the payload's bytes, when it travelled in the message
    archiver: Optional[str] = None  #: else the source archiver that has them...
    archiver_task: Optional[dict[str, Any]] = None  #: ...and what it needs to find them


def payload_key(prefix: str, sha256: str) -> str:
    """Where the archiver keeps a payload's bytes."""
    return f"{prefix}:payload:{sha256}"


def result_key(prefix: str, task_id: str) -> str:
    """The marker saying a task has its result, holding the result's results-stream entry id."""
    return f"{prefix}:result:{task_id}"


def errors_key(stream: str) -> str:
    """The hash of the last processing error of each unacknowledged message of ``stream``."""
    return f"{stream}:errors"


def dead_letter_stream(stream: str) -> str:
    """The default dead-letter stream of ``stream``."""
    return f"{stream}:dead"


def check_sha256(value: Any) -> str:
    """``value`` if it is a lowercase hex sha256.

    :raises MalformedTask: it is not.
    """
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise MalformedTask(f"{value!r} is not a sha256 (64 lowercase hex digits)")
    return value


def text(value: Union[bytes, str], lenient: bool = False) -> str:
    """A Redis reply (bytes) as text.

    :param lenient: bytes that are not UTF-8 become U+FFFD instead of raising
        ``UnicodeDecodeError``: for what anyone may have written, read to be shown.
    """
    if isinstance(value, bytes):
        return value.decode(errors="replace" if lenient else "strict")
    return value


def encode_task(
    task_id: str,
    payload_meta: Optional[PayloadMeta] = None,
    request_meta: Optional[RequestMeta] = None,
    content: Optional[bytes] = None,
    archiver: Optional[str] = None,
    archiver_task: Optional[Mapping[str, Any]] = None,
) -> dict[str, Union[bytes, str]]:
    """The fields of a task message: ``content`` inline, or an ``archiver`` and its task."""
    if (content is None) == (archiver is None):
        raise ValueError("a task carries either its content or an archiver task")
    fields: dict[str, Union[bytes, str]] = {"task_id": task_id}
    if content is not None:
        fields["payload"] = content
    else:
        fields["archiver"] = str(archiver)
        fields["task"] = json.dumps(dict(archiver_task or {}))
    if payload_meta is not None and not _is_default(payload_meta):
        fields["payload_meta"] = json.dumps(payload_meta.to_dict(), default=str)
    if request_meta is not None and not request_meta.is_default():
        fields["request_meta"] = json.dumps(request_meta.to_dict(), default=str)
    return fields


def _is_default(payload_meta: PayloadMeta) -> bool:
    # Left out of the message, a default PayloadMeta costs neither bytes nor a JSON parse.
    return (
        payload_meta.should_archive
        and payload_meta.should_scan
        and not payload_meta.extra_data
        and not payload_meta.dispatch_to
    )


def decode_task(fields: Fields, max_payload_size: Optional[int] = None) -> Task:
    """The task a stream entry's ``fields`` describe, checked field by field.

    Anything may arrive in a stream (any bytes in any field, any field names), so each field is
    checked before it is used, and every problem found is named, not only the first.

    :param max_payload_size: bytes a ``payload`` field may hold; ``None``: no limit.
    :raises MalformedTask: the entry is not a task message; the text lists why.
    """
    problems: list[str] = []
    named = _named_fields(fields, problems)
    task_id = _name(named, "task_id", problems)
    payload_meta = _payload_meta(_json(named, "payload_meta", problems), problems)
    request_meta = _request_meta(_json(named, "request_meta", problems), problems)
    content = named.get("payload")
    archiver, archiver_task = None, None
    if content is not None and "archiver" in named:
        problems.append("it has both a payload field and an archiver field (one or the other)")
    elif content is not None:
        if "task" in named:
            problems.append("it has a task field but no archiver field")
        if max_payload_size is not None and len(content) > max_payload_size:
            problems.append(
                f"its payload field holds {len(content)} bytes, more than max_payload_size "
                f"({max_payload_size} bytes)"
            )
    elif "archiver" in named:
        archiver = _name(named, "archiver", problems)
        archiver_task = _json(named, "task", problems)
        if "task" not in named:
            problems.append("it names an archiver but has no task field")
    else:
        problems.append("it has neither a payload field nor an archiver field")
    if problems:
        raise MalformedTask("; ".join(problems))
    assert task_id is not None
    return Task(task_id, payload_meta, request_meta, content, archiver, archiver_task)


def show(value: Union[bytes, str], limit: int = _SHOWN) -> str:
    """``value`` for a message: its repr cut to ``limit`` characters, with its length if cut.

    Error texts quote what a message held; a hostile one may hold megabytes.
    """
    shown = repr(value)
    if len(shown) <= limit:
        return shown
    unit = "bytes" if isinstance(value, bytes) else "characters"
    return f"{shown[:limit]}... ({len(value)} {unit})"


def _named_fields(fields: Fields, problems: list[str]) -> dict[str, bytes]:
    """The fields by name as text, values as bytes; bad names and unknown fields noted."""
    named: dict[str, bytes] = {}
    bad_names: list[Any] = []
    unknown: list[str] = []
    for key, value in fields.items():
        try:
            name = key.decode() if isinstance(key, bytes) else str(key)
        except UnicodeDecodeError:
            bad_names.append(key)
            continue
        if name not in TASK_FIELDS:
            unknown.append(name)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            named[name] = bytes(value)
        elif isinstance(value, str):  # a caller's own dict; redis-py gives bytes
            named[name] = value.encode("utf-8", "surrogatepass")
        else:
            problems.append(f"its {name} field is a {type(value).__name__}, not bytes")
    if bad_names:
        verb = "is" if len(bad_names) == 1 else "are"
        problems.append(f"{_count(bad_names, 'field name')} {verb} not UTF-8: {_listed(bad_names)}")
    if unknown:
        problems.append(
            f"it has {_count(unknown, 'field')} no task message has: {_listed(unknown)}"
        )
    return named


def _count(items: list[Any], noun: str) -> str:
    return f"a {noun}" if len(items) == 1 else f"{len(items)} {noun}s"


def _listed(items: list[Any], most: int = 5) -> str:
    listed = ", ".join(show(item) for item in items[:most])
    return listed if len(items) <= most else f"{listed} and {len(items) - most} more"


def _name(named: Mapping[str, bytes], field: str, problems: list[str]) -> Optional[str]:
    """A task id or an archiver name: one line of UTF-8 text, of at most ``MAX_NAME`` characters."""
    raw = named.get(field)
    if raw is None:
        problems.append(f"it has no {field} field")
        return None
    try:
        value = raw.decode()
    except UnicodeDecodeError:
        problems.append(f"its {field} field is not UTF-8: {show(raw)}")
        return None
    if not value:
        problems.append(f"its {field} field is empty")
    elif len(value) > MAX_NAME:
        problems.append(f"its {field} field is longer than {MAX_NAME} characters: {show(value)}")
    elif not value.isprintable():
        # A task id is printed one per line and is part of a key name: no control characters.
        problems.append(f"its {field} field holds control characters: {show(value)}")
    else:
        return value
    return None


def _json(named: Mapping[str, bytes], field: str, problems: list[str]) -> Optional[dict[str, Any]]:
    """A JSON object field, or None if absent (or bad: then a problem is noted)."""
    raw = named.get(field)
    if raw is None:
        return None
    if len(raw) > MAX_JSON_SIZE:
        problems.append(
            f"its {field} field holds {len(raw)} bytes, more than {MAX_JSON_SIZE} bytes"
        )
        return None
    try:
        # Decoded here: json.loads would guess UTF-16 or UTF-32 from the first bytes.
        value = _DECODER.decode(raw.decode())
    except UnicodeDecodeError:
        problems.append(f"its {field} field is not UTF-8: {show(raw)}")
        return None
    except RecursionError:
        problems.append(f"its {field} field is not JSON: nested too deeply")
        return None
    except ValueError as exc:
        problems.append(f"its {field} field is not JSON: {exc}")
        return None
    if not isinstance(value, dict):
        problems.append(f"its {field} field is not a JSON object but {_json_type(value)}")
        return None
    # Walked only when the text could hold trouble: most metadata is a flat filename. Every
    # value takes a byte of text at least, so a shorter text cannot hold too many.
    deep = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    many = len(raw) > MAX_JSON_VALUES
    trouble = _trouble(value) if deep or many or _ESCAPED_SURROGATE.search(raw) else None
    if trouble:
        problems.append(f"its {field} field {trouble}")
        return None
    return value


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: a result holding one could not be read by strict parsers.
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _trouble(value: Any) -> Optional[str]:
    """What makes a parsed JSON value unfit to carry into a result, or None."""
    stack = [(value, 1)]
    values = 1
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, (dict, list)):
            # Counted before they are stacked: the stack must not grow as large as the value.
            values += 2 * len(item) if isinstance(item, dict) else len(item)
            if values > MAX_JSON_VALUES:
                return f"holds more than {MAX_JSON_VALUES} values"
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            # JSON's \ud800 escapes give str that cannot be encoded to write the result.
            return f"holds a lone surrogate (not text): {show(item)}"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _keys(
    data: Mapping[str, Any], kind: str, types: Mapping[str, tuple[type, ...]], problems: list[str]
) -> bool:
    """Whether ``data`` has only ``types``' keys, each of its type(s); else problems noted."""
    found = len(problems)
    unknown = [key for key in data if key not in types]
    if unknown:
        problems.append(f"its {kind} has unknown keys: {_listed(unknown)}")
    for key, allowed in types.items():
        if key in data and not isinstance(data[key], allowed):
            expected = " or ".join(_TYPE_NAMES[t] for t in allowed)
            problems.append(f"its {kind}'s {key} is {_json_type(data[key])}, not {expected}")
    return len(problems) == found


_TYPE_NAMES = {
    bool: "a boolean",
    str: "a string",
    dict: "an object",
    list: "an array",
    type(None): "null",
}
_PAYLOAD_META_TYPES: dict[str, tuple[type, ...]] = {
    "should_archive": (bool,),
    "should_scan": (bool,),
    "extra_data": (dict, type(None)),
    "dispatch_to": (list, type(None)),
}
_REQUEST_META_TYPES: dict[str, tuple[type, ...]] = {
    "archive_payloads": (bool,),
    "source": (str, type(None)),
    "extra_data": (dict, type(None)),
}


def _payload_meta(data: Optional[dict[str, Any]], problems: list[str]) -> PayloadMeta:
    if data is None or not _keys(data, "payload_meta", _PAYLOAD_META_TYPES, problems):
        return PayloadMeta()
    dispatch_to = data.get("dispatch_to") or []
    names = [name for name in dispatch_to if isinstance(name, str)]
    if len(names) != len(dispatch_to):
        problems.append("its payload_meta's dispatch_to holds something other than strings")
    return PayloadMeta(
        should_archive=data.get("should_archive", True),
        should_scan=data.get("should_scan", True),
        extra_data=data.get("extra_data") or {},
        dispatch_to=names,
    )


def _request_meta(data: Optional[dict[str, Any]], problems: list[str]) -> RequestMeta:
    if data is None or not _keys(data, "request_meta", _REQUEST_META_TYPES, problems):
        return RequestMeta()
    return RequestMeta(
        archive_payloads=data.get("archive_payloads", True),
        source=data.get("source"),
        extra_data=data.get("extra_data") or {},
    )


# KEYS: the results stream, then each result's marker. ARGV: marker ttl, stream maxlen, then a
# task id and its result JSON for each marker. A marker is checked and set in the same script as
# its XADD, so a task saved twice (a redelivery, two consumers racing, twice in one call) adds
# one entry to the results stream, never two. Returns a 1 (written) or 0 (had one) per result.
WRITE_RESULTS_SCRIPT = """
local ttl, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2])
local written = {}
for i = 2, #KEYS do
    local task, result = ARGV[2 * i - 1], ARGV[2 * i]
    if redis.call('EXISTS', KEYS[i]) == 1 then
        written[i - 1] = 0
    else
        local id
        if maxlen > 0 then
            id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
                            'task_id', task, 'result', result)
        else
            id = redis.call('XADD', KEYS[1], '*', 'task_id', task, 'result', result)
        end
        if ttl > 0 then
            redis.call('SET', KEYS[i], id, 'EX', ttl)
        else
            redis.call('SET', KEYS[i], id)
        end
        written[i - 1] = 1
    end
end
return written
"""

#: The name Redis knows ``WRITE_RESULTS_SCRIPT`` by once loaded (EVALSHA).
WRITE_RESULTS_SHA = hashlib.sha1(WRITE_RESULTS_SCRIPT.encode()).hexdigest()

# KEYS: task stream, dead-letter stream, errors hash. ARGV: group, message id, delete (0/1),
# the most fields to copy (0: copy none), then the dead-letter entry's own field/value pairs.
# Only the caller whose XACK took the message out of the pending list adds it to the
# dead-letter stream, so it lands there exactly once. The message's fields are copied here, in
# Redis, byte for byte (repeated names too), then the entry's own fields, which come last so
# that they win where a client reads the entry into a dict. A message not copied stays in the
# task stream. XADD takes every pair in one call: the copy limit keeps it under Lua's limit on
# unpack (about 8,000 values).
DEAD_LETTER_SCRIPT = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
    return 0
end
local entry, copied = {}, false
local most = tonumber(ARGV[4])
if most > 0 then
    local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
    if #found == 0 then
        entry = {'kept', 'the message was no longer in ' .. KEYS[1] .. ' to copy'}
    elseif #found[1][2] > 2 * most then
        entry = {'kept', 'the message has more than ' .. most .. ' fields to copy: it stays in '
                 .. KEYS[1] .. ' under its message_id'}
    else
        entry, copied = found[1][2], true
    end
end
for i = 5, #ARGV do
    entry[#entry + 1] = ARGV[i]
end
redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('HDEL', KEYS[3], ARGV[2])
if ARGV[3] == '1' and copied then
    redis.call('XDEL', KEYS[1], ARGV[2])
end
return 1
"""
