"""What a plugin returns, however odd, costs that plugin's part, never the request or its JSON.

The plugins (``tests/hostile_output_fakes.py``) return objects that raise when read, lie about
their contents, or hold more than the limits allow; each is published as an entry point.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from core_helpers import errors_of, stoq_maker

from stoq_core import Payload, Request, Stoq, StoqResponse

FAKES = {
    "odd_worker": "hostile_output_fakes:Worker",
    "odd_dispatcher": "hostile_output_fakes:Dispatcher",
    "odd_decorator": "hostile_output_fakes:Decorator",
    "isolated_worker": "hostile_output_fakes:IsolatedWorker",
}


@pytest.fixture
def make(install_plugins: Callable[..., Path], tmp_path: Path) -> Iterator[Callable[..., Stoq]]:
    """``make(plugin_opts, **stoq_kwargs)``: a ``Stoq`` with the odd plugins installed."""
    install_plugins(FAKES, dist="stoq-test-hostile-outputs")
    with stoq_maker(tmp_path) as build:
        yield build


def scan(stoq: Stoq, content: bytes = b"root", start: tuple[str, ...] = ()) -> StoqResponse:
    return asyncio.run(stoq.scan_request(Request([Payload(content)]), list(start)))


def strict_json(response: StoqResponse) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(str(response), parse_constant=refuse)


def worker(make: Callable[..., Stoq], mode: str, **kwargs: Any) -> StoqResponse:
    """Scan ``b"root"`` with ``odd_worker`` in ``mode``."""
    options = {key: str(value) for key, value in kwargs.pop("options", {}).items()}
    stoq = make({"odd_worker": {"mode": mode, **options}}, **kwargs)
    return scan(stoq, start=("odd_worker",))


# -- what a response carries that raises when read ----------------------------------------------


def test_errors_that_raise_while_read_are_the_plugins_error(make: Callable[..., Stoq]) -> None:
    response = worker(make, "errors_raise")
    [error] = errors_of(response, "odd_worker")
    assert "errors that could not be read: RuntimeError: errors generator broke" in error
    assert response.results[0].workers["odd_worker"] == {"kept": True}


def test_errors_that_are_not_a_list_are_the_plugins_error(make: Callable[..., Stoq]) -> None:
    response = worker(make, "errors_not_iterable")
    [error] = errors_of(response, "odd_worker")
    assert "errors that could not be read: TypeError" in error


def test_plugin_names_that_raise_while_read_are_the_dispatchers_error(
    make: Callable[..., Stoq],
) -> None:
    stoq = make({"odd_dispatcher": {"mode": "names_raise"}}, dispatchers=["odd_dispatcher"])
    response = scan(stoq)
    [error] = errors_of(response, "odd_dispatcher")
    assert "plugin_names that could not be read: RuntimeError" in error


def test_more_than_a_thousand_plugin_names_are_cut_with_an_error(make: Callable[..., Stoq]) -> None:
    stoq = make({"odd_dispatcher": {"mode": "many_names"}}, dispatchers=["odd_dispatcher"])
    response = scan(stoq)
    [error] = errors_of(response, "odd_dispatcher")
    assert "more than 1000 names" in error
    assert response.results[0].plugins_run["workers"] == ["odd_worker"]


def test_an_error_whose_plugin_name_is_a_list_is_kept_as_text(make: Callable[..., Stoq]) -> None:
    stoq = make({"odd_dispatcher": {"mode": "list_plugin_name"}}, dispatchers=["odd_dispatcher"])
    response = scan(stoq)
    [error] = response.errors
    assert (error.error, error.plugin_name) == ("odd", "['a', 'list']")


def test_an_error_whose_fields_cannot_be_printed_still_serializes(
    make: Callable[..., Stoq],
) -> None:
    response = worker(make, "unprintable_error_fields")
    [error] = strict_json(response)["errors"]
    assert error["error"] == "odd"
    assert error["plugin_name"] == "<Unprintable whose str() failed>"
    assert error["payload_id"] == "['not', 'an', 'id']"


@pytest.mark.parametrize(
    "mode", ["items_raise", "set_raises", "bytes_raise", "enum_raises", "key_repr_raises"]
)
def test_results_that_raise_while_checked_are_dropped(make: Callable[..., Stoq], mode: str) -> None:
    response = worker(make, mode)
    [error] = errors_of(response, "odd_worker")
    assert error.endswith("results dropped")
    assert "odd_worker" not in response.results[0].workers
    strict_json(response)


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["long_keys", "long_keys_nested", "huge_int", "long_ints"])
def test_keys_and_long_integers_count_against_max_result_size(
    make: Callable[..., Stoq], mode: str
) -> None:
    response = worker(make, mode, max_result_size=10_000)
    [error] = errors_of(response, "odd_worker")
    assert error.startswith("results are too large")
    assert len(str(response)) < 10_000


def test_one_extracted_payload_returned_many_times_is_recorded_once(
    make: Callable[..., Stoq],
) -> None:
    response = worker(make, "same_extracted", options={"count": 10_000})
    member = response.results[1]
    assert member.extracted_by == ["odd_worker"]
    assert member.extracted_from == [response.results[0].payload_id]
    assert len(str(response)) < 10_000


def test_dispatch_to_of_an_unscanned_extracted_payload_is_held_to_the_name_limit(
    make: Callable[..., Stoq],
) -> None:
    response = worker(make, "unscanned_dispatch_to", options={"count": 100_000})
    child = response.results[1]
    assert len(child.payload_meta.dispatch_to) == 1000
    [error] = errors_of(response, "odd_worker")
    assert "more than 1000 names" in error
    assert len(str(response)) < 100_000


def test_a_dispatch_to_name_too_long_for_a_plugin_is_refused(make: Callable[..., Stoq]) -> None:
    response = worker(make, "long_dispatch_to", options={"count": 10_000_000})
    [error] = errors_of(response, "odd_worker")
    assert "not plugin names" in error
    assert len(str(response)) < 10_000


# -- the JSON -----------------------------------------------------------------------------------


def test_payload_metadata_whose_str_raises_still_serializes(make: Callable[..., Stoq]) -> None:
    response = worker(make, "unprintable_meta")
    meta = strict_json(response)["results"][1]["payload_meta"]
    assert meta["should_archive"] == "<unreadable Unprintable>"


def test_results_that_turn_unprintable_after_the_check_still_serialize(
    make: Callable[..., Stoq],
) -> None:
    response = worker(make, "turns_hostile")
    workers = strict_json(response)["results"][0]["workers"]
    assert workers["odd_worker"] == {"ok": "<unreadable Unprintable>"}


# -- decorators ---------------------------------------------------------------------------------


def test_a_decorator_replacing_the_responses_fields_is_undone_with_an_error(
    make: Callable[..., Stoq],
) -> None:
    stoq = make({"odd_decorator": {"mode": "replace_fields"}}, decorators=["odd_decorator"])
    response = scan(stoq)
    [error] = errors_of(response, "odd_decorator")
    assert "errors and decorators were replaced" in error
    assert response.decorators == {"odd_decorator": {"decorated": True}}
    strict_json(response)


def test_an_unprintable_error_a_decorator_adds_still_serializes(make: Callable[..., Stoq]) -> None:
    stoq = make({"odd_decorator": {"mode": "append_unprintable"}}, decorators=["odd_decorator"])
    assert strict_json(scan(stoq))["errors"] == ["<unreadable Unprintable>"]


# -- isolated plugins ---------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="isolation is tested on Linux")
def test_an_isolated_answer_that_exits_when_read_fails_its_call_only(
    make: Callable[..., Stoq],
) -> None:
    stoq = make({"isolated_worker": {"isolate": "true"}}, timeout=10)
    # One request: its calls share one event loop, and so the plugin's one process.
    request = Request([Payload(b"exit on arrival"), Payload(b"next")])
    response = asyncio.run(stoq.scan_request(request, ["isolated_worker"]))
    [error] = errors_of(response, "isolated_worker")
    assert "SystemExit" in error
    # The process answered: it serves the next call rather than being waited for forever.
    assert response.results[1].workers["isolated_worker"] == {"fine": True}
