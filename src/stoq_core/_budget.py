"""The bytes one request may extract, charged while they are produced.

``max_extracted_bytes`` once counted only what a worker had returned, after its round: 16 zip
bombs inflated concurrently, each in full, before the first was counted (3.6 GB peak for a
42 MB zip under a 1 GiB limit). A worker that produces content (inflating, decoding) charges it
here as it goes, with ``charge_extracted_bytes``; every extraction of the request running at
once draws on the same budget, so what they hold together never passes the limit.

Each worker call has a ledger (a context variable the engine sets in the call's own context, so
a plain ``def`` hook's thread sees it too). When the call returns, what it charged is refunded
and the payloads it extracted are charged as the engine keeps them: a member charged while it
was inflated is not counted twice. A call a timeout abandoned keeps its charge: its thread may
still hold the bytes.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Optional

from stoq_core.exceptions import StoqException

__all__ = ["ExtractionBudget", "ExtractionLimitExceeded", "charge_extracted_bytes"]


class ExtractionLimitExceeded(StoqException):
    """Producing more content would break the request's ``max_extracted_bytes``."""


class ExtractionBudget:
    """The request's ``max_extracted_bytes``, shared by its kept payloads and running extractions."""

    __slots__ = ("_lock", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()  # plain ``def`` workers charge from their threads

    def charge(self, nbytes: int, ledger: Optional[Ledger] = None) -> None:
        """Take ``nbytes`` (for ``ledger``'s call); raises ``ExtractionLimitExceeded``, taking
        nothing, if they do not fit."""
        with self._lock:
            if self.used + nbytes > self.limit:
                raise ExtractionLimitExceeded(
                    f"max_extracted_bytes ({self.limit} bytes) exceeded: the request's "
                    f"extractions hold {self.used} bytes, {nbytes} more do not fit"
                )
            self.used += nbytes
            if ledger is not None:
                ledger.charged += nbytes

    def refund(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class Ledger:
    """What one worker call has charged to its request's budget."""

    __slots__ = ("abandoned", "budget", "charged")

    def __init__(self, budget: ExtractionBudget) -> None:
        self.budget = budget
        self.charged = 0
        self.abandoned = False  #: a time limit gave up on the call; its thread may still run

    def settle(self) -> None:
        """The call returned: give back what it charged (its payloads are charged as kept)."""
        if self.charged and not self.abandoned:
            self.budget.refund(self.charged)
            self.charged = 0


CURRENT_LEDGER: contextvars.ContextVar[Optional[Ledger]] = contextvars.ContextVar(
    "stoq_extraction_ledger", default=None
)


def charge_extracted_bytes(nbytes: int) -> None:
    """Count ``nbytes`` of content the running worker is producing, before it holds them.

    Call it as content is inflated or decoded, a chunk at a time, so that bombs stop at the
    request's ``max_extracted_bytes`` however many extractions run at once. Outside a scan
    (a plugin's unit test calling its method directly) it counts nothing.

    :raises ExtractionLimitExceeded: the request has no room for ``nbytes`` more; stop
        extracting and report it (its message names the limit).
    """
    ledger = CURRENT_LEDGER.get()
    if ledger is not None and nbytes > 0:
        ledger.budget.charge(nbytes, ledger)
