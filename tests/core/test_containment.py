"""Whatever a plugin raises or returns costs that plugin's part, never the request (issue 12).

Every hostile plugin here comes from ``tests/hostile``, a real distribution built and installed
by the ``hostile_site`` fixture, so each takes the entry-point path of a third-party plugin.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from stoq_core import (
    ExtractedPayload,
    Payload,
    PayloadMeta,
    Request,
    Stoq,
    StoqException,
    StoqPluginException,
    StoqResponse,
    WorkerResponse,
    hookimpl,
)
from stoq_core.helpers import dumps

ESCAPING = ["system_exit", "exit", "keyboard_interrupt", "cancelled", "generator_exit"]


def make(tmp_path: Path, hostile: dict[str, Any], **kwargs: Any) -> Stoq:
    """A Stoq whose ``hostile`` plugins are configured by ``{name: options}``."""
    kwargs.setdefault("base_dir", str(tmp_path))
    kwargs.setdefault("log_dir", None)
    kwargs.setdefault("plugin_dir_list", [])
    return Stoq(plugin_opts={name: dict(opts) for name, opts in hostile.items()}, **kwargs)


def run_scan(stoq: Stoq, content: bytes = b"payload", start: tuple[str, ...] = ()) -> StoqResponse:
    return asyncio.run(stoq.scan_request(Request([Payload(content)]), list(start)))


def strict_json(response: StoqResponse) -> Any:
    """The response's JSON, refusing what RFC 8259 refuses (NaN, Infinity)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(str(response), parse_constant=refuse)


def errors_of(response: StoqResponse, plugin: str) -> list[str]:
    return [e.error for e in response.errors if e.plugin_name == plugin]


# -- class 3: exceptions that once escaped ------------------------------------------------------


@pytest.mark.parametrize("mode", ESCAPING)
@pytest.mark.parametrize("name", ["hostile", "hostile_sync"])
@pytest.mark.parametrize("hook", ["scan", "get_dispatches", "archive", "decorate", "save"])
def test_anything_a_hook_raises_is_that_plugins_error(hostile, tmp_path, name, hook, mode):
    # The misbehaving plugin plays its one hook; a second, well-behaved one works beside it.
    roles = {
        "scan": "always_dispatch",
        "get_dispatches": "dispatchers",
        "archive": "dest_archivers",
        "decorate": "decorators",
        "save": "connectors",
    }
    peer = "hostile2" if name == "hostile" else "hostile_sync2"
    roles_given: dict[str, list[str]] = {roles[hook]: [name]}
    roles_given["always_dispatch"] = [peer] + ([name] if hook == "scan" else [])
    stoq = make(tmp_path, {name: {"mode": mode, "hooks": hook}, peer: {}}, **roles_given)
    response = run_scan(stoq)
    assert response.results[0].workers[peer] == {"hostile": peer}
    (error,) = errors_of(response, name)
    assert error.startswith(f"{hook} failed: ")
    strict_json(response)


@pytest.mark.parametrize("init", ["system_exit", "keyboard_interrupt"])
def test_a_plugin_exiting_in_its_init_fails_to_load_and_nothing_more(hostile, tmp_path, init):
    with pytest.raises(StoqPluginException, match=r"hostile.*failed to start"):
        make(tmp_path, {"hostile": {"init": init}}, always_dispatch=["hostile"])
    # Named only as a worker of a scan, it is that scan's error.
    stoq = make(tmp_path, {"hostile": {"init": init}, "hostile2": {}}, always_dispatch=["hostile2"])
    response = run_scan(stoq, start=("hostile",))
    assert "failed to start" in errors_of(response, "hostile")[0]
    assert response.results[0].workers["hostile2"] == {"hostile": "hostile2"}


@pytest.mark.parametrize("name", ["hostile_import_exit", "hostile_import_interrupt"])
def test_a_module_exiting_on_import_is_listed_as_broken(hostile, tmp_path, name):
    stoq = make(tmp_path, {})
    info = stoq.list_plugins()
    assert "failed to import" in (info[name].error or "")
    assert info["hostile"].error is None
    with pytest.raises(StoqPluginException, match="failed to import"):
        stoq.load_plugin(name)


def test_a_provider_raising_cancelled_error_ends_the_run(hostile, tmp_path):
    stoq = make(
        tmp_path,
        {"hostile": {"mode": "cancelled", "hooks": "ingest"}, "hostile2": {"payloads": 3}},
        providers=["hostile", "hostile2"],
        always_dispatch=["hostile_sync"],
    )

    async def run() -> Any:
        return await asyncio.wait_for(stoq.run(), 60)

    stats = asyncio.run(run())
    assert stats.scanned == 3
    assert stats.failed == 1


def test_a_worker_raising_cancelled_error_in_run_is_an_error_and_the_run_ends(hostile, tmp_path):
    seen: list[StoqResponse] = []
    stoq = make(
        tmp_path,
        {"hostile": {"payloads": 2}, "hostile2": {"mode": "cancelled", "hooks": "scan"}},
        providers=["hostile"],
        always_dispatch=["hostile2"],
    )
    stats = asyncio.run(asyncio.wait_for(stoq.run(on_response=seen.append), 60))
    assert stats.scanned == 2
    assert all("CancelledError" in errors_of(r, "hostile2")[0] for r in seen)


def test_a_real_cancellation_still_stops_the_scan(hostile, tmp_path):
    stoq = make(tmp_path, {"hostile": {"mode": "sleep", "seconds": 60}}, timeout=0)

    async def cancel_it() -> None:
        task = asyncio.ensure_future(stoq.scan(b"x", add_start_dispatch=["hostile"]))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(cancel_it(), 30))


def test_a_call_that_swallows_its_cancellation_is_still_stopped_at_its_timeout(hostile, tmp_path):
    stoq = make(
        tmp_path,
        {"hostile": {"mode": "swallow_cancel", "seconds": 120, "timeout": 0.5}, "hostile2": {}},
        always_dispatch=["hostile2"],
    )
    began = time.monotonic()
    response = run_scan(stoq, start=("hostile",))
    # It would run its 120 s; the grace after the cancellation is about a second.
    assert time.monotonic() - began < 60
    assert errors_of(response, "hostile") == ["scan timed out after 0.5 s"]
    assert response.results[0].workers["hostile2"] == {"hostile": "hostile2"}


def test_a_call_that_swallows_its_cancellation_still_stops_at_the_deadline(hostile, tmp_path):
    stoq = make(
        tmp_path, {"hostile": {"mode": "swallow_cancel", "seconds": 120}}, deadline=0.5, timeout=0
    )
    began = time.monotonic()
    response = run_scan(stoq, start=("hostile",))
    assert time.monotonic() - began < 60
    assert "request deadline" in errors_of(response, "hostile")[0]


def test_a_call_may_tidy_up_after_its_cancellation_within_the_grace(tmp_path):
    tidied: list[str] = []

    class Tidy:
        @hookimpl
        async def scan(self, payload: Payload, request: Request) -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # closing a connection, say
                tidied.append("done")
                raise

    stoq = Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[], timeout=0.3)
    stoq.plugins.register("tidy", Tidy())
    response = run_scan(stoq, start=("tidy",))
    assert tidied == ["done"]
    assert errors_of(response, "tidy") == ["scan timed out after 0.3 s"]


# -- class 4: invalid objects ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("extracted_int", "extracted a int, expected ExtractedPayload"),
        ("content_int", "content is a int, expected bytes"),
        ("meta_dict", "payload_meta is a dict, expected PayloadMeta"),
        ("dispatch_none", "dispatch_to holds 1 item(s) that are not plugin names"),
        ("wrong_type", "returned dict, expected WorkerResponse or None"),
    ],
)
def test_a_malformed_worker_response_is_that_workers_error(hostile, tmp_path, mode, expected):
    stoq = make(tmp_path, {"hostile": {"mode": mode}, "hostile2": {}}, always_dispatch=["hostile2"])
    response = run_scan(stoq, start=("hostile",))
    (error,) = errors_of(response, "hostile")
    assert expected in error
    assert response.results[0].workers["hostile2"] == {"hostile": "hostile2"}
    strict_json(response)


def test_dispatcher_plugin_names_that_are_not_names_are_its_error(hostile, tmp_path):
    stoq = make(
        tmp_path,
        {"hostile": {"mode": "plugin_names_int", "hooks": "get_dispatches"}, "hostile2": {}},
        dispatchers=["hostile"],
        always_dispatch=["hostile2"],
    )
    response = run_scan(stoq)
    assert (
        "plugin_names holds 1 item(s) that are not plugin names"
        in errors_of(response, "hostile")[0]
    )
    assert response.results[0].workers["hostile2"] == {"hostile": "hostile2"}


def test_an_endless_extracted_iterator_is_read_up_to_max_payloads(hostile, tmp_path):
    stoq = make(tmp_path, {"hostile": {"mode": "endless"}}, max_payloads=50)
    response = run_scan(stoq, start=("hostile",))
    assert len(response.results) == 50
    assert any("extracted more than max_payloads (50)" in e for e in errors_of(response, "hostile"))


def test_extra_data_counts_against_the_result_size_limit(hostile, tmp_path):
    stoq = make(
        tmp_path, {"hostile": {"mode": "huge_extra_data", "size": 10_000}}, max_result_size=1000
    )
    response = run_scan(stoq, start=("hostile",))
    child = response.results[1]
    assert child.payload_meta.extra_data == {}
    assert "extra_data dropped" in errors_of(response, "hostile")[0]


# -- class 5: strict JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nan", "bigint"])
def test_results_json_cannot_hold_are_written_as_strict_json(hostile, tmp_path, mode):
    stoq = make(
        tmp_path,
        {"hostile": {"mode": mode, "hooks": "scan,archive,decorate"}},
        dest_archivers=["hostile"],
        decorators=["hostile"],
    )
    response = run_scan(stoq, start=("hostile",))
    data = strict_json(response)
    worker = data["results"][0]["workers"]["hostile"]
    archived = data["results"][0]["archivers"]["hostile"]
    decorated = data["decorators"]["hostile"]
    for part in (worker, archived, decorated):
        if mode == "nan":
            assert part == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "ok": 1}
        else:
            assert part["big"] == hex(10**5000)


def test_nan_in_request_and_payload_metadata_is_strict_json(tmp_path):
    stoq = Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])
    from stoq_core import RequestMeta

    meta = PayloadMeta(extra_data={"score": math.nan, "n": 10**5000})
    request = Request([Payload(b"x", meta)], RequestMeta(extra_data={"ratio": math.inf}))
    response = asyncio.run(stoq.scan_request(request))
    data = strict_json(response)
    assert data["results"][0]["payload_meta"]["extra_data"]["score"] == "NaN"
    assert data["request_meta"]["extra_data"]["ratio"] == "Infinity"
    # dumps, which the connectors use, is strict too.
    json.loads(dumps(response.to_dict(), compactly=True), parse_constant=lambda c: 1 / 0)


# -- class 7: settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_recursion", "-5"),
        ("max_result_size", "-1"),
        ("timeout", "nan"),
        ("timeout", "-5"),
        ("deadline", "nan"),
        ("deadline", "inf"),
        ("max_payloads", "0"),
        ("max_extracted_bytes", "lots"),
        ("provider_consumers", "0"),
        ("log_level", "bogus"),
        ("log_syntax", "xml"),
    ],
)
def test_a_bad_core_setting_is_refused_with_its_name(tmp_path, setting, value):
    (tmp_path / "stoq.cfg").write_text(f"[core]\n{setting} = {value}\n")
    with pytest.raises(StoqException, match=setting):
        Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])


@pytest.mark.parametrize(
    ("argument", "value"),
    [("max_recursion", -5), ("timeout", math.nan), ("deadline", -1.0), ("max_errors", 0)],
)
def test_a_bad_core_argument_is_refused_with_its_name(tmp_path, argument, value):
    with pytest.raises(StoqException, match=argument):
        Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[], **{argument: value})


@pytest.mark.parametrize("value", ["-5", "nan", "soon"])
def test_a_bad_plugin_timeout_is_refused(hostile, tmp_path, value):
    with pytest.raises(StoqPluginException, match="option timeout must be"):
        make(tmp_path, {"hostile": {"timeout": value}}, always_dispatch=["hostile"])


def test_zero_still_means_no_limit_and_no_recursion(tmp_path):
    (tmp_path / "stoq.cfg").write_text("[core]\ntimeout = 0\ndeadline = 0\nmax_recursion = 0\n")
    stoq = Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])
    assert (stoq.timeout, stoq.deadline, stoq.max_recursion) == (0, 0, 0)


# -- class 11: bounded bookkeeping -------------------------------------------------------------


def test_a_million_errors_from_one_plugin_are_capped(hostile, tmp_path):
    stoq = make(tmp_path, {"hostile": {"mode": "many_errors", "count": 1_000_000}}, max_errors=100)
    response = run_scan(stoq, start=("hostile",))
    assert len(response.errors) == 100
    assert "999901 errors past max_errors (100)" in response.errors[-1].error
    assert len(str(response)) < 100_000


def test_errors_from_many_plugins_are_capped_per_response(tmp_path):
    class Noisy:
        @hookimpl
        async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
            return WorkerResponse(
                extracted=[ExtractedPayload(f"{payload.content!r}{i}".encode()) for i in range(5)]
                if len(payload.content) < 20
                else [],
                errors=["noise"] * 5,
            )

    stoq = Stoq(
        base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[], max_errors=20, max_recursion=3
    )
    stoq.plugins.register("noisy", Noisy())
    stoq.always_dispatch = ["noisy"]
    response = run_scan(stoq, b"r")
    assert len(response.errors) == 21
    assert response.errors[-1].error.endswith("dropped: max_errors (20) reached")


def test_errors_are_capped_while_the_request_runs_not_only_at_its_end(tmp_path):
    # A worker returning max_errors errors on each of thousands of payloads once held millions
    # of them until the request ended. Here each of 50 children adds 10; their children, a
    # round later, see what the request holds by then.
    held = []

    class Noisy:
        @hookimpl
        async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
            held.append(len(request.errors))
            content = bytes(payload.content)
            if content == b"r":
                extracted = [ExtractedPayload(b"child %d" % i) for i in range(50)]
            elif content.startswith(b"child"):
                extracted = [ExtractedPayload(b"grand" + content)]
            else:
                extracted = []
            return WorkerResponse(extracted=extracted, errors=["noise"] * 10)

    stoq = Stoq(
        base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[], max_errors=10, max_recursion=3
    )
    stoq.plugins.register("noisy", Noisy())
    stoq.always_dispatch = ["noisy"]
    response = run_scan(stoq, b"r")

    assert len(held) == 101 and max(held) <= 2 * 10
    assert len(response.errors) == 11
    assert response.errors[-1].error == "1000 more error(s) dropped: max_errors (10) reached"


def test_a_huge_exception_message_is_cut_in_the_response_and_the_log(hostile, tmp_path, caplog):
    stoq = make(tmp_path, {"hostile": {"mode": "huge_error", "size": 50_000_000}})
    response = run_scan(stoq, start=("hostile",))
    (error,) = errors_of(response, "hostile")
    assert error.startswith("scan failed: RuntimeError: EEEE")
    assert len(error) <= 4096
    assert "characters cut" in error
    assert all(len(record.getMessage()) < 10_000 for record in caplog.records)


def test_a_huge_init_exception_message_is_cut(hostile, tmp_path):
    with pytest.raises(StoqPluginException) as raised:
        make(
            tmp_path,
            {"hostile": {"init": "huge_error", "size": 50_000_000}},
            always_dispatch=["hostile"],
        )
    assert len(str(raised.value)) <= 4096
    assert "characters cut" in str(raised.value)


def test_a_call_that_handles_an_awaited_failure_keeps_its_result(tmp_path):
    # The task throws an awaited future's error into the call; one the call handles is not a
    # refused cancellation (a connector retrying after a failed command, say).
    class Retrying:
        @hookimpl
        async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.01, future.set_exception, KeyError("gone"))
            try:
                await future
            except KeyError:
                await asyncio.sleep(0.01)
                return WorkerResponse({"retried": True})
            return WorkerResponse({"retried": False})

    stoq = Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[], timeout=30)
    stoq.plugins.register("retrying", Retrying())
    response = run_scan(stoq, start=("retrying",))
    assert response.errors == []
    assert response.results[0].workers["retrying"] == {"retried": True}
