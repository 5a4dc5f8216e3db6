"""The distribution itself: its entry point, its shipped rules, and what it may import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import stoq_plugin_yara
from stoq_plugin_yara.plugin import DEFAULT_DISPATCH_RULES, DEFAULT_WORKER_RULES

from stoq_core import Stoq

PACKAGE = Path(stoq_plugin_yara.__file__).parent


def test_the_plugin_is_an_entry_point_offering_worker_and_dispatcher_hooks(
    make_stoq: Callable[..., Stoq],
) -> None:
    info = make_stoq().list_plugins()["yara"]

    assert (info.kind, info.origin, info.version, info.error) == (
        "entry point",
        "stoq-plugin-yara",
        "1.0.0",
        None,
    )
    assert sorted(info.hooks) == ["get_dispatches", "scan"]


def test_the_default_rules_are_files_inside_the_package() -> None:
    for rules in (DEFAULT_WORKER_RULES, DEFAULT_DISPATCH_RULES):
        assert Path(rules).is_file()
        assert Path(rules).parent.parent == PACKAGE
