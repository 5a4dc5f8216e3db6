"""Archives crafted to hide members, or to make the parsers inflate past the limits."""

from __future__ import annotations

import bz2
import io
import struct
import tarfile
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import py7zr
import py7zr.helpers
import py7zr.py7zr
import pytest
from decompress_helpers import MIB, error_texts, extracted, load, run

pytestmark = pytest.mark.timeout(60)


# -- builders -----------------------------------------------------------------------------------


def _seven_zip(next_header: bytes, packed: bytes = b"") -> bytes:
    """A 7z of ``packed`` streams and the header that describes them."""
    start = struct.pack("<QQI", len(packed), len(next_header), zlib.crc32(next_header))
    return (
        b"7z\xbc\xaf\x27\x1c\x00\x04"
        + struct.pack("<I", zlib.crc32(start))
        + start
        + packed
        + next_header
    )


def _number(value: int) -> bytes:
    return b"\xff" + value.to_bytes(8, "little")  # a 7z NUMBER in its longest form


def _bzip2_encoded(header: bytes, padding: int) -> bytes:
    """A 7z whose header is bzip2-encoded: ``header``, then ``padding`` zero bytes."""
    compressor = bz2.BZ2Compressor(9)
    packed = compressor.compress(header)
    for _ in range(padding // MIB):
        packed += compressor.compress(bytes(MIB))
    packed += compressor.compress(bytes(padding % MIB)) + compressor.flush()
    folder = (
        b"\x0b" + _number(1) + b"\x00"  # kFolder: one, not external
        + _number(1) + b"\x03\x04\x02\x02"  # one coder: bzip2
        + b"\x0c" + _number(len(header) + padding)  # kCodersUnpackSize
        + b"\x00"
    )  # fmt: skip
    encoded = (
        b"\x17"  # kEncodedHeader
        + b"\x06" + _number(0) + _number(1) + b"\x09" + _number(len(packed)) + b"\x00"
        + b"\x07" + folder
        + b"\x00"
    )  # fmt: skip
    return _seven_zip(encoded, packed)


def _many_entries(count: int, encoded: bool = True) -> bytes:
    """A 7z whose header (bzip2-encoded, or plain) declares ``count`` nameless empty entries."""
    header = b"\x01\x05" + _number(count) + b"\x19" + _number(count) + bytes(count) + b"\x00\x00"
    return _bzip2_encoded(header, 0) if encoded else _seven_zip(header)


def _seven_zip_named(members: list[tuple[str, bytes]]) -> bytes:
    """A 7z with these member names, which py7zr may refuse to write: written under
    placeholders of the same length in a plain header, then renamed there."""
    buffer = io.BytesIO()
    archive = py7zr.SevenZipFile(buffer, "w")
    archive.encoded_header_mode = False
    placeholders = [chr(0x4E00 + index) * len(name) for index, (name, _) in enumerate(members)]
    for placeholder, (_, content) in zip(placeholders, members):
        archive.writestr(content, placeholder)
    archive.close()
    data = bytearray(buffer.getvalue())
    offset, size = struct.unpack("<QQ", data[12:28])
    header = bytes(data[32 + offset : 32 + offset + size])
    for placeholder, (name, _) in zip(placeholders, members):
        header = header.replace(placeholder.encode("utf-16-le"), name.encode("utf-16-le"))
    data[32 + offset : 32 + offset + size] = header
    data[28:32] = struct.pack("<I", zlib.crc32(header))
    data[8:12] = struct.pack("<I", zlib.crc32(bytes(data[12:32])))
    return bytes(data)


def _sparse_member(name: str, size: int) -> bytes:
    """A GNU sparse tar member of ``size`` bytes: holes, then one 512-byte block of data."""
    info = tarfile.TarInfo(name)
    info.size = 512
    info.type = tarfile.GNUTYPE_SPARSE
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT)[:512])
    block[386:410] = b"%011o\x00%011o\x00" % (size - 512, 512)  # the one data block, at the end
    block[483:495] = b"%011o\x00" % size  # the member's real size
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block) + b"x" * 512


def _peak(plugin: Any, content: bytes) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        response = run(plugin, content)
        return response, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- 7z -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.exe", "c:evil.exe", ".", "/etc/evil.exe", "./evil.exe"])
def test_a_7z_member_named_as_no_path_could_be_hides_no_other_member(
    tmp_path: Path, name: str
) -> None:
    archive = _seven_zip_named([("first.txt", b"first"), (name, b"odd"), ("last.txt", b"last")])

    response = run(load(tmp_path), archive)

    assert response is not None
    assert error_texts(response) == []
    assert extracted(response) == {"first.txt": b"first", name: b"odd", "last.txt": b"last"}


def test_7z_members_of_the_same_name_are_all_extracted_under_it(tmp_path: Path) -> None:
    archive = _seven_zip_named([("same", b"one"), ("same", b"two")])

    response = run(load(tmp_path), archive)

    assert response is not None
    assert [(p.payload_meta.extra_data["filename"], p.content) for p in response.extracted] == [
        ("same", b"one"),
        ("same", b"two"),
    ]


def test_a_7z_header_declaring_more_than_maximum_size_is_refused_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    archive = _bzip2_encoded(b"\x01\x00", 64 * MIB)  # a few hundred bytes

    response, peak = _peak(load(tmp_path, maximum_ratio=1e9), archive)

    assert error_texts(response) == [
        "maximum_size (50000000 bytes) exceeded by the 7z archive's encoded header, which "
        f"declares {64 * MIB + 2} bytes; extraction stopped"
    ]
    assert peak < 8 * MIB  # py7zr held 128 MiB decoding it


def test_a_7z_header_inflating_past_maximum_ratio_is_refused_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    archive = _bzip2_encoded(b"\x01\x00", 16 * MIB)

    response, peak = _peak(load(tmp_path), archive)

    assert len(error_texts(response)) == 1
    assert error_texts(response)[0].startswith("maximum_ratio (100) exceeded in its headers")
    assert peak < 8 * MIB


def test_a_7z_of_more_entries_than_maximum_count_checks_only_those_it_extracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # py7zr checks each name it extracts against the file system: 200,000 entries took 50 s.
    checked = []
    original = py7zr.helpers.get_sanitized_output_path

    def counted(name: str, path: Any) -> Any:
        checked.append(name)
        return original(name, path)

    monkeypatch.setattr(py7zr.py7zr, "get_sanitized_output_path", counted)

    response = run(load(tmp_path, maximum_count=10), _many_entries(900))

    assert response is not None
    assert error_texts(response) == [
        "maximum_count (10 members) exceeded: extraction stopped before member 'contents'"
    ]
    assert len(checked) == 10


@pytest.mark.parametrize("encoded", [True, False], ids=["encoded header", "plain header"])
def test_a_7z_declaring_far_more_entries_than_maximum_count_is_never_opened(
    tmp_path: Path, encoded: bool
) -> None:
    # py7zr builds every entry's record before the first member comes out: 164 bytes declaring
    # 400,000 entries peaked at 277 MiB, a plain 1 MB header of 1,000,000 at 605 MiB in 7 s.
    archive = _many_entries(200_000, encoded)

    response, peak = _peak(load(tmp_path), archive)

    assert error_texts(response) == [
        "maximum_count (1000 members) exceeded: the 7z archive declares 200000 entries, more "
        "than 100 times as many; not opened"
    ]
    assert peak < 8 * MIB


# -- tar ----------------------------------------------------------------------------------------


def test_the_holes_of_a_sparse_tar_member_count_towards_maximum_ratio(tmp_path: Path) -> None:
    archive = b"".join(_sparse_member(f"s{index}", 40_000_000) for index in range(9))
    archive += bytes(1024)  # 10 KiB of tar that held 360 MB

    response = run(load(tmp_path), archive)

    assert response is not None
    assert response.extracted == []
    assert len(error_texts(response)) == 1
    assert error_texts(response)[0].startswith("maximum_ratio (100) exceeded at member 's0'")


def test_a_sparse_tar_member_within_the_limits_is_extracted_whole(tmp_path: Path) -> None:
    archive = _sparse_member("sparse", 4096) + bytes(1024)

    response = run(load(tmp_path), archive)

    assert response is not None
    assert error_texts(response) == []
    assert extracted(response) == {"sparse": bytes(4096 - 512) + b"x" * 512}
