"""Commands that plugin distributions add to ``stoq`` through ``stoq.commands`` entry points.

Listing them (``stoq --help``) reads only the entry-point index: no plugin module is imported,
so the help shows each command's name and distribution, not its own help line (that would need
the import, or a copy of the help kept in the index that goes stale with every upgrade).
``stoq NAME --help`` imports that one command and shows its full help.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

from stoq_cli._errors import CliError
from stoq_cli._where import entry_point_reader

if TYPE_CHECKING:
    from stoq_core._index import PluginEntry

__all__ = ["listed", "load"]


def _all_claims() -> dict[str, tuple[PluginEntry, ...]]:
    claims: dict[str, tuple[PluginEntry, ...]] = entry_point_reader().command_entry_points()
    return claims


def listed(reserved: set[str]) -> list[tuple[str, str]]:
    """Each plugin command not shadowed by a name in ``reserved``, with where it comes from."""
    rows = []
    for name, claims in sorted(_all_claims().items()):
        if name in reserved:
            continue  # a built-in command keeps its name
        origins = ", ".join(f"{claim.dist_name} {claim.dist_version}".strip() for claim in claims)
        conflict = " (conflict: uninstall one)" if len(claims) > 1 else ""
        rows.append((name, f"from {origins}{conflict}"))
    return rows


def load(name: str) -> Optional[click.Command]:
    """The click command a distribution publishes as ``name``, imported now; None if none does.

    :raises CliError: two distributions publish ``name``, or its entry point fails to import
        or is not a click command (exit 2, one line; the rest of the command line still works).
    """
    claims = _all_claims().get(name)
    if not claims:
        return None
    if len(claims) > 1:
        dists = " and ".join(f"{claim.dist_name} {claim.dist_version}" for claim in claims)
        raise CliError(
            f"command {name!r} is published by {dists}: uninstall all but one "
            "(pip uninstall DISTRIBUTION)"
        )
    [claim] = claims
    where = f"command {name!r} of {claim.dist_name} {claim.dist_version}"
    try:
        command = claim.load()
    except (Exception, SystemExit) as exc:  # a plugin's import may even exit; it is one line
        raise CliError(f"{where} cannot be imported: {type(exc).__name__}: {exc}") from exc
    if not isinstance(command, click.Command):
        raise CliError(
            f"{where} is not a click command: {claim.value!r} is a {type(command).__name__}"
        )
    return command
