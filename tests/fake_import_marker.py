"""Importing this module is observable: the tests check it is not imported unless named."""

from __future__ import annotations

import sys

from stoq_core import hookimpl

sys.modules[__name__].__dict__.setdefault("IMPORTED", True)


class Quiet:
    def __init__(self, config: object) -> None:
        pass

    @hookimpl
    async def scan(self, payload: object, request: object) -> None:
        return None
