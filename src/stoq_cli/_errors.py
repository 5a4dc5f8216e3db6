"""The one exception the commands raise for a problem the user can fix, and the exit codes."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CliError", "OutputError"]

#: Everything asked for ran and nothing failed.
EXIT_OK = 0
#: The work ran, but something failed: an error in a response, a connector, a provider, pip.
EXIT_FAILED = 1
#: Usage or input error: nothing was scanned (click uses 2 for usage errors too).
EXIT_USAGE = 2
#: Stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A problem the user can fix: stoq prints ``stoq: error: <message>``, exits ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OutputError(CliError):
    """The results could not be written (a full disk, a closed stdout): the work ran, exit 1."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot write results: {reason}", EXIT_FAILED)
