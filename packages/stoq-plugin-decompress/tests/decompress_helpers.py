"""Archives built at test time, and the plugin loaded through its entry point.

Named for this package so that it never collides with another package's test helpers when every
package's tests run in one pytest session.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import lzma
import os
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import py7zr

from stoq_core import Payload, PayloadMeta, Request, Stoq, WorkerResponse

MIB = 1024 * 1024


def load(tmp_path: Path, **options: Any) -> Any:
    """The decompress plugin, loaded by a Stoq the way a user's is, with these options."""
    stoq = Stoq(
        log_dir=None,
        base_dir=str(tmp_path),
        plugin_opts={"decompress": options} if options else None,
    )
    return stoq.load_plugin("decompress")


def run(plugin: Any, content: bytes, filename: Optional[str] = None) -> Optional[WorkerResponse]:
    """Call the plugin's scan hook on one payload, as the engine does."""
    meta = PayloadMeta(extra_data={"filename": filename} if filename else None)
    payload = Payload(content, meta)
    responses: list[Optional[WorkerResponse]] = []

    async def scan() -> None:
        # Not returned from the coroutine: Python 3.11's asyncio.run takes the repr of the main
        # task (and so of its result, megabytes of member content) when it restores SIGINT.
        responses.append(await plugin.scan(payload, Request([payload])))

    asyncio.run(scan())
    return responses[0]


def extracted(response: WorkerResponse) -> dict[str, bytes]:
    """The extracted payloads as {filename: content}."""
    return {p.payload_meta.extra_data["filename"]: p.content for p in response.extracted}


def error_texts(response: WorkerResponse) -> list[str]:
    return [error.error for error in response.errors]


# -- archives -----------------------------------------------------------------------------------


def zip_of(members: Mapping[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_of(members: Mapping[str, bytes], compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def gzip_of(content: bytes, name: Optional[str] = None) -> bytes:
    buffer = io.BytesIO()
    # GzipFile writes the FNAME field from the filename it is given; "" leaves it out.
    with gzip.GzipFile(filename=name or "", fileobj=buffer, mode="wb", mtime=0) as stream:
        stream.write(content)
    return buffer.getvalue()


def bzip2_of(content: bytes) -> bytes:
    return bz2.compress(content)


def xz_of(content: bytes) -> bytes:
    return lzma.compress(content)


def lzma_of(content: bytes) -> bytes:
    return lzma.compress(content, format=lzma.FORMAT_ALONE)


def sevenzip_of(members: Mapping[str, bytes], password: Optional[str] = None) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password=password) as archive:
        for name, content in members.items():
            archive.writestr(content, name)
    return buffer.getvalue()


# -- bombs, written in chunks so the test never holds the inflated data either -------------------


def zeros_gzip(size: int) -> bytes:
    """A gzip of ``size`` zero bytes."""
    buffer = io.BytesIO()
    zeros = bytes(MIB)
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        for _ in range(size // MIB):
            stream.write(zeros)
    return buffer.getvalue()


def zeros_zip(count: int, size: int, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``count`` members named m0, m1, ... of ``size`` zero bytes each."""
    buffer = io.BytesIO()
    zeros = bytes(MIB)
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for index in range(count):
            with archive.open(f"m{index}", "w") as member:
                for _ in range(size // MIB):
                    member.write(zeros)
    return buffer.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def zeros_tar(size: int, compression: str = "gz", member_type: bytes = tarfile.REGTYPE) -> bytes:
    """A compressed tar holding one member ``big`` of ``size`` zero bytes, of the given type."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        info = tarfile.TarInfo("big")
        info.size = size
        info.type = member_type
        archive.addfile(info, _Zeros(size))
        small = tarfile.TarInfo("after")
        small.size = 5
        archive.addfile(small, io.BytesIO(b"after"))
    return buffer.getvalue()


# -- ZipCrypto, which zipfile reads but cannot write ----------------------------------------------


def _crc_step(value: int, byte: int) -> int:
    # One step of the CRC-32 register, which is what the ZipCrypto key schedule uses.
    return zlib.crc32(bytes([byte]), value ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


class _ZipCrypto:
    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    def _update(self, byte: int) -> None:
        k0, k1, k2 = self.keys
        k0 = _crc_step(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = _crc_step(k2, k1 >> 24)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def encrypted_zip(members: Mapping[str, bytes], password: str) -> bytes:
    """A zip whose deflated members are encrypted with ZipCrypto under ``password``."""
    out = io.BytesIO()
    central = []
    for name, content in members.items():
        crc = zlib.crc32(content)
        deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = deflate.compress(content) + deflate.flush()
        cipher = _ZipCrypto(password.encode())
        # 11 random bytes and the CRC's top byte, which readers use to check the password.
        body = cipher.encrypt(os.urandom(11) + bytes([crc >> 24])) + cipher.encrypt(data)
        raw_name = name.encode()
        offset = out.tell()
        fields = struct.pack(
            "<HHHHHIIIHH", 20, 0x1, 8, 0, 0x21, crc, len(body), len(content), len(raw_name), 0
        )
        out.write(b"PK\x03\x04" + fields + raw_name + body)
        central.append(
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHII", 0, 0, 0, 0, offset)
            + raw_name
        )
    start = out.tell()
    directory = b"".join(central)
    out.write(directory)
    out.write(
        b"PK\x05\x06"
        + struct.pack("<HHHHIIH", 0, 0, len(central), len(central), len(directory), start, 0)
    )
    return out.getvalue()
