"""The decompress worker: every member of a zip, tar, 7z, gzip, bzip2, xz or lzma payload becomes
a payload of its own, within hard limits on size, count and compression ratio."""

from __future__ import annotations

import json
from typing import Any, Optional

from stoq_core import (
    Error,
    ExtractedPayload,
    Option,
    Payload,
    PayloadMeta,
    Request,
    StoqConfigParser,
    StoqPluginException,
    WorkerResponse,
    hookimpl,
    run_blocking,
)
from stoq_core.plugins import WorkerPlugin
from stoq_plugin_decompress.detect import detect
from stoq_plugin_decompress.extract import extract
from stoq_plugin_decompress.limits import Limits

__all__ = ["DecompressPlugin"]

_DEFAULTS = Limits()


def _whole_number(config: StoqConfigParser, option: str, default: int) -> int:
    raw = config.get("options", option, fallback=None)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise StoqPluginException(f"option {option!r}: {raw!r} is not a whole number") from None
    if value < 1:
        raise StoqPluginException(f"option {option!r}: {value} must be at least 1")
    return value


def _ratio(config: StoqConfigParser, default: float) -> float:
    raw = config.get("options", "maximum_ratio", fallback=None)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StoqPluginException(f"option 'maximum_ratio': {raw!r} is not a number") from None
    if not value >= 1:  # also refuses nan
        raise StoqPluginException(f"option 'maximum_ratio': {value:g} must be at least 1")
    return value


def _passwords(config: StoqConfigParser) -> tuple[str, ...]:
    """The ``passwords`` option: ``a, b`` as a list, or a JSON list for passwords with commas."""
    raw = config.get("options", "passwords", fallback="")
    if raw.strip().startswith("["):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise StoqPluginException(f"option 'passwords': not a JSON list: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise StoqPluginException("option 'passwords': the JSON must be a list of strings")
        return tuple(value)
    return tuple(config.getlist("options", "passwords", fallback=[]))


class DecompressPlugin(WorkerPlugin):
    """Extracts archive members as payloads (see the README for the options and the results)."""

    options = (
        Option(
            "passwords",
            list,
            None,
            "passwords tried in order on encrypted members: a, b or a JSON list",
        ),
        Option("maximum_size", int, _DEFAULTS.maximum_size, "bytes one member may inflate to"),
        Option(
            "maximum_total",
            int,
            _DEFAULTS.maximum_total,
            "bytes all the members of one archive may inflate to",
        ),
        Option("maximum_count", int, _DEFAULTS.maximum_count, "entries read from one archive"),
        Option(
            "maximum_ratio",
            float,
            _DEFAULTS.maximum_ratio,
            "bytes inflated divided by the archive's size (judged past 1 MiB)",
        ),
    )

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        self.passwords = _passwords(config)
        self.limits = Limits(
            maximum_size=_whole_number(config, "maximum_size", _DEFAULTS.maximum_size),
            maximum_total=_whole_number(config, "maximum_total", _DEFAULTS.maximum_total),
            maximum_count=_whole_number(config, "maximum_count", _DEFAULTS.maximum_count),
            maximum_ratio=_ratio(config, _DEFAULTS.maximum_ratio),
        )

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        """The payload's members as extracted payloads; None if it is not an archive."""
        content = payload.content
        found = detect(content)
        if found is None:
            return None
        parent_name = payload.results.payload_meta.extra_data.get("filename")
        extraction = await run_blocking(
            extract,
            content,
            found,
            self.limits,
            self.passwords,
            parent_name if isinstance(parent_name, str) else None,
            request,
        )
        payload_id = payload.results.payload_id
        return WorkerResponse(
            results=extraction.results(),
            extracted=[
                ExtractedPayload(
                    member.content, PayloadMeta(extra_data={"filename": member.filename})
                )
                for member in extraction.members
            ],
            errors=[
                Error(error=message, plugin_name=self.plugin_name, payload_id=payload_id)
                for message in extraction.errors
            ],
        )
