"""Throughput of stoQ workers fed by Redis Streams: small payloads, 1 then 2 worker processes.

    python bench_redis.py                     # starts its own redis-server on a free port
    python bench_redis.py --url redis://...   # or uses yours (its own keys, deleted afterwards)
    python bench_redis.py --json              # one JSON object of medians on the last line
    python bench/run.py redis                 # the same, as a row of the monorepo's bench table

Each run submits ``--payloads`` payloads first, then starts the workers (so the submitter does not
compete with them for the CPU), each a ``Stoq.run`` with ``-P redis -C redis`` and the ``hash``
worker if installed. The rate is measured between the first and the last result written (the
results stream's entry ids are millisecond timestamps), so process start-up is not counted. The
worker counts run in turn, ``--repeats`` times, and the medians are reported: on a shared
machine one run alone says little.

Besides the rates, it reports the CPU time spent per payload by the workers and by redis-server,
and the rate of the same scans without Redis (``Stoq`` fed from memory, the result serialised
as the connector would): what the Redis plumbing costs on top of the scan itself. With 2 cores
shared by redis-server and the workers, the 2-worker rate can be at most about 2W/(W+R) times
the 1-worker rate (W and R the worker's and Redis's CPU per payload); that ceiling is printed
too, and so is how much faster two processes of a pure-Python loop run than one on this machine
(virtual cores sharing a physical one make it well under 2). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import entry_points
from typing import Any, Optional

import redis
from stoq_plugin_redis import submit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=256, help="bytes per payload")
    parser.add_argument("--url", help="an existing Redis (default: start a redis-server)")
    parser.add_argument(
        "--consumers", type=int, default=32, help="provider_consumers (concurrent scans) per worker"
    )
    parser.add_argument("--max-inflight", type=int, default=64, help="the plugin's max_inflight")
    parser.add_argument("--workers", default="1,2", help="worker process counts to run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each worker count")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON, last")
    parser.add_argument("--worker-process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_process:
        run_worker(json.loads(args.worker_process))
        return
    counts = [int(n) for n in args.workers.split(",")]
    runs: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    with RedisFor(args.url) as server:
        for _ in range(args.repeats):
            for count in counts:  # interleaved, so a slow spell of the machine hits both
                runs[count].append(measure(server, count, args))
    medians = {
        count: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for count, results in runs.items()
    }
    summary: dict[str, Any] = {"payloads": args.payloads, "repeats": args.repeats}
    for count, median in medians.items():
        summary[f"rate_{count}"] = median["rate"]
        summary[f"worker_cpu_us_{count}"] = median["worker_cpu_us"]
        summary[f"redis_cpu_us_{count}"] = median["redis_cpu_us"]
    summary["no_redis_rate"] = statistics.median(
        scan_without_redis(args) for _ in range(args.repeats)
    )
    summary["cpu_scaling"] = statistics.median(cpu_scaling() for _ in range(args.repeats))
    print(f"medians of {args.repeats} runs:")
    for count, median in medians.items():
        print(
            f"  {count} worker process(es): {median['rate']:,.0f} payloads/s; CPU per payload: "
            f"workers {median['worker_cpu_us']:.0f} us, redis-server {median['redis_cpu_us']:.0f} us"
        )
    print(f"  the same scans without Redis, one process: {summary['no_redis_rate']:,.0f}/s")
    print(
        f"  this machine runs 2 processes of a pure-Python loop at {summary['cpu_scaling']:.2f}x "
        "the rate of one"
    )
    if 1 in medians and 2 in medians:
        one = medians[1]
        ceiling = 2 * one["worker_cpu_us"] / (one["worker_cpu_us"] + one["redis_cpu_us"])
        summary["ratio"] = medians[2]["rate"] / one["rate"]
        summary["ceiling"] = ceiling
        print(
            f"2 workers / 1 worker: {summary['ratio']:.2f}x "
            f"(2 cores shared with redis-server allow about {ceiling:.2f}x)"
        )
    if args.json:
        print(json.dumps(summary))


class RedisFor:
    """The given URL, or a redis-server started for the benchmark (and stopped after it)."""

    def __init__(self, url: Optional[str]) -> None:
        self.url = url or ""
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.directory: Optional[str] = None

    def __enter__(self) -> RedisFor:
        if self.url:
            return self
        server = shutil.which("redis-server")
        if server is None:
            sys.exit("redis-server is not on PATH: install it or pass --url")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.directory = tempfile.mkdtemp(prefix="stoq-bench-")
        self.process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--save", "", "--appendonly", "no", "--logfile", os.path.join(self.directory, "log")],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """redis-server's CPU time so far (user + system), from INFO."""
        info = redis.Redis.from_url(self.url).info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(server: RedisFor, workers: int, args: argparse.Namespace) -> dict[str, float]:
    url = server.url
    run_id = uuid.uuid4().hex[:8]
    names = {
        "stream": f"bench:{run_id}:tasks",
        "results_stream": f"bench:{run_id}:results",
        "key_prefix": f"bench:{run_id}",
    }
    contents = [os.urandom(args.size) for _ in range(args.payloads)]
    started = time.perf_counter()
    asyncio.run(submit(contents, url=url, stream=names["stream"], key_prefix=names["key_prefix"]))
    submitted = time.perf_counter() - started
    config = {
        "url": url,
        "names": names,
        "consumers": args.consumers,
        "max_inflight": args.max_inflight,
        "always_dispatch": always_dispatch(),
    }
    redis_cpu = server.cpu_seconds()
    children_cpu = _children_cpu()
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker-process", json.dumps(config)],
            stdin=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.wait(timeout=3600)
    worker_cpu = _children_cpu() - children_cpu
    redis_cpu = server.cpu_seconds() - redis_cpu
    client = redis.Redis.from_url(url)
    results = client.xlen(names["results_stream"])
    first = client.xrange(names["results_stream"], count=1)[0][0]
    last = client.xrevrange(names["results_stream"], count=1)[0][0]
    span = (int(last.split(b"-")[0]) - int(first.split(b"-")[0])) / 1000
    rate = (results - 1) / span if span else float("inf")
    print(
        f"{workers} worker process(es), {args.consumers} consumers each, "
        f"workers={config['always_dispatch'] or 'none'}: {results} results in {span:.2f} s = "
        f"{rate:,.0f} payloads/s (submitting took {submitted:.2f} s = "
        f"{args.payloads / submitted:,.0f}/s)",
        flush=True,
    )
    for key in client.scan_iter(f"bench:{run_id}:*", count=1000):
        client.delete(key)
    # The workers' CPU includes their start-up and the idle second before they stop: a little
    # more than the payloads cost, the same for every run.
    return {
        "rate": rate,
        "worker_cpu_us": worker_cpu / results * 1e6,
        "redis_cpu_us": redis_cpu / results * 1e6,
    }


def always_dispatch() -> list[str]:
    return ["hash"] if any(ep.name == "hash" for ep in entry_points(group="stoq.plugins")) else []


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(config: dict[str, Any]) -> None:
    from stoq_core import Stoq

    stoq = Stoq(
        base_dir=tempfile.gettempdir(),
        config_file=os.devnull,
        log_dir=None,
        log_level="WARNING",
        plugin_dir_list=[],
        providers=["redis"],
        connectors=["redis"],
        always_dispatch=config["always_dispatch"],
        provider_consumers=config["consumers"],
        plugin_opts={
            "redis": {
                "url": config["url"],
                "stop_when_idle": 1,
                "max_inflight": config["max_inflight"],
                **config["names"],
            }
        },
    )
    asyncio.run(stoq.run())


def _spin(_: object) -> float:
    began, total = time.perf_counter(), 0
    for number in range(20_000_000):
        total += number
    return time.perf_counter() - began


def cpu_scaling() -> float:
    """Work per second of 2 processes spinning at once over that of 1: the machine's own limit."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        alone = pool.apply(_spin, (None,))
        together = pool.map(_spin, [None, None], chunksize=1)
    return 2 * alone / max(together)


def scan_without_redis(args: argparse.Namespace) -> float:
    """Payloads/s of the same scans fed from memory, each result serialised as the connector does."""
    code = f"""
import asyncio, os, time
from stoq_core import Payload, Request, Stoq
from stoq_core.helpers import dumps
stoq = Stoq(config_file=os.devnull, log_dir=None, log_level="WARNING", plugin_dir_list=[],
            always_dispatch={always_dispatch()!r})
contents = [os.urandom({args.size}) for _ in range({args.payloads})]
async def main():
    queue = asyncio.Queue()
    for content in contents:
        queue.put_nowait(content)
    async def consume():
        while not queue.empty():
            response = await stoq.scan_request(Request([Payload(queue.get_nowait())]))
            dumps(response.to_dict(), compactly=True)
    began = time.perf_counter()
    await asyncio.gather(*(consume() for _ in range({args.consumers})))
    return len(contents) / (time.perf_counter() - began)
print(asyncio.run(main()))
"""
    with tempfile.TemporaryDirectory() as directory:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=directory,
            timeout=3600,
        )
    return float(done.stdout.split()[-1])


if __name__ == "__main__":
    main()
