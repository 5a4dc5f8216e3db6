"""Which archive format a payload is, from its magic bytes alone (never its filename)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from typing import Any, Optional

__all__ = ["COMPRESSIONS", "Format", "detect", "find_tar", "is_tar_header"]

#: Single-stream compressions, as tarfile and this plugin name them, and their file objects.
COMPRESSIONS: dict[str, Any] = {
    "gzip": lambda fileobj: gzip.GzipFile(fileobj=fileobj, mode="rb"),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
    "lzma": lambda fileobj: lzma.LZMAFile(fileobj, format=lzma.FORMAT_ALONE),
}

_ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive's end record
_SEVEN_ZIP = b"7z\xbc\xaf\x27\x1c"
_GZIP = b"\x1f\x8b\x08"  # magic and the only method gzip defines (deflate)
_XZ = b"\xfd7zXZ\x00"
_BZIP2_BLOCKS = (b"1AY&SY", b"\x17rE8P\x90")  # first block, or end of an empty stream

# The dictionary sizes lzma and 7-Zip write: 2^n and 3 * 2^n bytes, from 4 KiB to 1.5 GiB.
_LZMA_DICTIONARIES = frozenset({1 << n for n in range(12, 31)} | {3 << n for n in range(11, 30)})

Format = tuple[str, Optional[str]]  # (archive type, compression of a tar)


def detect(content: Any) -> Optional[Format]:
    """The archive type of ``content`` from its first bytes; None if it is not an archive.

    Types: ``zip``, ``7z``, ``tar``, ``gzip``, ``bzip2``, ``xz``, ``lzma``. This reads no more
    than 512 bytes and decompresses nothing: ``find_tar`` says if a compressed stream holds a tar.
    """
    head = bytes(content[:16])
    if head.startswith(_ZIP):
        return ("zip", None)
    if head.startswith(_SEVEN_ZIP):
        return ("7z", None)
    compression = _compression(head)
    if compression is not None:
        return (compression, None)
    if is_tar_header(bytes(content[:512])):
        return ("tar", None)
    return None


def find_tar(content: Any, found: Format) -> Format:
    """``found``, or ``("tar", compression)`` if the compressed stream starts with a tar header."""
    kind, _ = found
    if kind in COMPRESSIONS and _starts_with_tar(content, kind):
        return ("tar", kind)
    return found


def _compression(head: bytes) -> Optional[str]:
    if head.startswith(_GZIP):
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in _BZIP2_BLOCKS:
        return "bzip2"
    if head.startswith(_XZ):
        return "xz"
    if _is_lzma_alone(head):
        return "lzma"
    return None


def _is_lzma_alone(head: bytes) -> bool:
    """The legacy .lzma header: properties, a usual dictionary size, and a plausible length.

    It has no magic, so all three must look like what lzma and 7-Zip write.
    """
    if len(head) < 13 or head[0] >= 9 * 5 * 5:
        return False
    dictionary = int.from_bytes(head[1:5], "little")
    length = int.from_bytes(head[5:13], "little")
    return dictionary in _LZMA_DICTIONARIES and (length == (1 << 64) - 1 or length < 1 << 40)


def _starts_with_tar(content: Any, compression: str) -> bool:
    try:
        with COMPRESSIONS[compression](io.BytesIO(content)) as stream:
            return is_tar_header(stream.read(512))
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return False  # a corrupt stream: extraction will say so


def is_tar_header(block: bytes) -> bool:
    """True if ``block`` is a tar header block: a name and a valid header checksum."""
    if len(block) < 512 or block[0] == 0:
        return False
    field = block[148:156].replace(b"\x00", b" ").strip()
    if not field or field.strip(b"01234567"):
        return False  # not an octal number: checked before int(), as most payloads fail here
    stored = int(field, 8)
    # The checksum is computed with its own field taken as eight spaces; some old tars summed
    # signed bytes, which tarfile accepts too.
    rest = block[:148] + block[156:512]
    unsigned = sum(rest) + 8 * 0x20
    signed = unsigned - 256 * sum(1 for byte in rest if byte > 127)
    return stored in (unsigned, signed)
