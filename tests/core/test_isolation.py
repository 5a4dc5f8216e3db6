"""``isolate = true``: a plugin's hooks in processes of their own, killed when their time is up.

The hostile plugins (``tests/hostile``) hold the GIL, swallow cancellations, segfault and
over-allocate; in the stoq process none of that could be stopped (issue 12). ``mode=content``
lets one payload crash the plugin and the next ask for its process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from core_helpers import errors_of, stoq_maker

from stoq_core import Payload, Request, Stoq, StoqPluginException, StoqResponse
from stoq_core._isolation import IsolatedPlugin

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# Catastrophic backtracking for about 25 s here (twice as long per extra "a"): far past any
# timeout below, yet a run of the old code ends (and fails) rather than hanging for hours.
GIL_N = "29"
# Generous for a loaded 2-core machine: a process that is killed is gone long before this.
WITHIN = 60.0


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ended(pid: int) -> bool:
    """Whether ``pid`` ends within ``WITHIN`` seconds."""
    give_up = time.monotonic() + WITHIN
    while running(pid):
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def make(hostile: Path, tmp_path: Path) -> Iterator[Callable[..., Stoq]]:
    """``make(plugin_opts, **stoq_kwargs)``: a ``Stoq`` with the hostile plugins installed; its
    isolated plugins' processes are ended after the test."""
    with stoq_maker(tmp_path) as build:
        yield build


def scan(stoq: Stoq, *contents: bytes, start: tuple[str, ...] = ("hostile",)) -> StoqResponse:
    """One request holding ``contents``, each payload started on ``start``."""
    request = Request([Payload(content) for content in contents])
    return asyncio.run(stoq.scan_request(request, list(start)))


def pid_of(response: StoqResponse, plugin: str = "hostile") -> int:
    [results] = response.results
    pid: int = results.workers[plugin]["pid"]
    return pid


def isolated(stoq: Stoq, name: str = "hostile") -> IsolatedPlugin:
    plugin = stoq.load_plugin(name)
    assert isinstance(plugin, IsolatedPlugin)
    return plugin


# -- time limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "mode"),
    [
        ("hostile", {"mode": "gil", "n": GIL_N}),
        ("hostile_sync", {"mode": "busy", "seconds": "600"}),
    ],
    ids=["async-def-regex", "plain-def-loop"],
)
def test_an_isolated_call_holding_the_gil_is_killed_at_its_timeout_and_the_scan_goes_on(
    make: Callable[..., Stoq], plugin: str, mode: dict[str, str]
) -> None:
    stoq = make({plugin: {"isolate": "true", **mode}, "hostile2": {}}, timeout=1)
    [hog] = isolated(stoq, plugin).pids

    response = scan(stoq, b"x", start=(plugin, "hostile2"))

    assert errors_of(response, plugin) == ["scan timed out after 1 s"]
    assert response.results[0].workers == {"hostile2": {"hostile": "hostile2"}}
    assert ended(hog)


def test_an_isolated_hook_that_swallows_its_cancellation_is_killed_at_its_timeout(
    make: Callable[..., Stoq],
) -> None:
    stoq = make({"hostile": {"isolate": "true", "mode": "swallow_cancel", "seconds": "30"}})
    stoq.timeout = 1
    [stubborn] = isolated(stoq).pids

    response = scan(stoq, b"x")

    assert errors_of(response, "hostile") == ["scan timed out after 1 s"]
    assert ended(stubborn)


def test_the_request_deadline_kills_an_isolated_call_too(make: Callable[..., Stoq]) -> None:
    stoq = make(
        {"hostile": {"isolate": "true", "mode": "gil", "n": GIL_N, "timeout": "0"}, "hostile2": {}},
        deadline=1,
    )
    [hog] = isolated(stoq).pids

    response = scan(stoq, b"x", start=("hostile", "hostile2"))

    assert errors_of(response, "hostile") == ["scan stopped at the request deadline (1 s)"]
    assert "hostile2" in response.results[0].workers
    assert ended(hog)


def test_after_a_kill_the_next_call_gets_a_new_process(make: Callable[..., Stoq]) -> None:
    stoq = make({"hostile": {"isolate": "true", "mode": "content", "n": GIL_N}}, timeout=1)
    [first] = isolated(stoq).pids

    timed_out = scan(stoq, b"gil")
    # The new process starts within the next call: room for a loaded machine's slow start.
    stoq.timeout = 60
    after = scan(stoq, b"pid")

    assert errors_of(timed_out, "hostile") == ["scan timed out after 1 s"]
    assert after.errors == []
    assert pid_of(after) != first


# -- crashes and memory ---------------------------------------------------------------------


def run_python(code: str, hostile_site: Path, *args: str) -> subprocess.Popen[str]:
    """``code`` (given ``args``) in a new interpreter that can load the hostile plugins."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hostile_site), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SCAN_EACH = """
    import asyncio, json, sys
    from stoq_core import Stoq
    stoq = Stoq(log_dir=None, plugin_dir_list=[], timeout=30, plugin_opts={
        "hostile": {"isolate": "true", "mode": "content", "hooks": "scan"}, "hostile2": {}})
    async def main():
        for content in sys.argv[1:]:
            response = await stoq.scan(content.encode(), add_start_dispatch=["hostile", "hostile2"])
            print(json.dumps(response.to_dict()), flush=True)
    asyncio.run(main())
"""


def test_a_segfault_is_an_error_for_its_call_and_the_next_payload_gets_a_new_process(
    hostile_site: Path,
) -> None:
    # In a program of its own: should isolation ever fail, the segfault ends that, not pytest.
    program = run_python(SCAN_EACH, hostile_site, "pid", "segfault", "pid")
    out, err = program.communicate(timeout=300)

    assert program.returncode == 0, err
    before, crashed, after = (json.loads(line) for line in out.splitlines())
    [error] = crashed["errors"]
    assert error["plugin_name"] == "hostile"
    assert error["error"].startswith("scan failed: PluginProcessDied: the plugin's process (pid ")
    assert "was killed by SIGSEGV (Segmentation fault) during the call" in error["error"]
    assert crashed["results"][0]["workers"] == {"hostile2": {"hostile": "hostile2"}}
    assert after["errors"] == []
    assert (
        after["results"][0]["workers"]["hostile"]["pid"]
        != before["results"][0]["workers"]["hostile"]["pid"]
    )


def test_isolate_memory_turns_an_over_allocation_into_an_error_and_a_new_process(
    make: Callable[..., Stoq],
) -> None:
    stoq = make(
        {"hostile": {"isolate": "true", "isolate_memory": "256M", "mode": "content",
                     "size": str(512 << 20)}}
    )  # fmt: skip
    [capped] = isolated(stoq).pids

    over = scan(stoq, b"memory")
    after = scan(stoq, b"pid")

    assert errors_of(over, "hostile") == [
        "scan failed: MemoryError: the process ran out of memory under isolate_memory = 256M; "
        "the next call gets a new process"
    ]
    assert after.errors == []
    assert pid_of(after) != capped
    assert ended(capped)


def test_isolate_recycle_replaces_the_process_after_that_many_calls(
    make: Callable[..., Stoq],
) -> None:
    stoq = make({"hostile": {"isolate": "true", "isolate_recycle": "2", "mode": "pid"}})

    pids = [pid_of(scan(stoq, f"payload {i}".encode())) for i in range(5)]

    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert ended(pids[0]) and ended(pids[2])


def test_a_call_queued_behind_a_process_that_is_replaced_gets_the_new_process(
    make: Callable[..., Stoq],
) -> None:
    # One process, two payloads in one round: the second call waits for the process the first
    # one's over-allocation retires, then is served by its replacement.
    stoq = make(
        {"hostile": {"isolate": "true", "isolate_memory": "256M", "mode": "content",
                     "size": str(512 << 20)}},
        timeout=120,
    )  # fmt: skip
    [first] = isolated(stoq).pids

    response = scan(stoq, b"memory", b"pid")

    over, served = response.results
    assert [e.error.split(":")[0] for e in response.errors] == ["scan failed"]
    assert response.errors[0].payload_id == over.payload_id
    assert served.workers["hostile"]["pid"] != first


def test_isolate_processes_serves_a_call_beside_a_busy_one(make: Callable[..., Stoq]) -> None:
    stoq = make(
        {"hostile": {"isolate": "true", "isolate_processes": "2", "mode": "content",
                     "seconds": "600", "timeout": "0"}}
    )  # fmt: skip
    [first] = isolated(stoq).pids

    async def main() -> StoqResponse:
        busy = asyncio.ensure_future(stoq.scan(b"sleep", add_start_dispatch=["hostile"]))
        await asyncio.sleep(0.5)  # the busy scan reaches its call (no speed is measured)
        try:
            return await stoq.scan(b"pid", add_start_dispatch=["hostile"])
        finally:
            busy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await busy

    beside = asyncio.run(main())

    assert beside.errors == []
    assert pid_of(beside) not in (first, os.getpid())
    assert ended(first)  # the busy call's process, killed when its scan was cancelled


# -- the same results, the same failures ------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _comparable(response: StoqResponse) -> dict[str, Any]:
    """The response's JSON, each payload id replaced by its payload's position."""
    text = json.dumps(response.to_dict(), sort_keys=True)
    for index, results in enumerate(response.results):
        text = text.replace(results.payload_id, f"payload-{index}")
    found: dict[str, Any] = json.loads(text)
    del found["time"], found["scan_id"]
    return found


@pytest.mark.parametrize(
    "limits",
    # 2200 bytes: the limit is met in the nested zip's round, so the process must know what
    # the request already held.
    [{}, {"max_extracted_bytes": 2200}],
    ids=["plain", "over-max_extracted_bytes"],
)
def test_an_isolated_plugin_gives_the_results_it_gives_in_process(
    make: Callable[..., Stoq], limits: dict[str, int]
) -> None:
    inner = _zip({"deep.txt": b"d" * 500})
    archive = _zip({"a.txt": b"a" * 1000, "b.txt": b"b" * 1000, "inner.zip": inner})
    responses = []
    for isolate in ("false", "true"):
        options = {"decompress": {"isolate": isolate}, "hash": {"isolate": isolate}}
        stoq = make(options, always_dispatch=["hash", "decompress"], **limits)
        responses.append(_comparable(asyncio.run(stoq.scan(archive))))

    in_process, in_processes = responses
    assert in_processes == in_process
    assert len(in_process["results"]) > 1
    assert bool(in_process["errors"]) == bool(limits)


def test_a_plugin_that_fails_to_start_in_its_process_fails_to_load_as_in_process(
    make: Callable[..., Stoq],
) -> None:
    messages = []
    for isolate in ("false", "true"):
        with pytest.raises(StoqPluginException) as raised:
            make({"hostile": {"isolate": isolate, "init": "raise"}}, always_dispatch=["hostile"])
        messages.append(str(raised.value))

    assert messages[1] == messages[0]
    assert messages[0] == (
        "plugin 'hostile' from distribution stoq-plugin-hostile failed to start: "
        "RuntimeError: hostile refuses to start"
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("isolate", "maybe", "option isolate must be true or false, not 'maybe'"),
        ("isolate_memory", "lots", "option isolate_memory must be a size such as 512M or 2G"),
        ("isolate_recycle", "-1", "option isolate_recycle must be a whole number >= 0"),
        ("isolate_processes", "0", "option isolate_processes must be a whole number >= 1"),
    ],
)
def test_an_isolate_option_that_means_nothing_fails_the_load(
    make: Callable[..., Stoq], option: str, value: str, message: str
) -> None:
    with pytest.raises(StoqPluginException, match=f"^plugin 'hostile': {message}"):
        make({"hostile": {"isolate": "true", option: value}}, always_dispatch=["hostile"])


def test_isolate_memory_takes_sizes_with_units(make: Callable[..., Stoq]) -> None:
    stoq = make({"hostile": {"isolate": "true", "isolate_memory": "1.5G"}})

    assert isolated(stoq).options.memory == 3 << 29


def test_a_provider_cannot_be_isolated(make: Callable[..., Stoq]) -> None:
    stoq = make({"hostile": {"isolate": "true"}})
    plugin = stoq.plugins.load("hostile")

    with pytest.raises(StoqPluginException, match="a provider cannot be isolated"):
        asyncio.run(plugin.call("ingest", asyncio.Queue()))


def test_a_v3_plugin_directory_plugin_runs_isolated(
    make: Callable[..., Stoq], tmp_path: Path
) -> None:
    directory = tmp_path / "plugins" / "pidof"
    directory.mkdir(parents=True)
    (directory / "pidof.stoq").write_text("[Core]\nName = pidof\nModule = pidof\n")
    (directory / "pidof.py").write_text(
        "import os\n"
        "from stoq_core import WorkerResponse\n"
        "from stoq_core.plugins import WorkerPlugin\n\n\n"
        "class PidOf(WorkerPlugin):\n"
        "    async def scan(self, payload, request):\n"
        "        return WorkerResponse({'pid': os.getpid(), 'greeting': self.config.get("
        "'options', 'greeting')})\n"
    )
    stoq = make(
        {"pidof": {"isolate": "true", "greeting": "hi"}},
        plugin_dir_list=[str(tmp_path / "plugins")],
    )

    response = scan(stoq, b"x", start=("pidof",))

    assert response.errors == []
    [results] = response.results
    assert results.workers["pidof"]["greeting"] == "hi"
    assert results.workers["pidof"]["pid"] == isolated(stoq, "pidof").pids[0] != os.getpid()


# -- no process left behind -----------------------------------------------------------------


def test_no_plugin_process_outlives_the_program(hostile_site: Path) -> None:
    program = run_python(SCAN_EACH, hostile_site, "pid")
    out, err = program.communicate(timeout=300)

    assert program.returncode == 0, err
    pid = json.loads(out)["results"][0]["workers"]["hostile"]["pid"]
    assert ended(pid)


def test_closing_an_isolated_plugin_ends_its_processes(make: Callable[..., Stoq]) -> None:
    stoq = make({"hostile": {"isolate": "true", "mode": "pid"}})
    served = pid_of(scan(stoq, b"x"))
    plugin = isolated(stoq)

    plugin.close()

    assert plugin.pids == []
    assert ended(served)
    with pytest.raises(StoqPluginException, match="was closed"):
        asyncio.run(stoq.plugins.load("hostile").call("scan", Payload(b"x"), Request()))


def test_a_killed_program_takes_its_plugin_processes_with_it(hostile_site: Path) -> None:
    # The plugin's process is stuck in a regex that holds the GIL: it cannot notice anything
    # itself; Linux kills it with its parent.
    program = run_python(
        """
        import asyncio
        from stoq_core import Stoq
        stoq = Stoq(log_dir=None, plugin_dir_list=[], timeout=0, plugin_opts={
            "hostile": {"isolate": "true", "mode": "gil"}})
        print(stoq.load_plugin("hostile").pids[0], flush=True)
        asyncio.run(stoq.scan(b"x", add_start_dispatch=["hostile"]))
        """,
        hostile_site,
    )
    assert program.stdout is not None
    hog = int(program.stdout.readline())
    time.sleep(0.5)  # into the call (not a speed assertion: either way it must end)
    assert running(hog)

    program.send_signal(signal.SIGKILL)
    program.communicate(timeout=WITHIN)

    assert ended(hog)
