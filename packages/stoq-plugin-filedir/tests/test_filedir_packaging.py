"""The distribution itself: its entry point."""

from __future__ import annotations

from collections.abc import Callable

from stoq_core import Stoq


def test_the_plugin_is_an_entry_point_offering_four_roles(make_stoq: Callable[..., Stoq]) -> None:
    info = make_stoq().list_plugins()["filedir"]

    assert (info.kind, info.origin, info.version, info.error) == (
        "entry point",
        "stoq-plugin-filedir",
        "1.0.0",
        None,
    )
    assert sorted(info.hooks) == ["archive", "get", "ingest", "save"]
