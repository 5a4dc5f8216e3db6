"""Fake plugins for the option-declaration tests (``stoq_core.Option``), published as entry points.

Each reports the options it read, so a test sees what the plugin was given after the core's
checks and defaults.
"""

from __future__ import annotations

from typing import Any

from stoq_core import Option, Payload, Request, StoqConfigParser, WorkerResponse, hookimpl
from stoq_core.plugins import WorkerPlugin


class Declared:
    """A plain class declaring one option of each type."""

    options = (
        Option("threshold", int, default=16, help="NUL bytes from which a payload is padded"),
        Option("ratio", float, default=1.5, help="a number"),
        Option("strict", bool, default=False, help="true or false"),
        Option("labels", list, help="labels added to the results"),
        Option("kinds", set, default={"a", "b"}, help="a set"),
        Option("extra", dict, help="a JSON object"),
        Option("mode", str, default="fast", help="text"),
    )

    #: How many of these were constructed (the checks run before each construction).
    built = 0

    def __init__(self, config: StoqConfigParser) -> None:
        type(self).built += 1
        # No fallbacks: the declared defaults are filled in by the core.
        self.seen: dict[str, Any] = {
            "threshold": config.getint("options", "threshold"),
            "ratio": config.getfloat("options", "ratio"),
            "strict": config.getboolean("options", "strict"),
            "labels": config.getlist("options", "labels", fallback=None),
            "kinds": sorted(config.getset("options", "kinds")),
            "extra": config.getjson("options", "extra", fallback=None),
            "mode": config.get("options", "mode"),
        }

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse(self.seen)


class DeclaredV3(WorkerPlugin):
    """A subclass of the v3 base class, declaring its options the same way."""

    options = (Option("level", int, default=1, help="how deep"),)

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"level": self.config.getint("options", "level")})


class NoOptions:
    """Declares that it takes no options of its own."""

    options = ()

    def __init__(self, config: StoqConfigParser) -> None:
        self.config = config

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse({"ok": True})


class Undeclared:
    """Declares nothing: every option reaches it, unchecked (v3's way)."""

    def __init__(self, config: StoqConfigParser) -> None:
        self.given = dict(config.items("options"))

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse(self.given)


class OtherOptions:
    """An ``options`` attribute that is not a declaration (a v3 plugin's own use of the name)."""

    options = ("verbose", "quiet")

    def __init__(self, config: StoqConfigParser) -> None:
        self.given = dict(config.items("options"))

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        return WorkerResponse(self.given)


class MixedDeclarations:
    """Declarations mixed with something else: a mistake, refused at load."""

    options = (Option("fine"), "not an option")

    def __init__(self, config: StoqConfigParser) -> None:
        pass

    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> None:
        return None


#: The fakes above by the plugin name the tests publish them under.
OPTION_FAKES = {
    "declared": "option_fakes:Declared",
    "declared_v3": "option_fakes:DeclaredV3",
    "no_options": "option_fakes:NoOptions",
    "undeclared": "option_fakes:Undeclared",
    "other_options": "option_fakes:OtherOptions",
    "mixed": "option_fakes:MixedDeclarations",
}
