"""The smtp worker, loaded through its entry point the way a user's Stoq loads it."""

from __future__ import annotations

import asyncio
import base64
import email.message
import email.policy
import re
from collections.abc import Callable
from typing import Any, Optional

import pytest
from stoq_plugin_smtp import looks_like_email

from stoq_core import Payload, Request, Stoq, StoqPluginException, StoqResponse
from stoq_core.testing import scan_sync

StoqWith = Callable[..., Stoq]

PLAIN = (
    b"Received: from mx1.example.org (mx1.example.org [192.0.2.1])\r\n"
    b"\tby mail.example.com; Fri, 27 Nov 2026 10:00:00 +0000\r\n"
    b"Received: from sender.example.net by mx1.example.org\r\n"
    b"From: =?utf-8?q?J=C3=BCrgen_Sender?= <juergen@example.net>\r\n"
    b"To: Ana <ana@example.com>, bob@example.com\r\n"
    b"Cc: Carol <carol@example.com>\r\n"
    b"Subject: =?utf-8?b?UmU6IHlvdXIgaW52b2ljZSDinJM=?=\r\n"
    b"Date: Fri, 27 Nov 2026 11:00:00 +0100\r\n"
    b"Message-ID: <1234@example.net>\r\n"
    b"\r\n"
    b"Please see http://phish.example/login\r\n"
)


def attached(*, body: str = "See the attachment.", html: Optional[str] = None) -> bytes:
    """A multipart message: a body (and an HTML alternative), a PDF and a zip attached."""
    message = email.message.EmailMessage()
    message["From"] = "Mallory <mallory@example.org>"
    message["To"] = "victim@example.com"
    message["Subject"] = "Invoice"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    message.add_attachment(b"%PDF-1.7 fake", maintype="application", subtype="pdf",
                           filename="invoice.pdf")  # fmt: skip
    message.add_attachment(b"PK\x03\x04 not really", maintype="application", subtype="zip",
                           filename="Überweisung 2026.zip")  # fmt: skip
    return message.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def make_stoq(stoq_with: StoqWith) -> Callable[..., Stoq]:
    """``make_stoq(options, always=False)``: a Stoq that runs smtp on the root payload (on every
    payload with ``always``)."""

    def make(options: Optional[dict[str, Any]] = None, always: bool = False) -> Stoq:
        return stoq_with("smtp", options=options, always_dispatch=["smtp"] if always else [])

    return make


def scan(stoq: Stoq, content: bytes) -> StoqResponse:
    return scan_sync(stoq, content, start=["smtp"])


def smtp_results(response: StoqResponse) -> dict[str, Any]:
    assert response.errors == []
    return response.results[0].workers["smtp"]  # type: ignore[no-any-return]


def test_headers_are_decoded_unfolded_and_listed_by_lowercase_name(
    make_stoq: Callable[..., Stoq],
) -> None:
    headers = smtp_results(scan(make_stoq(), PLAIN))["headers"]

    assert headers["received"] == [
        "from mx1.example.org (mx1.example.org [192.0.2.1])\tby mail.example.com; "
        "Fri, 27 Nov 2026 10:00:00 +0000",
        "from sender.example.net by mx1.example.org",
    ]
    assert headers["subject"] == ["Re: your invoice ✓"]
    assert headers["from"] == ["Jürgen Sender <juergen@example.net>"]
    assert list(headers) == ["received", "from", "to", "cc", "subject", "date", "message-id"]


def test_addresses_subject_date_and_message_id_are_given_on_their_own(
    make_stoq: Callable[..., Stoq],
) -> None:
    results = smtp_results(scan(make_stoq(), PLAIN))

    assert results["from"] == [{"name": "Jürgen Sender", "address": "juergen@example.net"}]
    assert results["to"] == [
        {"name": "Ana", "address": "ana@example.com"},
        {"name": "", "address": "bob@example.com"},
    ]
    assert results["cc"] == [{"name": "Carol", "address": "carol@example.com"}]
    assert "bcc" not in results
    assert results["subject"] == "Re: your invoice ✓"
    assert results["date"] == "2026-11-27T11:00:00+01:00"
    assert results["message_id"] == "<1234@example.net>"
    assert results["body"] == "Please see http://phish.example/login\r\n"


def test_a_date_that_does_not_parse_is_given_as_written(make_stoq: Callable[..., Stoq]) -> None:
    message = b"From: a@example.com\r\nDate: the day before yesterday\r\n\r\nhi\r\n"

    assert smtp_results(scan(make_stoq(), message))["date"] == "the day before yesterday"


def test_each_attachment_is_extracted_with_its_file_name_and_content_type(
    make_stoq: Callable[..., Stoq],
) -> None:
    response = scan(make_stoq(), attached())

    results = smtp_results(response)
    assert results["attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 13},
        {"filename": "Überweisung 2026.zip", "content_type": "application/zip", "size": 15},
    ]
    children = response.results[1:]
    assert [child.payload_meta.extra_data for child in children] == [
        {"content_type": "application/pdf", "filename": "invoice.pdf"},
        {"content_type": "application/zip", "filename": "Überweisung 2026.zip"},
    ]
    assert [child.extracted_by for child in children] == [["smtp"], ["smtp"]]
    assert [child.size for child in children] == [13, 15]
    assert results["body"] == "See the attachment.\r\n"


def test_the_extracted_bytes_are_the_attachments_decoded(make_stoq: Callable[..., Stoq]) -> None:
    request = Request([Payload(attached())])

    asyncio.run(make_stoq().scan_request(request, ["smtp"]))

    assert [bytes(p.content) for p in request.payloads[1:]] == [
        b"%PDF-1.7 fake",
        b"PK\x03\x04 not really",
    ]


def test_the_html_alternative_is_its_own_body(make_stoq: Callable[..., Stoq]) -> None:
    results = smtp_results(scan(make_stoq(), attached(html="<p>Pay <a href='x'>here</a></p>")))

    assert results["body"] == "See the attachment.\r\n"
    assert results["body_html"] == "<p>Pay <a href='x'>here</a></p>\r\n"


def test_body_limit_cuts_bodies_and_says_so(make_stoq: Callable[..., Stoq]) -> None:
    results = smtp_results(scan(make_stoq({"body_limit": "10"}), attached(body="x" * 50)))

    assert results["body"] == "x" * 10
    assert results["truncated"] == ["body"]


def test_body_limit_0_leaves_the_bodies_out(make_stoq: Callable[..., Stoq]) -> None:
    results = smtp_results(scan(make_stoq({"body_limit": "0"}), attached()))

    assert "body" not in results
    assert len(results["attachments"]) == 2


def test_extract_body_makes_each_body_a_payload_too(make_stoq: Callable[..., Stoq]) -> None:
    response = scan(make_stoq({"extract_body": "true"}), attached(html="<b>hi</b>"))

    metas = [child.payload_meta.extra_data for child in response.results[1:]]
    assert metas[:2] == [
        {"content_type": "text/plain", "body": True},
        {"content_type": "text/html", "body": True},
    ]
    assert len(metas) == 4


def test_an_attached_message_is_extracted_whole_and_scanned_in_turn(
    make_stoq: Callable[..., Stoq],
) -> None:
    outer = email.message.EmailMessage()
    outer["From"] = "forwarder@example.com"
    outer["Subject"] = "Fwd: Invoice"
    outer.set_content("Forwarding this.")
    inner = email.message_from_bytes(attached(), policy=email.policy.default)
    outer.add_attachment(inner)

    response = scan_sync(make_stoq(always=True), outer.as_bytes())

    assert response.errors == []
    by_subject = {
        r.workers["smtp"]["subject"]: r
        for r in response.results
        if "subject" in r.workers.get("smtp", {})
    }
    assert set(by_subject) == {"Fwd: Invoice", "Invoice"}
    assert by_subject["Fwd: Invoice"].workers["smtp"]["attachments"] == [
        {"filename": None, "content_type": "message/rfc822", "size": by_subject["Invoice"].size}
    ]
    # The inner message's own attachments come out of the inner message, not the outer one.
    pdf = [
        r for r in response.results if r.payload_meta.extra_data.get("filename") == "invoice.pdf"
    ]
    assert [r.extracted_from for r in pdf] == [[by_subject["Invoice"].payload_id]]


def test_an_attached_message_that_was_base64_encoded_is_decoded(
    make_stoq: Callable[..., Stoq],
) -> None:
    # RFC 2046 forbids it, but Outlook writes attached messages this way.
    inner = b"From: inner@example.com\r\nSubject: inner one\r\n\r\ninner body\r\n"
    outer = (
        b"From: outer@example.com\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(inner)
        + b"--b--\r\n"
    )

    response = scan_sync(make_stoq(always=True), outer)

    assert response.errors == []
    assert [r.workers["smtp"]["subject"] for r in response.results] == ["outer", "inner one"]
    assert response.results[1].size == len(inner)


def test_a_payload_that_is_not_a_message_gets_no_results(make_stoq: Callable[..., Stoq]) -> None:
    response = scan(make_stoq(), b"just some text\nwith: a colon later\n")

    assert response.errors == []
    assert "smtp" not in response.results[0].workers
    assert response.results[0].plugins_run["workers"] == ["smtp"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (PLAIN, True),
        (b"From sender@example.net Fri Nov 27 10:00:00 2026\nSubject: mbox\n\nhi\n", True),
        (b"Subject: only a subject", True),
        (b"X-Custom: value\r\n\r\nbody", False),  # no header a message needs
        (b"\tSubject: folded first\r\n\r\n", False),
        (b"MZ\x90\x00\x03", False),
        (b"", False),
        (b"Subject: x\r\nnot a header line\r\n\r\n", False),
        (b"From sender@example.net Fri Nov 27 10:00:00 2026\n\tfolded\nSubject: x\n", False),
        (b"From sender@example.net Fri Nov 27 10:00:00 2026", False),
        (b"Subject: " + b"x" * 70_000, True),  # a header longer than what is looked at
    ],
)
def test_what_is_taken_for_a_message(content: bytes, expected: bool) -> None:
    assert looks_like_email(content) is expected


def test_a_malformed_message_is_parsed_and_its_defects_named(
    make_stoq: Callable[..., Stoq],
) -> None:
    message = (
        b"From: a@example.com\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-used"\r\n\r\n'
        b"no boundary ever comes\r\n"
    )

    results = smtp_results(scan(make_stoq(), message))

    assert results["subject"] == "broken"
    assert "StartBoundaryNotFoundDefect" in results["defects"]


def test_parts_nested_too_deep_to_parse_still_give_the_headers(
    make_stoq: Callable[..., Stoq],
) -> None:
    depth = 3000  # past the parser's recursion: a hostile message, not a real one
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    message = b"From: a@example.com\r\nSubject: deep\r\n" + opening + b"\r\nx\r\n" + closing

    response = scan(make_stoq(), message)

    assert response.results[0].workers["smtp"]["subject"] == "deep"
    assert [(e.plugin_name, e.error) for e in response.errors] == [
        ("smtp", "MIME parts nested too deep to parse: only the headers are given")
    ]


def test_bad_base64_and_an_unknown_charset_are_not_failures(make_stoq: Callable[..., Stoq]) -> None:
    message = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nhello \xe2\x9c\x93\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="a.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=!!!\r\n--b--\r\n"
    )

    results = smtp_results(scan(make_stoq(), message))

    assert results["body"] == "hello ✓"  # the line break before a boundary is the boundary's
    assert results["attachments"] == [
        {"filename": "a.bin", "content_type": "application/octet-stream", "size": 5}
    ]


def test_8_bit_headers_are_read_as_utf_8(make_stoq: Callable[..., Stoq]) -> None:
    message = "From: Zoë <zoe@example.com>\r\nSubject: Grüße\r\n\r\nhi\r\n".encode()

    results = smtp_results(scan(make_stoq(), message))

    assert results["subject"] == "Grüße"
    assert results["from"] == [{"name": "Zoë", "address": "zoe@example.com"}]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"body_limit": "-1"}, "option 'body_limit': -1 must be 0 (no bodies) or more"),
        (
            {"body_limit": "lots"},
            "plugin 'smtp': option 'body_limit' must be a whole number (int), not 'lots'",
        ),
        (
            {"extract_body": "perhaps"},
            "option 'extract_body' must be true or false (bool), not 'perhaps'",
        ),
        ({"body_limt": "5"}, "plugin 'smtp' has no option 'body_limt'"),
    ],
)
def test_a_bad_option_stops_the_plugin_from_loading(
    stoq_with: StoqWith, options: dict[str, str], message: str
) -> None:
    with pytest.raises(StoqPluginException, match=re.escape(message)):
        stoq_with("smtp", options=options).load_plugin("smtp")


def test_the_plugin_is_an_entry_point_of_this_distribution(make_stoq: Callable[..., Stoq]) -> None:
    info = make_stoq().list_plugins()["smtp"]

    assert (info.kind, info.origin, info.version, info.error) == (
        "entry point",
        "stoq-plugin-smtp",
        "1.0.0",
        None,
    )
    assert info.hooks == ["scan"]
