"""The hard limits on one archive's extraction, counted as the bytes come out of the decompressor.

Nothing here trusts a size an archive's header claims: every check is made on bytes actually
inflated, chunk by chunk, so extraction stops within one chunk of a limit and a bomb never
inflates past it in memory. Every byte kept is also charged to the request's
``max_extracted_bytes`` as it comes out, a budget every extraction of the request running at
once draws on: 16 bombs within this plugin's own limits, inflated at once, peaked at 7,485 MiB
of RSS under a 1 GiB limit (#12).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from stoq_core import ExtractionLimitExceeded, Request, charge_extracted_bytes

__all__ = ["RATIO_FLOOR", "Budget", "LimitExceeded", "Limits", "MemberBuffer"]

#: The compression ratio is only judged once an archive has inflated this many bytes: a few
#: kilobytes of a highly compressible file (a page of spaces) are no threat and are not refused.
RATIO_FLOOR = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The plugin's limit options (see the README for their meaning)."""

    maximum_size: int = 50_000_000
    maximum_total: int = 500_000_000
    maximum_count: int = 1000
    maximum_ratio: float = 100.0


class LimitExceeded(Exception):
    """Extraction reached one of the limits and stopped; the message names the limit."""


class Budget:
    """Counts what one archive has inflated and raises LimitExceeded at the first limit reached.

    :param limits: the limits in force.
    :param archive_size: the archive's own size in bytes (the ratio's denominator).
    :param stream_counted: the decompressed stream is counted through ``inflate`` (tar: headers
        and skipped data cost as much as members), so members do not count towards the ratio again.
    :param request: the request being scanned; None (a direct call) charges nothing.
    """

    def __init__(
        self,
        limits: Limits,
        archive_size: int,
        *,
        stream_counted: bool = False,
        request: Optional[Request] = None,
    ) -> None:
        self.limits = limits
        self.request = request  #: whose ``max_extracted_bytes`` the bytes held are charged to
        self.archive_size = max(archive_size, 1)
        self.stream_counted = stream_counted
        self.entries = 0  #: archive entries met (files, directories, links)
        self.total = 0  #: bytes of the members extracted so far
        self.inflated = 0  #: every byte decompressed, the ratio's numerator
        self.member = 0  #: bytes of the member being read
        self.current: Optional[str] = None  #: the member being read
        self.scratch = 0  #: bytes charged for a parser's transient buffers, reused by each member

    def entry(self, name: str) -> None:
        """Count one archive entry; raises when it is one more than ``maximum_count``."""
        if self.entries >= self.limits.maximum_count:
            raise self.count_exceeded(name)
        self.entries += 1

    def count_exceeded(self, name: str) -> LimitExceeded:
        return LimitExceeded(
            f"maximum_count ({self.limits.maximum_count} members) exceeded: extraction stopped "
            f"before member {name!r}"
        )

    def begin(self, name: str) -> None:
        """Start reading the member ``name``."""
        self.current = name
        self.member = 0

    def feed(self, size: int) -> None:
        """``size`` more bytes of the current member came out; check every limit."""
        self.member += size
        limits = self.limits
        if self.member > limits.maximum_size:
            raise self.size_exceeded(self.current)
        if self.total + self.member > limits.maximum_total:
            raise LimitExceeded(
                f"maximum_total ({limits.maximum_total} bytes) exceeded at member "
                f"{self.current!r}; extraction stopped"
            )
        if not self.stream_counted:
            self.inflate(size)
        self.hold(size)

    def hold(self, size: int) -> None:
        """Charge ``size`` bytes about to be held to the request's ``max_extracted_bytes``;
        raises LimitExceeded (naming that limit) when the request has no room for them."""
        try:
            charge_extracted_bytes(self.request, size)
        except ExtractionLimitExceeded as exc:
            where = f"at member {self.current!r}" if self.current is not None else "in its headers"
            raise LimitExceeded(f"{exc}; extraction stopped {where}") from None

    def reserve(self, size: int) -> None:
        """Charge a transient buffer of ``size`` bytes a parser holds beside the member it
        produces; one is held at a time, so only growth past the largest so far is charged."""
        if size > self.scratch:
            self.hold(size - self.scratch)
            self.scratch = size

    def size_exceeded(self, name: Optional[str], declared: Optional[int] = None) -> LimitExceeded:
        said = f" (its header declares {declared} bytes)" if declared is not None else ""
        return LimitExceeded(
            f"maximum_size ({self.limits.maximum_size} bytes) exceeded by member {name!r}{said}; "
            "extraction stopped"
        )

    def inflate(self, size: int) -> None:
        """``size`` more bytes were decompressed; check the compression ratio."""
        self.inflated += size
        ratio = self.limits.maximum_ratio
        if self.inflated > RATIO_FLOOR and self.inflated > ratio * self.archive_size:
            where = f"at member {self.current!r}" if self.current is not None else "in its headers"
            raise LimitExceeded(
                f"maximum_ratio ({ratio:g}) exceeded {where}: {self.inflated} bytes inflated from "
                f"an archive of {self.archive_size} bytes; extraction stopped"
            )

    def finish(self) -> int:
        """The current member is complete: add it to the total and return its size."""
        size, self.member, self.current = self.member, 0, None
        self.total += size
        return size

    def read_member(self, name: str, chunks: Iterable[bytes]) -> bytes:
        """Read one member from its decompressed ``chunks``, all of it or (on a raise) nothing."""
        self.begin(name)
        member = MemberBuffer()
        for chunk in chunks:
            self.feed(len(chunk))
            member.write(chunk)
        self.finish()
        return member.getvalue()


class MemberBuffer(io.BytesIO):
    """Where a member's chunks gather: one copy of the member at any time.

    A list of chunks and ``b"".join`` held the member twice at the end. A ``BytesIO`` grows its
    one buffer in place (large blocks are remapped, not copied), and ``getvalue`` hands that
    buffer over as the ``bytes`` when nothing else shares it (CPython). Measured: a 256 MiB
    member raised peak RSS by 259 MiB this way, by 514 MiB with ``join``.
    """
