"""The hard limits on one archive's extraction, counted as the bytes come out of the decompressor.

Nothing here trusts a size an archive's header claims: every check is made on bytes actually
inflated, chunk by chunk, so extraction stops within one chunk of a limit and a bomb never
inflates past it in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

__all__ = ["RATIO_FLOOR", "Budget", "LimitExceeded", "Limits"]

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
    """

    def __init__(self, limits: Limits, archive_size: int, *, stream_counted: bool = False) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.stream_counted = stream_counted
        self.entries = 0  #: archive entries met (files, directories, links)
        self.total = 0  #: bytes of the members extracted so far
        self.inflated = 0  #: every byte decompressed, the ratio's numerator
        self.member = 0  #: bytes of the member being read
        self.current: Optional[str] = None  #: the member being read

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
        parts = []
        for chunk in chunks:
            self.feed(len(chunk))
            parts.append(chunk)
        self.finish()
        return b"".join(parts)
