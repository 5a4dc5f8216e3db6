"""A damaged archive gives an error saying so, plus every member read before the damage."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
from decompress_helpers import (
    error_texts,
    extracted,
    gzip_of,
    load,
    run,
    sevenzip_of,
    tar_of,
    xz_of,
    zip_of,
)

FIRST = {"one.txt": b"one\n" * 100, "two.txt": b"two\n" * 100}


@pytest.fixture
def plugin(tmp_path: Path) -> object:
    return load(tmp_path)


def test_a_zip_cut_short_is_read_from_its_local_headers(plugin: object) -> None:
    archive = zip_of({**FIRST, "three.bin": random.Random(3).randbytes(20000)})
    cut = archive[: archive.index(b"three.bin") + 100]  # in the third member's data
    response = run(plugin, cut)
    assert response is not None
    assert extracted(response) == FIRST
    [error] = error_texts(response)
    assert error.startswith("corrupt or truncated zip archive: unreadable central directory")
    assert "2 members recovered from their local headers" in error
    assert "the data of member 'three.bin' is cut short" in error
    assert response.results["truncated"] is True


def test_a_zip_member_with_a_bad_crc_is_an_error_and_the_others_are_kept(plugin: object) -> None:
    archive = bytearray(zip_of(FIRST, zipfile.ZIP_STORED))
    data_at = archive.index(b"one\n")
    archive[data_at] ^= 0xFF  # one flipped byte in one.txt's stored data
    response = run(plugin, bytes(archive))
    assert response is not None
    assert extracted(response) == {"two.txt": FIRST["two.txt"]}
    [error] = error_texts(response)
    assert error.startswith(
        "member 'one.txt' of the zip archive is corrupt: BadZipFile: Bad CRC-32"
    )


def test_a_cut_tar_gz_keeps_the_members_before_the_cut(plugin: object) -> None:
    archive = tar_of({**FIRST, "big.bin": bytes(range(256)) * 4000}, "gz")
    response = run(plugin, archive[: len(archive) * 3 // 4])
    assert response is not None
    assert extracted(response) == FIRST
    [error] = error_texts(response)
    assert error.startswith("corrupt or truncated tar archive: ")
    assert response.results["truncated"] is True


def test_a_tar_whose_member_data_is_cut_keeps_the_members_before(plugin: object) -> None:
    archive = tar_of({**FIRST, "big.bin": b"b" * 20000})
    response = run(plugin, archive[:3000])
    assert response is not None
    assert extracted(response) == FIRST
    assert error_texts(response) == [
        "corrupt or truncated tar archive: ReadError: unexpected end of data"
    ]


def test_a_cut_gzip_stream_keeps_the_bytes_before_the_cut(plugin: object) -> None:
    content = bytes(range(256)) * 4000
    archive = gzip_of(content, name="data.bin")
    response = run(plugin, archive[: len(archive) // 2])
    assert response is not None
    [member] = response.extracted
    assert member.payload_meta.extra_data["filename"] == "data.bin"
    assert 0 < len(member.content) < len(content)
    assert content.startswith(member.content)
    [error] = error_texts(response)
    assert error.startswith("corrupt or truncated gzip archive: EOFError: ")
    assert error.endswith(f"the {len(member.content)} bytes read before it are kept")


def test_a_corrupt_xz_stream_is_an_error_without_members(plugin: object) -> None:
    archive = bytearray(xz_of(b"some content " * 100))
    archive[20:30] = b"\xff" * 10
    response = run(plugin, bytes(archive))
    assert response is not None
    assert response.extracted == []
    [error] = error_texts(response)
    assert error.startswith("corrupt or truncated xz archive: ")


def test_a_cut_7z_archive_is_an_error(plugin: object) -> None:
    archive = sevenzip_of(FIRST)
    response = run(plugin, archive[:-20])
    assert response is not None
    [error] = error_texts(response)
    assert error.startswith("corrupt or truncated 7z archive: ")
    assert response.results == {"archive_type": "7z", "members": [], "truncated": True}


def test_a_zip_that_is_only_a_local_header_magic_is_an_error(plugin: object) -> None:
    response = run(plugin, b"PK\x03\x04 and nothing a zip would hold")
    assert response is not None
    assert response.extracted == []
    [error] = error_texts(response)
    assert error.startswith("corrupt or truncated zip archive: unreadable central directory")
