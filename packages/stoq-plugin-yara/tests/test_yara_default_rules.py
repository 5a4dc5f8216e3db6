"""The rule set shipped in the distribution, used when no rule option is given."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
from collections.abc import Callable

import pytest

from stoq_core import Stoq
from stoq_core.testing import call_hook, make_payload, scan_sync


def pe() -> bytes:
    # A DOS header, the DOS stub's text where linkers put it, and e_lfanew (at 0x3C) pointing
    # at the PE signature after it.
    image = bytearray(0x80)
    image[0:2] = b"MZ"
    image[0x3C:0x40] = struct.pack("<I", 0x80)
    stub = b"This program cannot be run in DOS mode"
    image[0x4E : 0x4E + len(stub)] = stub
    return bytes(image) + b"PE\0\0" + b"\0" * 64


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_of(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


SAMPLES = {
    "pe_executable": pe(),
    "dos_executable": b"MZ" + b"\0" * 100,
    "embedded_pe": b"an installer with a payload appended: " + pe(),
    "elf_executable": b"\x7fELF\x02\x01\x01" + b"\0" * 57,
    "macho_executable": b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\0" * 24,
    "macho_universal": b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + b"\0" * 40,
    "zip_archive": zip_of({"a.txt": b"hello"}),
    "gzip_archive": gzip.compress(b"hello"),
    "sevenzip_archive": b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\0" * 24,
    "rar_archive": b"Rar!\x1a\x07\x01\x00" + b"\0" * 24,
    "tar_archive": tar_of("a.txt", b"hello"),
    "bzip2_archive": bz2.compress(b"hello"),
    "xz_archive": lzma.compress(b"hello"),
    "shebang_script": b"#!/bin/sh\necho hello\n",
    "powershell_script": b"powershell -EncodedCommand SQBFAFgA",
    "vbscript": b'Set s = CreateObject("WScript.Shell")\ns.Run "calc"',
    "pdf_document": b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n",
    "ole_document": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504,
    "ooxml_document": zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"}),
    "rtf_document": b"{\\rtf1\\ansi hello}",
}


@pytest.fixture
def stoq(make_stoq: Callable[..., Stoq]) -> Stoq:
    return make_stoq(always_dispatch=["yara"])


def rules_hit(stoq: Stoq, content: bytes) -> set[str]:
    response = scan_sync(stoq, content)
    return {m["rule"] for m in response.results[0].workers["yara"]["matches"]}


@pytest.mark.parametrize("rule", sorted(SAMPLES))
def test_the_default_worker_rules_recognise(stoq: Stoq, rule: str) -> None:
    assert rule in rules_hit(stoq, SAMPLES[rule])


def test_a_pe_is_not_also_a_bare_dos_executable(stoq: Stoq) -> None:
    assert rules_hit(stoq, pe()) == {"pe_executable"}


def test_a_java_class_file_is_not_taken_for_a_universal_binary(stoq: Stoq) -> None:
    # Java 17 class file: magic, minor 0, major 61.
    assert rules_hit(stoq, b"\xca\xfe\xba\xbe\x00\x00\x00\x3d" + b"\0" * 40) == set()


def test_plain_text_matches_no_default_rule(stoq: Stoq) -> None:
    assert rules_hit(stoq, b"Dear diary, nothing happened today.") == set()


@pytest.mark.parametrize(
    "rule", ["zip_archive", "gzip_archive", "sevenzip_archive", "rar_archive", "tar_archive"]
)
def test_the_default_dispatcher_rules_send_archives_to_decompress(
    make_stoq: Callable[..., Stoq], rule: str
) -> None:
    stoq = make_stoq(dispatchers=["yara"])

    outcome = call_hook(stoq, "yara", "get_dispatches", make_payload(SAMPLES[rule]))

    assert outcome.errors == []
    assert outcome.value.plugin_names == ["decompress"]
    assert list(outcome.value.meta) == [rule]


@pytest.mark.parametrize(
    "content",
    [
        b"Received: from mx.example.org\r\n\tby mail.example.com\r\nSubject: hi\r\n\r\nbody",
        b"From: a@example.com\r\nTo: b@example.com\r\n\r\nbody",
        b"From a@example.com Fri Nov 27 10:00:00 2026\nFrom: a@example.com\nSubject: mbox\n\n",
    ],
)
def test_the_default_dispatcher_rules_send_e_mail_to_smtp(
    make_stoq: Callable[..., Stoq], content: bytes
) -> None:
    stoq = make_stoq(dispatchers=["yara"])

    outcome = call_hook(stoq, "yara", "get_dispatches", make_payload(content))

    assert outcome.errors == []
    assert outcome.value.plugin_names == ["smtp"]
    assert list(outcome.value.meta) == ["email_message"]


@pytest.mark.parametrize(
    "content", [b"From: the desk of the president\nDear all, ...", b"Subject: notes\nTo: do"]
)
def test_text_that_only_starts_like_a_header_is_not_sent_to_smtp(
    make_stoq: Callable[..., Stoq], content: bytes
) -> None:
    stoq = make_stoq(dispatchers=["yara"])

    outcome = call_hook(stoq, "yara", "get_dispatches", make_payload(content))

    assert outcome.value.plugin_names == []


def test_the_default_dispatcher_rules_leave_an_executable_alone(
    make_stoq: Callable[..., Stoq],
) -> None:
    stoq = make_stoq(dispatchers=["yara"])

    outcome = call_hook(stoq, "yara", "get_dispatches", make_payload(pe()))

    assert outcome.errors == []
    assert outcome.value.plugin_names == []
