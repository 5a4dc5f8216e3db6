"""Reading an archive's members into memory, streaming, within the limits.

Every reader pulls decompressed data in chunks of at most ``CHUNK`` bytes and hands each chunk to
the ``Budget`` before keeping it, so a limit stops extraction within one chunk, and gathers a
member in one ``MemberBuffer``, so it is never held twice. Member names are data: nothing here
opens, creates or writes a file.
"""

from __future__ import annotations

import bz2
import io
import lzma
import posixpath
import secrets
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import py7zr
import py7zr.archiveinfo
import py7zr.exceptions
import py7zr.io
import py7zr.properties

from stoq_core import Request
from stoq_plugin_decompress.detect import COMPRESSIONS, Format, find_tar
from stoq_plugin_decompress.limits import Budget, LimitExceeded, Limits, MemberBuffer

__all__ = ["CHUNK", "DEFAULT_NAME", "Extraction", "Member", "extract"]

#: The most one read takes from a decompressor.
CHUNK = 1024 * 1024

#: The name of a single compressed stream's content when nothing better is known.
DEFAULT_NAME = "decompressed"

_EXTENSIONS = {
    "gzip": (".gz", ".gzip", ".z"),
    "bzip2": (".bz2", ".bz", ".bzip2"),
    "xz": (".xz",),
    "lzma": (".lzma",),
}

_ZIP_METHODS = {9: "deflate64", 18: "IBM TERSE", 93: "zstandard", 98: "PPMd", 99: "AES encryption"}


@dataclass
class Member:
    """One extracted member: its name in the archive, its bytes, its compressed size if known."""

    filename: str
    content: bytes = field(repr=False)  # a repr of megabytes helps no one
    compressed_size: Optional[int] = None

    def summary(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "size": len(self.content),
            "compressed_size": self.compressed_size,
        }


@dataclass
class Extraction:
    """What came out of one archive: members, errors, and whether some members were left in it."""

    archive_type: str
    members: list[Member] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    truncated: bool = False

    def fail(self, message: str) -> None:
        """Record why some of the archive was not extracted."""
        self.errors.append(message)
        self.truncated = True

    def results(self) -> dict[str, Any]:
        """The worker's results: ``archive_type``, ``members`` and ``truncated``."""
        return {
            "archive_type": self.archive_type,
            "members": [member.summary() for member in self.members],
            "truncated": self.truncated,
        }


@dataclass
class _Job:
    content: Any
    compression: Optional[str]
    budget: Budget
    extraction: Extraction
    passwords: Sequence[str]
    parent_name: Optional[str]


def extract(
    content: Any,
    found: Format,
    limits: Limits,
    passwords: Sequence[str] = (),
    parent_name: Optional[str] = None,
    request: Optional[Request] = None,
) -> Extraction:
    """Extract the archive ``content``, of the format ``detect`` found, within ``limits``.

    Never raises for bad input: a limit reached or a corrupt archive is an error in the
    returned ``Extraction``, which keeps the members read before it.

    :param passwords: tried in order on encrypted members.
    :param parent_name: the archive's own filename, to name a single stream's content.
    :param request: the request being scanned, whose ``max_extracted_bytes`` every byte held
        is charged to as it comes out (None: a direct call, charged nothing).
    """
    archive_type, compression = find_tar(content, found)
    extraction = Extraction(archive_type)
    budget = Budget(limits, len(content), stream_counted=archive_type == "tar", request=request)
    job = _Job(content, compression, budget, extraction, passwords, parent_name)
    try:
        _READERS[archive_type](job)
    except LimitExceeded as exc:
        extraction.fail(str(exc))
    except Exception as exc:  # hostile input makes parsers raise anything
        extraction.fail(f"corrupt or truncated {archive_type} archive: {_reason(exc)}")
    return extraction


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _text(name: str) -> str:
    # tarfile keeps undecodable bytes as surrogates, which no JSON encoder can write out.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _read_chunks(stream: Any) -> Iterator[bytes]:
    # read1 returns what one decompression step gives: a read() that fails part way through
    # (a truncated stream) would lose everything it had gathered.
    read = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return
        yield chunk


# -- single compressed streams ------------------------------------------------------------------


def stream_name(content: Any, kind: str, parent_name: Optional[str]) -> str:
    """The name of a single stream's content: the gzip header's, else the parent's minus its
    extension, else ``DEFAULT_NAME``."""
    if kind == "gzip":
        name = _gzip_header_name(bytes(content[:4096]))
        if name:
            return name
    if parent_name:
        base, extension = posixpath.splitext(parent_name)
        if base and extension:
            return base
        return parent_name
    return DEFAULT_NAME


def _gzip_header_name(head: bytes) -> Optional[str]:
    """The original file name a gzip header carries (FNAME), if any."""
    if len(head) < 10 or not head[3] & 0x08:
        return None
    position = 10
    if head[3] & 0x04:  # FEXTRA comes first: a 2-byte length, then that many bytes
        if len(head) < 12:
            return None
        position = 12 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\x00", position)
    if end <= position:
        return None
    return head[position:end].decode("latin-1")  # RFC 1952 says ISO 8859-1


def _read_stream(job: _Job) -> None:
    kind = job.extraction.archive_type
    budget, extraction = job.budget, job.extraction
    name = stream_name(job.content, kind, job.parent_name)
    budget.entry(name)
    budget.begin(name)
    member = MemberBuffer()
    try:
        with COMPRESSIONS[kind](io.BytesIO(job.content)) as stream:
            for chunk in _read_chunks(stream):
                budget.feed(len(chunk))
                member.write(chunk)
    except LimitExceeded:
        raise
    except Exception as exc:
        if not member.tell():
            raise
        # A cut or damaged stream still yields what came before the damage.
        budget.finish()
        extraction.members.append(Member(name, member.getvalue(), len(job.content)))
        extraction.fail(
            f"corrupt or truncated {kind} archive: {_reason(exc)}; the "
            f"{len(extraction.members[-1].content)} bytes read before it are kept"
        )
        return
    budget.finish()
    extraction.members.append(Member(name, member.getvalue(), len(job.content)))


# -- tar ----------------------------------------------------------------------------------------


class _GuardedStream:
    """The decompressed tar stream tarfile reads, counted against the budget.

    tarfile reads some headers whole (a pax header or a GNU long name of any declared size) and
    skips unknown members' data by seeking, which decompresses it: both are checked here before
    they happen, and a header read larger than a chunk is charged to the request while held.
    """

    def __init__(self, stream: Any, budget: Budget, compressed: bool) -> None:
        self._stream = stream
        self._budget = budget
        self._compressed = compressed
        self._furthest = 0

    def tell(self) -> int:
        return int(self._stream.tell())

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self._allowed():
            declared = "no length" if size is None or size < 0 else f"{size} bytes"
            raise self._exceeded(f"a tar header or record declaring {declared}")
        if size > CHUNK:  # members are read a chunk at a time: only a header reads more
            self._budget.reserve(size)
        data: bytes = self._stream.read(size)
        self._advance(self.tell())
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise io.UnsupportedOperation("the tar stream only seeks from its start or position")
        here = self.tell()
        target = offset if whence == io.SEEK_SET else here + offset
        if target - here > self._allowed():
            raise self._exceeded(f"{target - here} bytes of data the tar archive skips")
        if target < here and self._compressed:
            self._budget.inflate(target)  # going back decompresses again from the start
        position = int(self._stream.seek(target))
        self._advance(position)
        return position

    def _allowed(self) -> int:
        # One chunk is always allowed: members are limited as they are read, not here.
        return max(self._budget.limits.maximum_size, CHUNK)

    def _exceeded(self, what: str) -> LimitExceeded:
        limit = self._budget.limits.maximum_size
        return LimitExceeded(f"maximum_size ({limit} bytes) exceeded by {what}; extraction stopped")

    def _advance(self, position: int) -> None:
        if position > self._furthest:
            self._budget.inflate(position - self._furthest)
            self._furthest = position


def _read_tar(job: _Job) -> None:
    budget, extraction = job.budget, job.extraction
    raw = io.BytesIO(job.content)
    stream = raw if job.compression is None else COMPRESSIONS[job.compression](raw)
    guarded = _GuardedStream(stream, budget, compressed=job.compression is not None)
    with stream, tarfile.open(fileobj=guarded, mode="r:") as archive:  # type: ignore[call-overload]
        for entry in archive:
            name = _text(entry.name)
            budget.entry(name)
            if not entry.isfile():
                continue  # directories, links and devices have no content of their own
            reader = archive.extractfile(entry)
            assert reader is not None  # a regular file always has a reader
            chunks = _read_chunks(reader)
            if entry.issparse():
                # A sparse member's holes come out as zeros the stream never held: 512 bytes of
                # tar made 40 MB that the stream's count missed (a ratio of 35,000 passed).
                chunks = _inflated(chunks, budget)
            content = budget.read_member(name, chunks)
            extraction.members.append(Member(name, content, None))


def _inflated(chunks: Iterator[bytes], budget: Budget) -> Iterator[bytes]:
    for chunk in chunks:
        budget.inflate(len(chunk))
        yield chunk


# -- zip ----------------------------------------------------------------------------------------


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: Any, max_length: int = -1) -> bytes: ...


class _Deflate:
    """zlib's raw deflate with the ``needs_input``/``eof`` interface bz2 and lzma share."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def needs_input(self) -> bool:
        return not self._zlib.unconsumed_tail

    @property
    def unused(self) -> int:
        return len(self._zlib.unused_data)

    def decompress(self, data: Any, max_length: int = -1) -> bytes:
        source = data if self.needs_input else self._zlib.unconsumed_tail
        return self._zlib.decompress(source, max(max_length, 0))


class _Inflation:
    """Feeds ``data`` to a decompressor and yields its output, never more than CHUNK at a time."""

    def __init__(self, decompressor: _Decompressor, data: memoryview) -> None:
        self.decompressor = decompressor
        self.data = data
        self.fed = 0

    def __iter__(self) -> Iterator[bytes]:
        decompressor, data = self.decompressor, self.data
        while not decompressor.eof:
            piece: Any = b""
            if decompressor.needs_input:
                if self.fed >= len(data):
                    return
                piece = data[self.fed : self.fed + CHUNK]
                self.fed += len(piece)
            output = decompressor.decompress(piece, CHUNK)
            if output:
                yield output
            elif not piece:
                return  # no input left to give and nothing more comes out


def _lzma_in_zip(data: memoryview) -> tuple[lzma.LZMADecompressor, memoryview]:
    """A raw LZMA1 decoder for a zip member: 2 bytes of version, 2 of properties length, then
    the lc/lp/pb byte and the dictionary size."""
    if len(data) < 9:
        raise EOFError("the LZMA properties are cut short")
    size = int.from_bytes(data[2:4], "little")
    if size < 5 or len(data) < 4 + size:
        raise zipfile.BadZipFile("bad LZMA properties")
    packed = data[4]
    lc, packed = packed % 9, packed // 9
    lp, pb = packed % 5, packed // 5
    dictionary = int.from_bytes(data[5:9], "little")
    lzma_filter = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dictionary}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter]), data[4 + size :]


def _zip_raw_data(content: Any, info: zipfile.ZipInfo) -> memoryview:
    """A member's compressed bytes, found through its local header."""
    start = info.header_offset
    header = bytes(content[start : start + 30])
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for member {info.filename!r}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    begin = start + 30 + name_length + extra_length
    data = memoryview(content)[begin : begin + info.compress_size]
    if len(data) < info.compress_size:
        raise EOFError(f"the data of member {info.filename!r} is cut short")
    return data


def _checked(chunks: Iterator[bytes], expected_crc: int, name: str) -> Iterator[bytes]:
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
        yield chunk
    if crc != expected_crc:
        raise zipfile.BadZipFile(f"bad CRC-32 for member {name!r}")


def _raw_member_chunks(method: int, data: memoryview, crc: int, name: str) -> Iterator[bytes]:
    """A member's content from its compressed bytes, CRC checked (stored, bzip2 or lzma)."""
    if method == zipfile.ZIP_STORED:
        chunks: Iterator[bytes] = (bytes(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK))
    else:
        decompressor: _Decompressor
        if method == zipfile.ZIP_BZIP2:
            decompressor = bz2.BZ2Decompressor()
        else:
            decompressor, data = _lzma_in_zip(data)
        chunks = iter(_Inflation(decompressor, data))
    return _checked(chunks, crc, name)


def _zip_member_chunks(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, content: Any
) -> Iterator[bytes]:
    if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # zipfile bounds these itself: each read inflates at most what it is asked for.
        with archive.open(info) as stream:
            yield from _read_chunks(stream)
        return
    # zipfile inflates bzip2 and lzma members without any bound per read (a few kilobytes of
    # bzip2 can be gigabytes of zeros), so they are decompressed here, chunk by chunk.
    data = _zip_raw_data(content, info)
    yield from _raw_member_chunks(info.compress_type, data, info.CRC, info.filename)


class _Unextractable(Exception):
    """One member cannot be extracted (encryption, method); the others still can."""


def _read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, job: _Job, good: list[bytes]
) -> bytes:
    name, budget = info.filename, job.budget
    method = info.compress_type
    supported = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
    if method not in supported:
        what = _ZIP_METHODS.get(method, "unknown")
        raise _Unextractable(
            f"member {name!r} uses compression method {method} ({what}), which is not supported"
        )
    if not info.flag_bits & 0x1:
        return budget.read_member(name, _zip_member_chunks(archive, info, job.content))
    if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Unextractable(
            f"member {name!r} is encrypted and compressed with bzip2 or lzma, which is not supported"
        )
    if not job.passwords:
        raise _Unextractable(
            f"member {name!r} is encrypted and no passwords are configured (option 'passwords')"
        )
    # The password that opened the previous member usually opens this one.
    candidates = dict.fromkeys([*good, *(p.encode("utf-8") for p in job.passwords)])
    for password in candidates:
        try:
            with archive.open(info, pwd=password) as stream:
                content = budget.read_member(name, _read_chunks(stream))
        except RuntimeError:  # zipfile's "Bad password"
            continue
        except (zipfile.BadZipFile, zlib.error):
            continue  # a wrong password passes the one-byte check once in 256 tries
        good[:] = [password]
        return content
    raise _Unextractable(
        f"member {name!r} is encrypted and none of the {len(job.passwords)} passwords given opened it"
    )


def _read_zip(job: _Job) -> None:
    budget, extraction = job.budget, job.extraction
    try:
        archive = zipfile.ZipFile(io.BytesIO(job.content))
    except zipfile.BadZipFile as exc:
        _recover_zip(job, exc)
        return
    good: list[bytes] = []
    with archive:
        for info in archive.infolist():
            budget.entry(info.filename)
            if info.is_dir():
                continue
            try:
                content = _read_zip_member(archive, info, job, good)
            except LimitExceeded:
                raise
            except _Unextractable as exc:
                extraction.fail(str(exc))
                continue
            except Exception as exc:  # the central directory still finds the next member
                extraction.fail(
                    f"member {info.filename!r} of the zip archive is corrupt: {_reason(exc)}"
                )
                continue
            extraction.members.append(Member(info.filename, content, info.compress_size))


def _recover_zip(job: _Job, missing: Exception) -> None:
    """Read a zip without its central directory (a cut one, as carved files often are) by
    walking its local file headers."""
    detail = ""
    try:
        _walk_local_headers(job)
    except LimitExceeded:
        raise
    except Exception as exc:
        detail = f"; then {_reason(exc)}"
    found = len(job.extraction.members)
    job.extraction.fail(
        f"corrupt or truncated zip archive: unreadable central directory ({missing}); {found} "
        f"member{'' if found == 1 else 's'} recovered from their local headers{detail}"
    )


def _walk_local_headers(job: _Job) -> None:
    content, budget, extraction = job.content, job.budget, job.extraction
    view = memoryview(content)
    position = 0
    while bytes(view[position : position + 4]) == b"PK\x03\x04":
        header = bytes(view[position : position + 30])
        if len(header) < 30:
            raise EOFError("a local file header is cut short")
        flags, method, _, _, crc, compressed, _, name_length, extra_length = struct.unpack(
            "<4x2xHHHHIIIHH", header
        )
        raw_name = bytes(view[position + 30 : position + 30 + name_length])
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        begin = position + 30 + name_length + extra_length
        described = bool(flags & 0x08)  # the sizes and CRC follow the data instead
        budget.entry(name)
        if flags & 0x1 or method not in _WALKABLE or (described and method != zipfile.ZIP_DEFLATED):
            raise zipfile.BadZipFile(
                f"member {name!r} cannot be read without the central directory"
            )
        inflation = None
        if method == zipfile.ZIP_DEFLATED:
            # Deflate marks its own end, so its length need not be known.
            inflation = _Inflation(_Deflate(), view[begin:])
            chunks: Iterator[bytes] = iter(inflation)
        else:
            data = view[begin : begin + compressed]
            if len(data) < compressed:
                raise EOFError(f"the data of member {name!r} is cut short")
            chunks = _raw_member_chunks(method, data, crc, name)
        # A directory's data is read under the limits too (and dropped): it can be a bomb.
        member = budget.read_member(name, chunks)
        if inflation is not None:
            deflate = inflation.decompressor
            assert isinstance(deflate, _Deflate)
            if not deflate.eof:
                raise EOFError(f"the data of member {name!r} is cut short")
            compressed = inflation.fed - deflate.unused
        end = begin + compressed
        if described:
            signed = bytes(view[end : end + 4]) == b"PK\x07\x08"
            descriptor = bytes(view[end + 4 * signed : end + 4 * signed + 12])
            if len(descriptor) < 12:
                raise EOFError(f"the data descriptor of member {name!r} is cut short")
            crc = int.from_bytes(descriptor[:4], "little")
            end += 4 * signed + 12
        if zlib.crc32(member) != crc:
            raise zipfile.BadZipFile(f"bad CRC-32 for member {name!r}")
        if not name.endswith("/"):
            extraction.members.append(Member(name, member, compressed))
        position = end


_WALKABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


# -- 7z -----------------------------------------------------------------------------------------


class _SevenZipMember(py7zr.io.Py7zIO):
    """Where py7zr writes one member: into memory, each chunk checked against the budget."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self.buffer = MemberBuffer()

    def write(self, s: Any) -> int:
        self._budget.feed(len(s))
        self.buffer.write(s)
        return len(s)

    def read(self, size: Optional[int] = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return self.buffer.tell()


class _SevenZipMembers(py7zr.io.WriterFactory):
    """Gives py7zr a writer per member, refusing members the limits forbid before they inflate.

    py7zr names each writer by the name ``_extract_7z`` gave the member; ``plan`` maps that name
    back to the entry's index, name, declared and compressed sizes.
    """

    def __init__(self, plan: dict[str, tuple[int, str, int, Optional[int]]], job: _Job) -> None:
        self.plan = plan
        self.job = job
        self.current: Optional[tuple[_SevenZipMember, str, Optional[int]]] = None
        self.completed = 0

    def create(self, filename: str) -> py7zr.io.Py7zIO:
        # py7zr asks for the next writer only once the previous member passed its CRC check.
        self.complete()
        budget, limits = self.job.budget, self.job.budget.limits
        index, name, declared, compressed = self.plan.get(filename, (-1, filename, 0, None))
        if index >= limits.maximum_count:
            raise budget.count_exceeded(name)
        # py7zr inflates up to a member's declared size in one go: refuse a declared size over
        # the limits before any of it is inflated. The bytes written are counted as well.
        if declared > limits.maximum_size:
            raise budget.size_exceeded(name, declared)
        if budget.total + declared > limits.maximum_total:
            raise LimitExceeded(
                f"maximum_total ({limits.maximum_total} bytes) exceeded at member {name!r} (its "
                f"header declares {declared} bytes); extraction stopped"
            )
        budget.begin(name)
        # py7zr holds a block of the member (up to its declared size) beside the copy written
        # here, and makes it before any write: charge that working copy first.
        budget.reserve(declared)
        writer = _SevenZipMember(budget)
        self.current = (writer, name, compressed)
        return writer

    def complete(self) -> None:
        """Keep the member being written: it is whole."""
        if self.current is None:
            return
        writer, name, compressed = self.current
        self.current = None
        self.job.budget.finish()
        self.job.extraction.members.append(Member(name, writer.buffer.getvalue(), compressed))
        self.completed += 1


def _encoded_header_size(content: Any) -> int:
    """The bytes a 7z's encoded (compressed) header declares it decodes to; 0 if its header is
    not encoded or cannot be read (py7zr then says why)."""
    try:
        fp = io.BytesIO(content)
        signature = py7zr.archiveinfo.SignatureHeader.retrieve(fp)
        fp.seek(signature.nextheaderofs, io.SEEK_CUR)
        header = io.BytesIO(fp.read(signature.nextheadersize))
        if header.read(1) != py7zr.properties.PROPERTY.ENCODED_HEADER:
            return 0
        streams = py7zr.archiveinfo.HeaderStreamsInfo.retrieve(header)
        return sum(folder.unpacksizes[-1] for folder in streams.unpackinfo.folders)
    except Exception:  # a corrupt header: py7zr reads it again and reports it
        return 0


#: A 7z declaring more than this many times ``maximum_count`` entries is not opened: py7zr builds
#: every entry's record (about 700 bytes) before the first member comes out, so a 164-byte 7z
#: declaring 400,000 entries peaked at 277 MiB, and py7zr allows 8 million.
ENTRIES_PER_COUNT = 100


class _EntryCount(py7zr.archiveinfo.Header):
    """A 7z's header read as py7zr reads it (an encoded one decoded), up to the number of
    entries it declares: no entry is built."""

    entries = 0

    def _extract_header_info(self, fp: Any) -> None:
        pid = fp.read(1)
        if pid == py7zr.properties.PROPERTY.MAIN_STREAMS_INFO:
            py7zr.archiveinfo.StreamsInfo.retrieve(fp)
            pid = fp.read(1)
        if pid == py7zr.properties.PROPERTY.FILES_INFO:
            self.entries = py7zr.archiveinfo.read_uint64(fp)


def _declared_entries(content: Any, password: Optional[str]) -> Optional[int]:
    """The entries a 7z's header declares; ``None`` if it cannot be read with ``password`` (an
    encrypted header, a corrupt one: py7zr then says why)."""
    try:
        fp = io.BytesIO(content)
        signature = py7zr.archiveinfo.SignatureHeader.retrieve(fp)
        start = fp.tell()
        fp.seek(signature.nextheaderofs, io.SEEK_CUR)
        header = io.BytesIO(fp.read(signature.nextheadersize))
        return int(_EntryCount.retrieve(fp, header, start, password).entries)
    except Exception:
        return None


def _read_7z(job: _Job) -> None:
    # py7zr decodes an encoded header whole, and holds it twice, before any member comes out:
    # 185 bytes of 7z declaring a 64 MiB header peaked at 129 MiB. It is limited like a tar
    # header, and counted as inflated and held, before py7zr opens the archive.
    budget = job.budget
    declared = _encoded_header_size(job.content)
    if declared > max(budget.limits.maximum_size, CHUNK):
        raise LimitExceeded(
            f"maximum_size ({budget.limits.maximum_size} bytes) exceeded by the 7z archive's "
            f"encoded header, which declares {declared} bytes; extraction stopped"
        )
    budget.inflate(declared)
    budget.reserve(2 * declared)
    candidates: list[Optional[str]] = [None, *job.passwords]
    most = ENTRIES_PER_COUNT * budget.limits.maximum_count
    for password in candidates:
        entries = _declared_entries(job.content, password)
        if entries is not None and entries > most:
            raise LimitExceeded(
                f"maximum_count ({budget.limits.maximum_count} members) exceeded: the 7z "
                f"archive declares {entries} entries, more than {ENTRIES_PER_COUNT} times as "
                "many; not opened"
            )
        try:
            archive = py7zr.SevenZipFile(io.BytesIO(job.content), password=password)
        except py7zr.exceptions.PasswordRequired:
            continue  # its header is encrypted
        except Exception:
            if password is None:
                raise  # corrupt, not locked
            continue  # a wrong password garbles an encrypted header
        with archive:
            if password is None and archive.needs_password():
                continue
            if _extract_7z(archive, job, may_retry=password is not None):
                return
    if job.passwords:
        job.extraction.fail(
            f"the 7z archive is encrypted and none of the {len(job.passwords)} passwords given opened it"
        )
    else:
        job.extraction.fail(
            "the 7z archive is encrypted and no passwords are configured (option 'passwords')"
        )


def _extract_7z(archive: py7zr.SevenZipFile, job: _Job, may_retry: bool) -> bool:
    """Extract every member; False if nothing came out and another password should be tried."""
    limit = job.budget.limits.maximum_count
    # py7zr checks each name as a path under the current directory, even when writing into
    # memory: one member named "../x", "c:x" or "." failed the whole archive (its other members
    # went unscanned), and "/x" reached the writer as "x", missing the plan below. Each member
    # is given a name py7zr accepts and maps back here; a random part keeps it from naming
    # anything in the current directory. Only the first ``maximum_count`` are asked for, so py7zr
    # neither checks nor inflates the others.
    token = secrets.token_hex(8)
    plan: dict[str, tuple[int, str, int, Optional[int]]] = {}
    infos = archive.files.files_list
    entries = list(archive.files)
    for index, entry in enumerate(entries[:limit]):
        key = f"stoq-{token}-{index}"
        plan[key] = (index, entry.filename, entry.uncompressed, entry.compressed)
        infos[index]["filename"] = key
    members = _SevenZipMembers(plan, job)
    try:
        archive.extract(targets=list(plan), factory=members)
    except LimitExceeded:
        raise
    except Exception:
        if may_retry and not members.completed:
            return False
        raise
    members.complete()
    if len(entries) > limit:
        raise job.budget.count_exceeded(entries[limit].filename)
    return True


_READERS = {
    "zip": _read_zip,
    "tar": _read_tar,
    "7z": _read_7z,
    "gzip": _read_stream,
    "bzip2": _read_stream,
    "xz": _read_stream,
    "lzma": _read_stream,
}
