"""Entry point of the ``stoq`` console script."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("stoq: the command line is not built yet")
