"""What a plugin's own ``stoq`` command needs from the command line around it.

A distribution adds a command by publishing a click command in the ``stoq.commands``
entry-point group; ``stoq`` imports it only when that command runs (see docs/writing-plugins.md,
"Adding a command")::

    import click
    from stoq_cli.commands import EXIT_OK, CliError, config_section, write_result

    @click.command()
    @click.argument("name")
    def greet(name: str) -> int:
        \"\"\"Say hello (the first line is the command's help).\"\"\"
        if not name:
            raise CliError("NAME must not be empty")  # 'stoq: error: ...', exit 2
        write_result({"hello": name, "from": config_section("greet").get("sender", "stoq")})
        return EXIT_OK

The command returns its exit code (``None`` is 0). A ``CliError`` becomes one
``stoq: error: <message>`` line on stderr and its ``exit_code``; anything else it raises is one
``stoq: error: unexpected ...`` line and exit 1. stdout is for results only (``write_result``);
progress and notes go to stderr (``note``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stoq_cli._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError
from stoq_cli._home import StoqHome
from stoq_core._printable import printable

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "config_file",
    "config_section",
    "input_files",
    "note",
    "stoq_home",
    "write_result",
]


def stoq_home() -> Path:
    """``$STOQ_HOME`` (``~/.stoq`` when unset), as an absolute path; it may not exist yet."""
    return StoqHome.from_environment().path


def config_file() -> Path:
    """``$STOQ_HOME/stoq.cfg``, the file ``config_section`` reads; it may not exist."""
    return StoqHome.from_environment().config_file


def config_section(name: str) -> dict[str, str]:
    """The ``[name]`` section of ``$STOQ_HOME/stoq.cfg``, read as the engine reads it.

    :returns: the section's options (``%%`` read as ``%``, as in v3; a ``$env:VAR`` value read
        from the environment); ``{}`` if the file or the section is missing.
    :raises CliError: the file cannot be read or is not a valid stoq.cfg, or a ``$env:``
        variable is not set (exit 2).
    """
    from stoq_core import StoqException
    from stoq_core.config import environment_value, read_stoq_cfg

    path = config_file()
    try:
        section = read_stoq_cfg(str(path)).get(name, {})
        return {
            key: environment_value(value, f"{path}: [{name}] {key}")
            for key, value in section.items()
        }
    except StoqException as exc:
        raise CliError(str(exc)) from None


def input_files(paths: Sequence[str], allow_empty: bool = False) -> tuple[list[Path], int]:
    """The files ``paths`` name, chosen by the rule ``stoq scan`` follows.

    A named file is taken; a directory is walked (sorted; symlinked directories are not
    followed, symlinked files are taken). Under a directory, an empty file (unless
    ``allow_empty``) or a FIFO is skipped with a note on stderr, and an entry that cannot be
    looked at is reported there and skipped.

    :returns: the files, and how many entries under a directory could not be looked at (a
        command exits ``EXIT_FAILED`` for them, as ``stoq scan`` does).
    :raises CliError: a named path is ``-``, missing, unreadable, neither a file nor a
        directory, or an empty file without ``allow_empty`` (exit 2).
    """
    from stoq_cli._inputs import collect, skip_reason

    if "-" in paths:
        raise CliError("- (stdin) is not a file: name files or directories")
    found = collect(paths, allow_empty, note)
    files = []
    for item in found:
        assert item.path is not None  # stdin was refused above
        if item.walked:
            try:
                reason = skip_reason(item.path, allow_empty)
            except OSError as exc:
                found.problems += 1
                note(f"skipping {item.path}: {exc.strerror or exc}")
                continue
            if reason is not None:
                note(f"skipping {item.path}: {reason}")
                continue
        files.append(Path(item.path))
    return files, found.problems


def write_result(data: Any) -> None:
    """Print ``data`` as one JSON line on stdout, at once (as ``stoq run`` prints responses)."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """Print ``stoq: <message>`` on stderr: counts and progress, never results. It is one line:
    control characters, line breaks among them, are written as escapes (``\\x1b``), since
    messages name files and payloads that others named."""
    print(f"stoq: {printable(message)}", file=sys.stderr, flush=True)
