"""The smtp worker: what an e-mail message says about itself, and its attachments as payloads.

The standard library parses the message (``email.policy.default``, so RFC 2231 file names are
decoded). Header values are read from the raw header lines and decoded here (unfolded, RFC 2047
encoded words decoded, 8-bit bytes taken as UTF-8), so a header too malformed for the policy's
parser is still reported as it was written.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.parser
import email.policy
import email.utils
import quopri
import re
from collections.abc import Callable, Iterator
from email.message import Message
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

__all__ = ["DEFAULT_BODY_LIMIT", "SmtpPlugin", "looks_like_email"]

#: Characters of each body (plain text, HTML) kept in the results when ``body_limit`` is not set.
DEFAULT_BODY_LIMIT = 1_000_000

#: A payload is taken as a message if its header block names at least one of these.
_MESSAGE_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "date", "message-id", "received", "return-path",
        "mime-version", "reply-to", "sender", "delivered-to", "x-mailer", "in-reply-to",
    }
)  # fmt: skip
_SNIFF = 64 * 1024  # bytes looked at to decide
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")  # a field name: printable ASCII but ':'
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_PIECE = 8192  # characters of a header value decoded at once (see _pieces)
#: Result key, header: the address fields listed as {"name", "address"}.
_ADDRESS_FIELDS = (
    ("from", "from"),
    ("sender", "sender"),
    ("reply_to", "reply-to"),
    ("to", "to"),
    ("cc", "cc"),
    ("bcc", "bcc"),
)
_BODY_TYPES = {"text/plain": "body", "text/html": "body_html"}
_ENCODED: dict[str, Callable[[bytes], bytes]] = {
    "base64": base64.decodebytes,
    "quoted-printable": quopri.decodestring,
}


def looks_like_email(content: bytes) -> bool:
    """Whether ``content`` starts with an RFC 5322 header block naming a message header.

    An mbox ``From `` line may come first. Only the first 64 KiB are looked at, and only up to
    the first line that is not a header, so most other payloads are turned down at once.
    """
    head = bytes(content[:_SNIFF])
    start = head.find(b"\n") + 1 if head.startswith(b"From ") else 0
    if not start and head.startswith(b"From "):
        return False  # only an mbox line
    known, first = False, True
    while start < len(head):
        end = head.find(b"\n", start)
        if end < 0:
            end = len(head)
        line = head[start:end].rstrip(b"\r")
        if not line.strip():
            break  # the end of the header block
        if line[:1] in (b" ", b"\t"):
            if first:
                return False  # a folded line with nothing to continue
        else:
            found = _HEADER_LINE.match(line)
            if found is None:
                # Not a header: not a message (unless the 64 KiB cut this very line).
                return known and end == len(head) and len(content) > _SNIFF
            name = found.group().rstrip(b": \t").lower().decode("ascii")
            known = known or name in _MESSAGE_HEADERS
        first = False
        start = end + 1
    return known


def _text(raw: str) -> str:
    """A raw header value as text: unfolded, encoded words decoded, 8-bit bytes as UTF-8."""
    text = _FOLD.sub("", raw).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(_pieces(text))


def _pieces(text: str) -> Iterator[str]:
    """``text`` decoded in pieces of at most ``_PIECE`` characters, cut at spaces.

    ``decode_header`` takes time quadratic in the encoded words of a line: one header of 40,000
    took 2 s, of 200,000 took 51 s. An encoded word holds no space, so none is cut in two; the
    space a cut is made at is kept, so a cut is made between two encoded words (where the space
    is dropped) only if the piece has no other space.
    """
    start = 0
    while len(text) - start > _PIECE:
        end = start + _PIECE
        space = text.rfind(" ", start + 1, end)
        cut = space
        while cut > start and text.endswith("?=", start, cut) and text.startswith("=?", cut + 1):
            cut = text.rfind(" ", start + 1, cut)
        cut = cut if cut > start else space
        if cut < 0:  # no space to cut at: no encoded word either, only a long token
            yield _decoded(text[start:end])
            start = end
        else:
            yield _decoded(text[start:cut]) + " "
            start = cut + 1
    yield _decoded(text[start:])


def _decoded(text: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):  # a malformed encoded word: as written
        return text


def _headers(message: Message) -> dict[str, list[str]]:
    """Every header, its name lowercased, its values in order (a list even for one)."""
    headers: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        headers.setdefault(name.lower(), []).append(_text(value))
    return headers


def _addresses(values: list[str]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for value in values:
        try:
            pairs = email.utils.getaddresses([value])
        except RecursionError:
            # getaddresses recurses once per nested comment: "(((...a@b...)))" raised out of
            # the worker, and the message's attachments were lost. The value stays in headers.
            continue
        found.extend(
            {"name": name, "address": address} for name, address in pairs if name or address
        )
    return found


def _date(value: str) -> str:
    """ISO 8601 if the date parses, else the value as written."""
    try:
        return email.utils.parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        return value


def _leaves(part: Message) -> Iterator[Message]:
    """The parts that hold content, depth first; an attached message is one part, not entered
    (it is extracted whole, and scanned in turn)."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _leaves(child)
    else:
        yield part


def _filename(part: Message) -> Optional[str]:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, UnicodeError, IndexError):
        return None
    if not name:
        return None
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
    return name or None


def _body_text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, KeyError, AssertionError):
        pass  # an unknown or lying charset
    data = part.get_payload(decode=True)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _part_bytes(part: Message) -> bytes:
    """A part's content, transfer encoding undone; an attached message as RFC 5322 bytes."""
    if part.get_content_maintype() == "message" and part.is_multipart():
        inner = part.get_payload(0)
        if isinstance(inner, Message):
            encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
            if encoding in _ENCODED and not inner.keys():
                # RFC 2046 forbids encoding an attached message, but some clients (Outlook)
                # base64 it: the parser took the encoded text for a message without headers.
                text = inner.get_payload()
                if isinstance(text, str):
                    return _ENCODED[encoding](text.encode("ascii", "replace"))
            # compat32 writes the headers back as they came, without refolding them.
            return inner.as_bytes(policy=email.policy.compat32)
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _summary(message: Message) -> dict[str, Any]:
    """The headers, and the addresses, subject, date and message id on their own."""
    headers = _headers(message)
    results: dict[str, Any] = {"headers": headers}
    for key, field in _ADDRESS_FIELDS:
        if field in headers:
            results[key] = _addresses(headers[field])
    for key, field in (("subject", "subject"), ("message_id", "message-id")):
        if field in headers:
            results[key] = headers[field][0]
    if "date" in headers:
        results["date"] = _date(headers["date"][0])
    return results


class SmtpPlugin(WorkerPlugin):
    """Parses e-mail messages (see the README for the options and the results)."""

    options = (
        Option(
            "body_limit",
            int,
            DEFAULT_BODY_LIMIT,
            "characters of each body kept in the results; 0 leaves the bodies out",
        ),
        Option("extract_body", bool, False, "also extract each body as a payload"),
    )

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        try:
            self.body_limit = config.getint("options", "body_limit", fallback=DEFAULT_BODY_LIMIT)
            self.extract_body = config.getboolean("options", "extract_body", fallback=False)
        except ValueError as exc:
            raise StoqPluginException(f"options: {exc}") from None
        if self.body_limit < 0:
            raise StoqPluginException(
                f"option 'body_limit': {self.body_limit} must be 0 (no bodies) or more"
            )

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        """The message's headers, addresses and bodies; its attachments as extracted payloads.
        None if the payload is not an e-mail message."""
        if not looks_like_email(payload.content):
            return None  # decided inline: most payloads of a scan are not messages
        # Parsing is pure Python: in a daemon thread, which a timeout can abandon, instead of
        # holding up the event loop on a huge or hostile message.
        return await run_blocking(self._parse, payload)

    def _parse(self, payload: Payload) -> WorkerResponse:
        data = bytes(payload.content)
        errors: list[str] = []
        try:
            message = email.message_from_bytes(data, policy=email.policy.default)
            results = _summary(message)
            extracted = self._contents(message, results, errors)
            defects = {type(d).__name__ for part in message.walk() for d in part.defects}
        except RecursionError:  # the parser recurses once per level of nested parts
            parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
            results = _summary(parser.parsebytes(data))
            extracted, defects = [], set()
            errors.append("MIME parts nested too deep to parse: only the headers are given")
        if defects:
            results["defects"] = sorted(defects)
        payload_id = payload.results.payload_id
        return WorkerResponse(
            results=results,
            extracted=extracted,
            errors=[Error(error, self.plugin_name, payload_id) for error in errors],
        )

    def _contents(
        self, message: Message, results: dict[str, Any], errors: list[str]
    ) -> list[ExtractedPayload]:
        """File the bodies and attachments under ``results``; the payloads to extract."""
        bodies: dict[str, list[str]] = {}
        attachments: list[dict[str, Any]] = []
        extracted: list[ExtractedPayload] = []
        for part in _leaves(message):
            content_type = part.get_content_type()
            filename = _filename(part)
            body = _BODY_TYPES.get(content_type)
            if body and filename is None and part.get_content_disposition() != "attachment":
                text = _body_text(part)
                bodies.setdefault(body, []).append(text)
                if self.extract_body:
                    meta = {"content_type": content_type, "body": True}
                    extracted.append(ExtractedPayload(text.encode(), PayloadMeta(extra_data=meta)))
                continue
            try:
                data = _part_bytes(part)
            except Exception as exc:  # hostile input: one bad part must not lose the rest
                errors.append(f"attachment {filename or content_type!r}: {exc}")
                continue
            extra: dict[str, Any] = {"content_type": content_type}
            if filename is not None:
                extra["filename"] = filename
            attachments.append(
                {"filename": filename, "content_type": content_type, "size": len(data)}
            )
            extracted.append(ExtractedPayload(data, PayloadMeta(extra_data=extra)))
        truncated = []
        for body, texts in bodies.items():
            text = "\n".join(texts)
            if self.body_limit and len(text) > self.body_limit:
                text = text[: self.body_limit]
                truncated.append(body)
            if self.body_limit:
                results[body] = text
        if truncated:
            results["truncated"] = truncated
        if attachments:
            results["attachments"] = attachments
        return extracted
