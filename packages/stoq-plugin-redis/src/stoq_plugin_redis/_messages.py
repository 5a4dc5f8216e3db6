"""What goes into Redis: the task message, the key names, and the scripts that write atomically.

A task message is one stream entry with these fields (bytes in, bytes out):

- ``task_id``: the submission's id (a uuid4 the submitter makes), carried into the result;
- ``payload``: the payload's bytes, for a small payload; or, for one kept out of the stream,
- ``archiver`` and ``task``: a source archiver's name and its task as JSON (``{"sha256": ...}``
  for this plugin's own archiver);
- ``payload_meta`` (optional): JSON of ``PayloadMeta`` (``extra_data``, ``dispatch_to``, ...);
- ``request_meta`` (optional): JSON of ``RequestMeta`` (``source``, ``extra_data``, ...).
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
    "MESSAGE_ID_KEY",
    "STREAM_KEY",
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

_SHA256 = re.compile(r"[0-9a-f]{64}")

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


def text(value: Union[bytes, str]) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else value


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


def decode_task(fields: Fields) -> Task:
    """The task a stream entry's ``fields`` describe.

    :raises MalformedTask: a field is missing or not what it should be.
    """
    named = {text(key): value for key, value in fields.items()}
    task_id = named.get("task_id")
    if not task_id:
        raise MalformedTask("it has no task_id field")
    task = Task(
        task_id=text(task_id),
        payload_meta=_payload_meta(_json(named, "payload_meta")),
        request_meta=_request_meta(_json(named, "request_meta")),
    )
    if "payload" in named:
        content = named["payload"]
        task.content = content if isinstance(content, bytes) else content.encode()
    elif "archiver" in named:
        task.archiver = text(named["archiver"])
        archiver_task = _json(named, "task")
        if archiver_task is None:
            raise MalformedTask("it names an archiver but has no task field")
        task.archiver_task = archiver_task
    else:
        raise MalformedTask("it has neither a payload field nor an archiver field")
    return task


def _json(named: Mapping[str, Union[bytes, str]], field: str) -> Optional[dict[str, Any]]:
    raw = named.get(field)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise MalformedTask(f"its {field} field is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedTask(f"its {field} field is not a JSON object")
    return value


def _payload_meta(data: Optional[dict[str, Any]]) -> PayloadMeta:
    if data is None:
        return PayloadMeta()
    extra_data = data.get("extra_data") or {}
    dispatch_to = data.get("dispatch_to") or []
    if not isinstance(extra_data, dict) or not isinstance(dispatch_to, list):
        raise MalformedTask("its payload_meta has a bad extra_data or dispatch_to")
    return PayloadMeta(
        should_archive=bool(data.get("should_archive", True)),
        should_scan=bool(data.get("should_scan", True)),
        extra_data=extra_data,
        dispatch_to=[str(name) for name in dispatch_to],
    )


def _request_meta(data: Optional[dict[str, Any]]) -> RequestMeta:
    if data is None:
        return RequestMeta()
    extra_data = data.get("extra_data") or {}
    source = data.get("source")
    if not isinstance(extra_data, dict):
        raise MalformedTask("its request_meta has a bad extra_data")
    return RequestMeta(
        archive_payloads=bool(data.get("archive_payloads", True)),
        source=None if source is None else str(source),
        extra_data=extra_data,
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
# then the dead-letter entry's field/value pairs. Only the caller whose XACK took the message
# out of the pending list adds it to the dead-letter stream, so it lands there exactly once.
DEAD_LETTER_SCRIPT = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
    return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
redis.call('HDEL', KEYS[3], ARGV[2])
if ARGV[3] == '1' then
    redis.call('XDEL', KEYS[1], ARGV[2])
end
return 1
"""
