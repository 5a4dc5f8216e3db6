"""The result cache: a worker's response reused for the same bytes, version and options."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from core_helpers import scan

from stoq_core import Stoq, StoqException, StoqResponse

TESTS = Path(__file__).parent.parent
PLUGINS = {
    "counting": "cache_fakes:Counting",
    "other": "cache_fakes:Counting",
    "live": "cache_fakes:LiveLookup",
}


@pytest.fixture
def calls() -> Iterator[Any]:
    import cache_fakes  # on sys.path once install_plugins has run

    cache_fakes.CALLS.clear()
    yield cache_fakes.CALLS
    cache_fakes.CALLS.clear()


@pytest.fixture
def cached_stoq(
    install_plugins: Callable[..., Path], tmp_path: Path, calls: Any
) -> Callable[..., Stoq]:
    """``cached_stoq(**kwargs)``: a Stoq with the local cache on, in ``tmp_path/home``."""
    install_plugins(PLUGINS, dist="stoq-test-cache")

    def make(**kwargs: Any) -> Stoq:
        kwargs.setdefault("base_dir", str(tmp_path / "home"))
        kwargs.setdefault("log_dir", None)
        kwargs.setdefault("plugin_dir_list", [])
        kwargs.setdefault("cache", "local")
        return Stoq(**kwargs)

    return make


def _shape(response: StoqResponse) -> list[Any]:
    """What a response says, without the ids and times that differ from scan to scan."""
    return [
        (r.size, r.payload_meta.to_dict(), r.plugins_run, r.extracted_by, r.workers)
        for r in response.results
    ] + [(e.error, e.plugin_name) for e in response.errors]


def test_a_second_scan_of_the_same_bytes_reuses_the_workers_result(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    first, _ = scan(cached_stoq(), b"same bytes", ["counting"])
    second, _ = scan(cached_stoq(), b"same bytes", ["counting"])

    assert calls["counting"] == 1
    assert _shape(second) == _shape(first)
    assert first.results[0].cached is None
    assert list(second.results[0].cached or {}) == ["counting"]


def test_a_reused_result_is_marked_after_the_v3_fields_of_the_json(
    cached_stoq: Callable[..., Stoq],
) -> None:
    first, _ = scan(cached_stoq(), b"same bytes", ["counting"])
    second, _ = scan(cached_stoq(), b"same bytes", ["counting"])

    [fresh] = json.loads(str(first))["results"]
    [reused] = json.loads(str(second))["results"]
    assert "cached" not in fresh
    assert list(reused) == [*fresh, "cached"]
    assert reused["workers"] == fresh["workers"]
    stored = reused["cached"]["counting"]
    assert stored.endswith("+00:00") and stored[:4].isdigit()


def test_other_bytes_are_a_miss(cached_stoq: Callable[..., Stoq], calls: Any) -> None:
    scan(cached_stoq(), b"one", ["counting"])
    response, _ = scan(cached_stoq(), b"two", ["counting"])

    assert calls["counting"] == 2
    assert response.results[0].cached is None


def test_a_new_version_of_the_plugin_is_a_miss(
    cached_stoq: Callable[..., Stoq], install_plugins: Callable[..., Path], calls: Any
) -> None:
    scan(cached_stoq(), b"same bytes", ["counting"])
    install_plugins(PLUGINS, dist="stoq-test-cache", version="2.0")
    response, _ = scan(cached_stoq(), b"same bytes", ["counting"])

    assert cached_stoq().list_plugins()["counting"].version == "2.0"
    assert calls["counting"] == 2
    assert response.results[0].cached is None


def test_changed_options_are_a_miss_and_each_set_of_options_has_its_own_result(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    def label(value: str) -> Any:
        stoq = cached_stoq(plugin_opts={"counting": {"label": value}})
        response, _ = scan(stoq, b"same bytes", ["counting"])
        return response.results[0].workers["counting"]["label"], response.results[0].cached

    assert label("one") == ("one", None)
    assert label("two") == ("two", None)
    reused, cached = label("one")

    assert calls["counting"] == 2
    assert reused == "one" and cached is not None


def test_a_timeout_option_changes_how_a_worker_runs_not_its_result(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    scan(cached_stoq(), b"same bytes", ["counting"])
    response, _ = scan(
        cached_stoq(plugin_opts={"counting": {"timeout": "30"}}), b"same bytes", ["counting"]
    )

    assert calls["counting"] == 1 and response.results[0].cached is not None


def test_an_expired_result_is_a_miss(cached_stoq: Callable[..., Stoq], calls: Any) -> None:
    scan(cached_stoq(cache_ttl=0.3), b"same bytes", ["counting"])
    kept, _ = scan(cached_stoq(cache_ttl=0.3), b"same bytes", ["counting"])
    time.sleep(0.4)
    expired, _ = scan(cached_stoq(cache_ttl=0.3), b"same bytes", ["counting"])

    assert kept.results[0].cached is not None
    assert expired.results[0].cached is None
    assert calls["counting"] == 2


def test_a_worker_declared_not_cacheable_runs_every_time(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    for _ in range(2):
        response, _ = scan(cached_stoq(), b"same bytes", ["live"])

    assert calls["live"] == 2
    assert response.results[0].cached is None


def test_only_the_workers_cache_plugins_names_are_cached(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    for _ in range(2):
        response, _ = scan(
            cached_stoq(cache_plugins=["other"]), b"same bytes", ["counting", "other"]
        )

    assert calls == {"counting": 2, "other": 1}
    assert list(response.results[0].cached or {}) == ["other"]


def test_a_misspelt_cache_plugin_is_refused_with_the_closest_name(
    cached_stoq: Callable[..., Stoq],
) -> None:
    with pytest.raises(StoqException, match=r"cache_plugins: .*'countng'.*did you mean 'counting'"):
        cached_stoq(cache_plugins="countng")


def test_an_unknown_backend_is_refused_with_the_known_ones(
    cached_stoq: Callable[..., Stoq],
) -> None:
    with pytest.raises(StoqException, match=r"no cache backend 'locla'; did you mean 'local'"):
        cached_stoq(cache="locla")


def test_a_worker_with_required_workers_is_not_cached(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    # Its results may read another worker's, which the key does not hold.
    opts = {"counting": {"required_workers": "other"}}
    for _ in range(2):
        response, _ = scan(cached_stoq(plugin_opts=opts), b"same bytes", ["counting"])

    assert calls == {"other": 1, "counting": 2}
    assert list(response.results[0].cached or {}) == ["other"]


def test_extracted_payloads_are_reproduced_from_the_cache(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    opts = {"counting": {"extract": '["a", "b"]', "dispatch_to": "other"}}

    def once() -> StoqResponse:
        stoq = cached_stoq(plugin_opts=opts, always_dispatch=["counting"])
        return scan(stoq, b"parent")[0]

    first, second = once(), once()

    assert calls == {"counting": 3, "other": 1}  # parent, a, b; then other on parent
    assert _shape(second) == _shape(first)
    assert [sorted(r.cached or {}) for r in second.results] == [
        ["counting", "other"],
        ["counting"],
        ["counting"],
    ]
    assert second.results[1].payload_meta.extra_data == {"filename": "a.txt"}
    assert second.results[1].extracted_from == [second.results[0].payload_id]


def test_a_worker_that_extracts_more_than_the_bound_is_run_again(
    cached_stoq: Callable[..., Stoq], calls: Any
) -> None:
    from stoq_core._cache import MAX_EXTRACTED_BYTES

    opts = {"counting": {"extract": json.dumps([{"big": MAX_EXTRACTED_BYTES + 1}])}}
    for _ in range(2):
        response, _ = scan(cached_stoq(plugin_opts=opts), b"parent", ["counting"])

    assert calls["counting"] == 2
    assert response.results[0].cached is None and len(response.results) == 2


def test_a_failed_call_is_not_cached(cached_stoq: Callable[..., Stoq], calls: Any) -> None:
    opts = {"counting": {"raise_on": "same bytes"}}
    for _ in range(2):
        response, _ = scan(cached_stoq(plugin_opts=opts), b"same bytes", ["counting"])

    assert calls["counting"] == 2
    assert "cannot stand" in response.errors[0].error


def test_the_errors_a_worker_returned_come_back_with_its_results(
    cached_stoq: Callable[..., Stoq],
) -> None:
    opts = {"counting": {"error": "half-parsed"}}
    first, _ = scan(cached_stoq(plugin_opts=opts), b"same bytes", ["counting"])
    second, _ = scan(cached_stoq(plugin_opts=opts), b"same bytes", ["counting"])

    assert second.results[0].cached is not None
    assert [(e.error, e.plugin_name) for e in second.errors] == [
        ("half-parsed", "counting"),
        ("bare", "counting"),
    ]
    # Each names the payload of its own scan, not the one the result was first made for.
    assert {e.payload_id for e in second.errors} == {second.results[0].payload_id}
    assert _shape(second) == _shape(first)


def test_a_plugin_directory_plugin_edited_in_place_is_a_miss(
    install_plugins: Callable[..., Path], tmp_path: Path, calls: Any
) -> None:
    # The .stoq Version is the same; the module file is not.
    folder = tmp_path / "plugins" / "edited"
    folder.mkdir(parents=True)
    (folder / "edited.stoq").write_text(
        "[Core]\nName = edited\nModule = edited\n\n[Documentation]\nVersion = 1.0\n"
    )
    module = folder / "edited.py"

    def scan_with(answer: str) -> StoqResponse:
        module.write_text(
            "from stoq_core import WorkerResponse\n"
            "from stoq_core.plugins import WorkerPlugin\n"
            "class Edited(WorkerPlugin):\n"
            "    async def scan(self, payload, request):\n"
            f"        return WorkerResponse({{'answer': {answer!r}}})\n"
        )
        stoq = Stoq(
            base_dir=str(tmp_path / "home"),
            log_dir=None,
            plugin_dir_list=[str(tmp_path / "plugins")],
            cache="local",
        )
        return scan(stoq, b"same bytes", ["edited"])[0]

    assert scan_with("first").results[0].cached is None
    assert scan_with("first").results[0].cached is not None
    edited = scan_with("second")

    assert edited.results[0].cached is None
    assert edited.results[0].workers["edited"] == {"answer": "second"}


def test_the_cache_is_off_by_default_and_leaves_no_file(
    install_plugins: Callable[..., Path], tmp_path: Path, calls: Any
) -> None:
    install_plugins(PLUGINS, dist="stoq-test-cache")
    for _ in range(2):
        stoq = Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])
        response, _ = scan(stoq, b"same bytes", ["counting"])

    assert calls["counting"] == 2
    assert "cached" not in json.loads(str(response))["results"][0]
    assert not (tmp_path / "cache").exists()


def test_the_local_cache_file_is_readable_by_its_owner_only(
    cached_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    scan(cached_stoq(), b"same bytes", ["counting"])

    assert (tmp_path / "home" / "cache" / "results.sqlite3").stat().st_mode & 0o777 == 0o600


# -- a backend that fails ----------------------------------------------------------------------


def test_a_cache_that_cannot_be_opened_is_a_miss_with_one_warning(
    cached_stoq: Callable[..., Stoq], tmp_path: Path, calls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache's directory should be")
    caplog.set_level(logging.WARNING, "stoq")
    stoq = cached_stoq(cache_url=str(blocked))
    responses = [scan(stoq, b"same bytes", ["counting"])[0] for _ in range(3)]

    assert calls["counting"] == 3
    assert all(r.errors == [] and r.results[0].workers["counting"] for r in responses)
    cache_warnings = [r for r in caplog.records if "result cache" in r.getMessage()]
    assert len(cache_warnings) == 1
    assert cache_warnings[0].levelno == logging.WARNING
    assert "scanning without the cache" in cache_warnings[0].getMessage()


def test_a_cache_file_that_is_not_a_database_is_a_miss_not_an_error(
    cached_stoq: Callable[..., Stoq], tmp_path: Path, calls: Any
) -> None:
    folder = tmp_path / "home" / "cache"
    folder.mkdir(parents=True)
    (folder / "results.sqlite3").write_bytes(b"this is not sqlite " * 100)
    for _ in range(2):
        response, _ = scan(cached_stoq(), b"same bytes", ["counting"])

    assert calls["counting"] == 2
    assert response.errors == [] and response.results[0].workers["counting"]["label"] == "one"


_GOOD = {"format": 1, "results": {}, "errors": [], "dispatch_to": [], "extracted": [], "stored": ""}


@pytest.mark.parametrize(
    "entry",
    [
        {**_GOOD, "extracted": [1]},
        {**_GOOD, "extracted": [{"content": 5}]},
        {**_GOOD, "errors": [[1]]},
        {**_GOOD, "errors": [{"error": "x"}]},
        {**_GOOD, "dispatch_to": 5},
        {**_GOOD, "stored": {"when": 1}},
        {**_GOOD, "errors": [[{"a": 1}, "counting", True, None]]},
        {**_GOOD, "errors": {"a": 1}},
        {**_GOOD, "dispatch_to": "abc"},
        {
            **_GOOD,
            "extracted": [
                {
                    "content": "",
                    "should_archive": "yes",
                    "should_scan": True,
                    "extra_data": {},
                    "dispatch_to": [],
                }
            ],
        },
        {
            **_GOOD,
            "extracted": [
                {
                    "content": "",
                    "should_archive": True,
                    "should_scan": True,
                    "extra_data": [],
                    "dispatch_to": [],
                }
            ],
        },
        "[" * 100_000,  # nested past the parser's stack
        {
            **_GOOD,
            "extracted": [
                {
                    "content": "not base64!",
                    "should_archive": True,
                    "should_scan": True,
                    "extra_data": {},
                    "dispatch_to": [],
                }
            ],
        },
    ],
)
def test_an_entry_this_stoq_did_not_write_is_a_miss(
    cached_stoq: Callable[..., Stoq], tmp_path: Path, calls: Any, entry: Any
) -> None:
    # A shared backend (Redis) may hold what another program, or a buggy version, wrote.
    import sqlite3

    stoq = cached_stoq()
    scan(stoq, b"same bytes", ["counting"])
    stoq.close()
    with sqlite3.connect(tmp_path / "home" / "cache" / "results.sqlite3") as connection:
        value = entry if isinstance(entry, str) else json.dumps(entry)
        connection.execute("UPDATE results SET value = ?", (value.encode(),))
    response, _ = scan(cached_stoq(), b"same bytes", ["counting"])

    assert calls["counting"] == 2
    assert response.errors == [] and response.results[0].cached is None
    assert response.results[0].workers["counting"]["label"] == "one"


def test_close_writes_the_entries_kept_in_memory(
    cached_stoq: Callable[..., Stoq], calls: Any, tmp_path: Path
) -> None:
    import sqlite3

    stoq = cached_stoq()
    for index in range(3):  # fewer than a batch: kept in memory, not yet in the file
        scan(stoq, f"payload {index}".encode(), ["counting"])
    database = tmp_path / "home" / "cache" / "results.sqlite3"

    def rows() -> int:
        with sqlite3.connect(database) as connection:
            (count,) = connection.execute("SELECT count(*) FROM results").fetchone()
        return int(count)

    assert rows() == 0
    stoq.close()
    assert rows() == 3
    scan(stoq, b"payload 0", ["counting"])  # still usable: a hit, from the file
    assert calls["counting"] == 3


# -- several processes -------------------------------------------------------------------------

_PROCESS = """
import asyncio, json, sys
from stoq_core import Stoq
home, contents = sys.argv[1], json.loads(sys.argv[2])
stoq = Stoq(base_dir=home, log_dir=None, plugin_dir_list=[], cache="local")
async def main():
    cached = errors = 0
    for content in contents:
        response = await stoq.scan(content.encode(), add_start_dispatch=["counting"])
        cached += bool(response.results[0].cached)
        errors += len(response.errors)
    print(json.dumps({"cached": cached, "errors": errors}))
asyncio.run(main())
"""


def test_several_processes_share_the_local_cache(
    install_plugins: Callable[..., Path], tmp_path: Path
) -> None:
    site = install_plugins(PLUGINS, dist="stoq-test-cache")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(TESTS)])}
    home = tmp_path / "home"
    contents = [f"payload {i}" for i in range(60)]

    def start(chunk: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_PROCESS), str(home), json.dumps(chunk)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Three writers at once, each over every payload in its own order: they race for the file.
    writers = [start(contents[i::3] + contents) for i in range(3)]
    outputs = [process.communicate(timeout=120) for process in writers]
    reader = start(contents)
    out, err = reader.communicate(timeout=120)

    for (stdout, stderr), process in zip(outputs, writers):
        assert process.returncode == 0, stderr
        assert json.loads(stdout)["errors"] == 0
        assert "result cache" not in stderr  # no lock was ever given up
    assert reader.returncode == 0, err
    assert json.loads(out) == {"cached": len(contents), "errors": 0}


def _open_at_once(directory: str, barrier: Any, answers: Any) -> None:
    from stoq_core._cache import CacheSettings
    from stoq_core._cache_local import LocalCache

    cache = LocalCache(CacheSettings("local", url=directory))
    barrier.wait()
    try:
        cache.get_many(["a key"])
        answers.put("")
    except Exception as exc:
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_cache_file_at_once_all_use_it(tmp_path: Path) -> None:
    # ``stoq scan --jobs`` workers open a new file in the same milliseconds; sqlite refuses the
    # switch to WAL at once (no busy wait) to all but one of them.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = []
    for round in range(20):
        barrier, answers = context.Barrier(4), context.Queue()
        directory = str(tmp_path / f"cache-{round}")
        processes = [
            context.Process(target=_open_at_once, args=(directory, barrier, answers))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        failures += [answers.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(60)

    assert [failure for failure in failures if failure] == []


def test_a_cache_file_locked_by_another_process_costs_a_warning_not_an_error(
    cached_stoq: Callable[..., Stoq],
    tmp_path: Path,
    calls: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqlite3

    from stoq_core import _cache_local

    monkeypatch.setattr(_cache_local, "FLUSH_EVERY", 1)  # each result written at once
    scan(cached_stoq(), b"first", ["counting"])  # makes the file
    holder = sqlite3.connect(tmp_path / "home" / "cache" / "results.sqlite3")
    holder.execute("BEGIN EXCLUSIVE")  # a writer that does not let go
    caplog.set_level(logging.WARNING, "stoq")
    try:
        response, _ = scan(cached_stoq(), b"second", ["counting"])
    finally:
        holder.rollback()
        holder.close()

    assert response.errors == [] and response.results[0].workers["counting"]["size"] == 6
    assert [r.levelno for r in caplog.records if "result cache" in r.getMessage()] == [
        logging.WARNING
    ]
    assert "storing results failed" in caplog.text


def test_closing_waits_longer_for_another_writer_rather_than_drop_what_it_kept(
    cached_stoq: Callable[..., Stoq], tmp_path: Path, calls: Any
) -> None:
    # A scan waits BUSY_TIMEOUT at most; the last write of a process has no scan waiting on it.
    import sqlite3
    import threading

    from stoq_core._cache_local import BUSY_TIMEOUT

    stoq = cached_stoq()
    scan(stoq, b"first", ["counting"])
    stoq.close()  # the file exists
    scan(stoq, b"second", ["counting"])  # kept in memory
    holder = sqlite3.connect(
        tmp_path / "home" / "cache" / "results.sqlite3", check_same_thread=False
    )
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(BUSY_TIMEOUT * 3, holder.rollback)
    release.start()
    try:
        began = time.monotonic()
        stoq.close()
        waited = time.monotonic() - began
    finally:
        release.join()
        holder.close()
    response, _ = scan(cached_stoq(), b"second", ["counting"])

    assert waited > BUSY_TIMEOUT  # it did wait for the other writer
    assert response.results[0].cached is not None and calls["counting"] == 2


def test_what_a_multiprocessing_worker_kept_is_written_when_it_ends(
    cached_stoq: Callable[..., Stoq], tmp_path: Path, calls: Any
) -> None:
    # A process the fork server started ends without running atexit (as ``--jobs``'s do).
    import multiprocessing

    import cache_fakes

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    contents = [f"payload {i}" for i in range(5)]
    process = multiprocessing.get_context("forkserver").Process(
        target=cache_fakes.scan_each, args=(str(tmp_path / "home"), contents)
    )
    process.start()
    process.join(60)

    assert process.exitcode == 0
    for content in contents:
        response, _ = scan(cached_stoq(), content.encode(), ["counting"])
        assert response.results[0].cached is not None
    assert calls["counting"] == 0  # every call was the other process's
