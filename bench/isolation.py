"""What ``isolate = true`` costs: one worker call in the plugin's own process versus in-process.

    python bench/isolation.py      # prints the rows; ``python bench/run.py isolation`` too

The same no-op worker (and ``hash``) is scanned in-process and isolated, in alternating rounds
so a slow spell of this shared machine hits both; the difference per scan is the price of the
round trip (pickling the payload and a one-payload request, the socket, the child's event
loop, the answer back). Also: how long a new plugin process takes to be ready, which is what a
call after a kill or a recycle waits for.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from run import child, median_of  # bench/ is not a package: run.py is found beside this

ISOLATION = """
import pathlib, statistics
# The plugin must be importable by name in its own process: a module in the working directory.
pathlib.Path("bench_noop.py").write_text(
    "from stoq_core import hookimpl\\n"
    "class Noop:\\n"
    "    def __init__(self, config):\\n"
    "        pass\\n"
    "    @hookimpl\\n"
    "    async def scan(self, payload, request):\\n"
    "        return None\\n"
)
from bench_noop import Noop
N, SIZE, ROUNDS, WORKER = {count}, {size}, {rounds}, {worker!r}

def make(isolate):
    s = Stoq(log_dir=None, plugin_dir_list=[], plugin_opts={{WORKER: {{"isolate": isolate}}}})
    if WORKER == "noop":
        s.plugins.register("noop", Noop)
    else:
        s.plugins.load(WORKER)
    s.always_dispatch = [WORKER]
    return s

began = time.perf_counter()
isolated = make("true")
start_ms = (time.perf_counter() - began) * 1000
in_process = make("false")
payloads = [os.urandom(SIZE) for _ in range(min(N, 100))]

async def per_scan_us(s):
    await s.scan(payloads[0])  # warm
    began = time.perf_counter()
    for i in range(N):
        await s.scan(payloads[i % len(payloads)])
    return (time.perf_counter() - began) / N * 1e6

async def rounds():
    figures = {{"in_process": [], "isolated": []}}
    for _ in range(ROUNDS):
        figures["in_process"].append(await per_scan_us(in_process))
        figures["isolated"].append(await per_scan_us(isolated))
    return {{name: statistics.median(values) for name, values in figures.items()}}

figures = asyncio.run(rounds())
figures["start_ms"] = start_ms
print(json.dumps(figures))
"""

#: (label, worker, payload size, scans per round)
CASES = [
    ("no-op worker, 64 B payload", "noop", 64, 2000),
    ("no-op worker, 4 KiB payload", "noop", 4096, 2000),
    ("no-op worker, 1 MiB payload", "noop", 1 << 20, 200),
    ("`hash`, 4 KiB payload", "hash", 4096, 2000),
]


def bench_isolation() -> list[str]:
    rows = []
    starts = []
    for label, worker, size, count in CASES:
        code = ISOLATION.format(count=count, size=size, rounds=5, worker=worker)
        r = median_of(lambda code=code: child(code))
        starts.append(r["start_ms"])
        rows.append(
            f"| isolate = true: one scan, {label} | {r['isolated']:,.0f} us/scan "
            f"| {r['in_process']:,.1f} us/scan in-process (same run) "
            f"| +{r['isolated'] - r['in_process']:,.0f} us per call isolated |"
        )
    starts.sort()
    rows.append(
        f"| isolate = true: a new plugin process ready (load, or after a kill or recycle) "
        f"| {starts[len(starts) // 2]:,.0f} ms | | paid once per process, not per call |"
    )
    return rows


if __name__ == "__main__":
    for row in bench_isolation():
        print(row, flush=True)
