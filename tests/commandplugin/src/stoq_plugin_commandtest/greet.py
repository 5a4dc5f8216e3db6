"""``stoq greet``: a command written as an outside author would, on ``stoq_cli.commands``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from stoq_cli.commands import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    config_section,
    stoq_home,
    write_result,
)

# Proof for the tests that listing commands does not import them.
if os.environ.get("STOQ_TEST_COMMAND_MARKER"):
    Path(os.environ["STOQ_TEST_COMMAND_MARKER"]).touch()

NOT_A_COMMAND = "a string, not a click command"


@click.command()
@click.argument("name")
@click.option("--fail", is_flag=True, help="Exit 1 after greeting.")
@click.option("--sender", help="Who greets [default: [greet] sender in stoq.cfg].")
def greet(name: str, fail: bool, sender: Optional[str]) -> int:
    """Greet NAME as one JSON line."""
    if not name.strip():
        raise CliError("NAME must not be blank")
    sender = sender or config_section("greet").get("sender", "stoq")
    write_result({"hello": name, "from": sender, "home": str(stoq_home())})
    return EXIT_FAILED if fail else EXIT_OK
