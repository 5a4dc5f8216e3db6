"""The debug log of a scan costs nothing when debug is off: no wrapper, no routing record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from stoq_core import Stoq, _logging


def test_at_info_a_plugins_hooks_are_called_unwrapped(make_stoq: Callable[..., Stoq]) -> None:
    stoq = make_stoq(log_level="INFO")

    worker = stoq.plugins.load("worker")

    assert worker.callers["scan"] == worker.obj.scan  # the async method itself, no timing layer
    assert _logging.debugging is False


def test_at_debug_each_call_is_timed(
    make_stoq: Callable[..., Stoq], caplog: pytest.LogCaptureFixture
) -> None:
    stoq = make_stoq(log_level="DEBUG")
    assert _logging.debugging is True
    caplog.set_level(logging.DEBUG, logger="stoq")
    stoq.plugins.load("worker")
    stoq.always_dispatch = ["worker"]

    response = asyncio.run(stoq.scan(b"payload"))

    assert not response.errors
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        m.startswith("plugin worker: loaded from distribution stoq-test-fakes") for m in messages
    )
    assert any(
        m.startswith("round 1: payload ") and "gets worker (always dispatch)" in m for m in messages
    )
    assert any(m.startswith("plugin worker: scan of payload ") and " took " in m for m in messages)


def test_the_flag_follows_the_level_a_new_stoq_sets(make_stoq: Callable[..., Stoq]) -> None:
    make_stoq(log_level="DEBUG")
    make_stoq(log_level="WARNING")

    assert _logging.debugging is False
