"""A quick local plugin as a user writes one: a ``.stoq`` file beside a module whose plugin is a
plain class with ``@hookimpl`` methods, no v3 base class (issue 15, item 10)."""

from __future__ import annotations

from pathlib import Path

#: A worker that counts NUL bytes and reads its name in ``__init__``.
NUL_COUNTER = """
from stoq_core import WorkerResponse, hookimpl


class NulCounter:
    def __init__(self, config):
        self.label = f"{self.plugin_name} v{config.get('options', 'label_version', fallback='1')}"

    @hookimpl
    async def scan(self, payload, request):
        return WorkerResponse({"nul_bytes": bytes(payload.content).count(0), "by": self.label})
"""

#: A plain class whose only hook is misspelled.
MISSPELLED = """
from stoq_core import hookimpl


class Misspelled:
    def __init__(self, config):
        pass

    @hookimpl
    async def scna(self, payload, request):
        return None
"""


def write_plain_plugin(parent: Path, name: str = "nuls", code: str = NUL_COUNTER) -> Path:
    """``parent/name/``: ``name.stoq`` (version 0.1, an ``[options]`` default) beside ``name.py``."""
    directory = parent / name
    directory.mkdir(parents=True)
    (directory / f"{name}.stoq").write_text(
        f"[Core]\nName = {name}\nModule = {name}\n\n[Documentation]\nVersion = 0.1\n"
        "Description = a quick local plugin\n\n[options]\nlabel_version = 2\n"
    )
    (directory / f"{name}.py").write_text(code)
    return directory
