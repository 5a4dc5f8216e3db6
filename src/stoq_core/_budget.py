"""The bytes one request may extract, charged while they are produced.

``max_extracted_bytes`` once counted only what a worker had returned, after its round: 16 zip
bombs inflated concurrently, each in full, before the first was counted (7.5 GB peak for an
85 MB zip under a 1 GiB limit). A worker that produces content (inflating, decoding) charges it
with ``charge_extracted_bytes`` as it goes; every extraction of the request running at once
draws on the same budget, so what they hold together never passes the limit.

What the calls of a round charged is given back once they have all returned, when the engine
charges the payloads it keeps instead: a member charged while inflated is not counted twice.
If a time limit abandoned a call in that round, nothing is given back (its thread may still
hold the bytes). The accounting costs a request nothing until something is charged: no object
per call, no context variable (either would cost the small-payload path several per cent).
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from stoq_core.exceptions import StoqException

__all__ = ["ExtractionLimitExceeded", "charge_extracted_bytes"]

#: Plain ``def`` workers charge from their threads, the engine from the event loop.
LOCK = threading.Lock()


class ExtractionLimitExceeded(StoqException):
    """Producing more content would break the request's ``max_extracted_bytes``."""


def charge_extracted_bytes(request: Any, nbytes: int) -> None:
    """Count ``nbytes`` of content a worker is producing for ``request``, before it holds them.

    Call it as content is inflated or decoded, a chunk at a time (from a thread too), so that
    bombs stop at the request's ``max_extracted_bytes`` however many extractions run at once.
    For a request no scan is running (a plugin's unit test calling its method directly) it
    counts nothing.

    :param request: the ``Request`` the worker's ``scan`` was given.
    :raises ExtractionLimitExceeded: the request has no room for ``nbytes`` more; stop
        extracting and report it (its message names the limit).
    """
    scan = getattr(request, "_extraction", None)
    if scan is not None and nbytes > 0:
        scan.charge_in_flight(nbytes)


def state(request: Any) -> Optional[tuple[int, int]]:
    """``max_extracted_bytes`` and what ``request``'s extractions hold now, or None outside a
    scan (an isolated plugin's process takes them along, to stop where the engine would)."""
    scan = getattr(request, "_extraction", None)
    return None if scan is None else scan.budget_state()


def exceeded(limit: int, held: int, nbytes: int) -> ExtractionLimitExceeded:
    return ExtractionLimitExceeded(
        f"max_extracted_bytes ({limit} bytes) exceeded: the request's extractions hold "
        f"{held} bytes, {nbytes} more do not fit"
    )
