"""Messages crafted to make the parser fail, lose attachments, or spin."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

import pytest

from stoq_core import Stoq, StoqResponse
from stoq_core.testing import scan_sync

pytestmark = pytest.mark.timeout(60)

ATTACHED = (
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="payload.exe"\r\n\r\nMZ\r\n--b--\r\n'
)


@pytest.fixture
def make_stoq(stoq_with: Callable[..., Stoq]) -> Callable[..., Stoq]:
    def make(options: Optional[dict[str, Any]] = None) -> Stoq:
        return stoq_with("smtp", options=options)

    return make


def scan(stoq: Stoq, content: bytes) -> StoqResponse:
    return scan_sync(stoq, content, start=["smtp"])


@pytest.mark.parametrize("field", [b"From", b"To", b"Reply-To"])
def test_an_address_header_of_comments_nested_thousands_deep_loses_no_attachment(
    make_stoq: Callable[..., Stoq], field: bytes
) -> None:
    nested = b"(" * 5000 + b"a@example.com" + b")" * 5000
    message = b"Subject: deep\r\n" + field + b": " + nested + b"\r\n" + ATTACHED

    response = scan(make_stoq(), message)

    assert response.errors == []
    results = response.results[0].workers["smtp"]
    assert results["subject"] == "deep"
    assert results["headers"][field.decode().lower()] == [nested.decode()]
    assert [r.payload_meta.extra_data.get("filename") for r in response.results[1:]] == [
        "payload.exe"
    ]


def test_a_header_of_many_encoded_words_is_decoded_in_linear_time(
    make_stoq: Callable[..., Stoq],
) -> None:
    # 200,000 encoded words in one header line took 51 s to decode, all of it at once.
    subject = b" ".join([b"=?utf-8?q?=C3=A4?= x"] * 200_000)
    message = b"From: a@example.com\r\nSubject: " + subject + b"\r\n\r\nx\r\n"

    started = time.monotonic()
    response = scan(make_stoq(), message)
    elapsed = time.monotonic() - started

    assert response.errors == []
    assert response.results[0].workers["smtp"]["subject"] == " ".join(["ä x"] * 200_000)
    assert elapsed < 10


def test_a_long_header_is_decoded_as_a_short_one_is(make_stoq: Callable[..., Stoq]) -> None:
    # Decoded in pieces: the space between two encoded words is dropped across the cuts too.
    words = [b"=?utf-8?b?w7w=?=", b"=?iso-8859-1?q?=E9?=", b"plain"] * 3000
    message = b"From: a@example.com\r\nSubject: " + b" ".join(words) + b"\r\n\r\nx\r\n"

    response = scan(make_stoq(), message)

    assert response.results[0].workers["smtp"]["subject"] == " ".join(["üé plain"] * 3000)
