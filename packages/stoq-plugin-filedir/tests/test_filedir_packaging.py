"""The distribution itself: its entry point and what it may import."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import stoq_plugin_filedir

from stoq_core import Stoq

PACKAGE = Path(stoq_plugin_filedir.__file__).parent


def test_the_plugin_is_an_entry_point_offering_four_roles(make_stoq: Callable[..., Stoq]) -> None:
    info = make_stoq().list_plugins()["filedir"]

    assert (info.kind, info.origin, info.version, info.error) == (
        "entry point",
        "stoq-plugin-filedir",
        "1.0.0",
        None,
    )
    assert sorted(info.hooks) == ["archive", "get", "ingest", "save"]


def test_the_package_imports_no_private_core_module() -> None:
    private = re.compile(r"\bstoq_core\._\w+|from stoq_core import _")
    offenders = [
        str(source) for source in PACKAGE.rglob("*.py") if private.search(source.read_text())
    ]
    assert offenders == []
