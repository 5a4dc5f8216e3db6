"""The hash worker: lowercase hex digests of a payload, sha256, md5 and sha1 by default.

Digests go into the payload's shared digest cache (``payload.known_digests()``), the one the core's
de-duplication reads, so a payload's sha256 is computed once whoever asks first.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any, Optional

from stoq_core import (
    Option,
    Payload,
    Request,
    StoqConfigParser,
    StoqPluginException,
    WorkerResponse,
    hookimpl,
    run_blocking,
)
from stoq_core.plugins import WorkerPlugin

__all__ = ["DEFAULT_ALGORITHMS", "PARALLEL_THRESHOLD", "HashPlugin"]

#: The algorithms, in result order, when the ``algorithms`` option is not set (stoQ v3's output).
DEFAULT_ALGORITHMS = ("sha256", "md5", "sha1")

#: Payloads at least this long are hashed in threads, one per algorithm. Below it, handing work
#: to a thread costs more than hashing the bytes, so they are hashed inline.
PARALLEL_THRESHOLD = 1024 * 1024

_Constructor = Callable[[Any], Any]


def _constructor(name: str) -> _Constructor:
    """hashlib's named constructor (``hashlib.sha256``) where there is one: ``hashlib.new`` looks
    the name up on every call, which is measurable at tens of thousands of payloads a second."""
    named = getattr(hashlib, name, None)
    if name in hashlib.algorithms_guaranteed and callable(named):
        return named  # type: ignore[no-any-return]

    def new(data: Any) -> Any:
        return hashlib.new(name, data)

    return new


def _check_algorithm(name: str) -> None:
    """Raise a one-line StoqPluginException unless hashlib can give ``name``'s hex digest."""
    try:
        hashlib.new(name, b"").hexdigest()
    except ValueError:
        available = ", ".join(sorted(hashlib.algorithms_available))
        raise StoqPluginException(
            f"option 'algorithms': unknown hash algorithm {name!r} (available: {available})"
        ) from None
    except TypeError:  # shake_128/shake_256: hexdigest() needs a length
        raise StoqPluginException(
            f"option 'algorithms': {name!r} has no fixed digest length; choose another algorithm"
        ) from None


class HashPlugin(WorkerPlugin):
    """Hashes each payload with the configured hashlib algorithms.

    Option ``algorithms``: hashlib names, in the order the results list them (default
    ``sha256, md5, sha1``). An unknown name stops the plugin from loading, naming it.
    """

    options = (
        Option(
            "algorithms",
            list,
            list(DEFAULT_ALGORITHMS),
            "hashlib algorithms, in the order the results list them",
        ),
    )

    def __init__(self, config: StoqConfigParser, *args: Any, **kwargs: Any) -> None:
        super().__init__(config)
        names = config.getlist("options", "algorithms", fallback=list(DEFAULT_ALGORITHMS))
        # Lowercase so 'SHA256' shares the cache entry the core's 'sha256' fills.
        algorithms = tuple(dict.fromkeys(name.lower() for name in names))
        if not algorithms:
            raise StoqPluginException("option 'algorithms' is empty: name at least one algorithm")
        for name in algorithms:
            _check_algorithm(name)
        self.algorithms: tuple[str, ...] = algorithms
        self._constructors = tuple((name, _constructor(name)) for name in algorithms)

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> Optional[WorkerResponse]:
        """The payload's digests as ``{algorithm: lowercase hex}``, in the configured order."""
        content = payload.content
        known = payload.known_digests()
        if len(content) < PARALLEL_THRESHOLD:
            results = {}
            if not known:  # the usual case: nobody has hashed this payload yet
                for name, new in self._constructors:
                    results[name] = new(content).hexdigest()
                known.update(results)
                return WorkerResponse(results)
            for name, new in self._constructors:
                digest = known.get(name)
                if digest is None:
                    digest = known[name] = new(content).hexdigest()
                results[name] = digest
            return WorkerResponse(results)
        missing = [name for name in self.algorithms if name not in known]
        if missing:
            # hashlib releases the GIL on large buffers, so the algorithms really run in
            # parallel; payload.digest() stores each one in the shared cache.
            await asyncio.gather(*(run_blocking(payload.digest, name) for name in missing))
        return WorkerResponse({name: known[name] for name in self.algorithms})
