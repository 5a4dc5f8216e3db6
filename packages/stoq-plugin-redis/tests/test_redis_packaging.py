"""The distribution itself: its entry point, its options and what it may import."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import stoq_plugin_redis

from stoq_core import Stoq, StoqPluginException

PACKAGE = Path(stoq_plugin_redis.__file__).parent


def test_the_plugin_is_an_entry_point_offering_four_hooks(stoq_with: Callable[..., Stoq]) -> None:
    info = stoq_with().list_plugins()["redis"]

    assert (info.kind, info.origin, info.version, info.error) == (
        "entry point",
        "stoq-plugin-redis",
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


def test_the_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"max_inflight": "0"},
            "option max_inflight must be a whole number of at least 1, not '0'",
        ),
        ({"claim_idle": "soon"}, "option 'claim_idle' must be a number (float), not 'soon'"),
        (
            {"delete_acked": "maybe"},
            "option 'delete_acked' must be true or false (bool), not 'maybe'",
        ),
        ({"strem": "x"}, "plugin 'redis' has no option 'strem'"),
        ({"url": "http://localhost"}, "must start with redis://, rediss:// or unix://"),
    ],
)
def test_a_bad_option_is_refused_with_a_message_naming_it(
    stoq_with: Callable[..., Stoq], options: dict[str, str], message: str
) -> None:
    with pytest.raises(StoqPluginException) as raised:
        stoq_with("redis", options)

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_password_in_the_url_is_not_shown_in_errors(stoq_with: Callable[..., Stoq]) -> None:
    with pytest.raises(StoqPluginException) as raised:
        stoq_with("redis", {"url": "http://user:hunter2@localhost"})

    assert "hunter2" not in str(raised.value)
