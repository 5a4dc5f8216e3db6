"""stoQ's benchmark suite: the framework beside a bare baseline doing the same work, in one run.

    nox -s bench                 # everything, writes bench/latest.md
    python bench/run.py small    # one section (small, scaling, large, recursion, directory, cli,
                                 # redis, isolation, cache, jobs)

Each measurement runs in its own subprocess (so peak RSS is that measurement's alone), repeats
a few times, and reports the median. Nothing here asserts a speed: it prints figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
REPEATS = 3

#: Code run in a child process; it prints one JSON object of figures.
PRELUDE = """
import asyncio, hashlib, json, os, resource, sys, time
from stoq_core import Stoq, Payload, Request, RequestMeta, PayloadMeta

def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def bare_hashes(data):
    hashlib.md5(data).hexdigest(); hashlib.sha1(data).hexdigest(); hashlib.sha256(data).hexdigest()
"""


def child(code: str, timeout: float = 900) -> dict[str, float]:
    """Run ``code`` (after PRELUDE) in a fresh interpreter; return the JSON it prints last."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", PRELUDE + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"benchmark child failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(run: Callable[[], dict[str, float]], repeats: int = REPEATS) -> dict[str, float]:
    runs = [run() for _ in range(repeats)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


# -- 1. small payloads ------------------------------------------------------------------------

SMALL = """
import statistics
N, SIZE, ROUNDS = {count}, 4096, {rounds}
payloads = [os.urandom(SIZE) for _ in range(N)]
s = Stoq(always_dispatch=["hash"], log_dir=None)

def bare():
    began = time.perf_counter()
    for data in payloads:
        bare_hashes(data)
    return N / (time.perf_counter() - began)
async def sequential():
    began = time.perf_counter()
    for data in payloads:
        await s.scan(data)
    return N / (time.perf_counter() - began)
async def concurrent(width=64):
    began = time.perf_counter()
    for i in range(0, N, width):
        await asyncio.gather(*(s.scan(d) for d in payloads[i:i + width]))
    return N / (time.perf_counter() - began)
async def rounds():
    # Interleaved, so that a slow spell of this shared machine hits the baseline too.
    figures = {{"bare": [], "sequential": [], "concurrent": [], "overhead_us": []}}
    for _ in range(ROUNDS):
        b, seq, conc = bare(), await sequential(), await concurrent()
        figures["bare"].append(b)
        figures["sequential"].append(seq)
        figures["concurrent"].append(conc)
        figures["overhead_us"].append((1 / seq - 1 / b) * 1e6)
    return {{name: statistics.median(values) for name, values in figures.items()}}
print(json.dumps(asyncio.run(rounds())))
"""


def bench_small() -> list[str]:
    r = median_of(lambda: child(SMALL.format(count=20_000, rounds=5)))
    return [
        "| small payloads: 20,000 x 4 KiB, `-a hash`, sequential | "
        f"{r['sequential']:,.0f} payloads/s | {r['bare']:,.0f}/s bare md5+sha1+sha256 | "
        f"{r['bare'] / r['sequential']:.2f}x bare; framework {r['overhead_us']:.1f} us/payload |",
        "| small payloads: 20,000 x 4 KiB, `-a hash`, 64 concurrent | "
        f"{r['concurrent']:,.0f} payloads/s | {r['bare']:,.0f}/s | "
        f"{r['bare'] / r['concurrent']:.2f}x bare |",
    ]


def bench_scaling() -> list[str]:
    rows = []
    for factor in (1, 4, 16):
        count = 1250 * factor
        r = median_of(lambda count=count: child(SMALL.format(count=count, rounds=5)))
        rows.append(
            f"| scaling: {count:,} x 4 KiB (x{factor}), sequential | {r['sequential']:,.0f} payloads/s "
            f"| {r['bare']:,.0f}/s bare | {count / r['sequential']:.3f} s total |"
        )
    for factor in (1, 4, 16):
        mib = 16 * factor
        r = median_of(lambda mib=mib: child(LARGE_MEMORY.format(mib=mib, workers=["hash"])))
        rows.append(
            f"| scaling: one {mib} MiB payload (x{factor}), `-a hash` | {r['framework']:,.0f} MB/s "
            f"| {r['bare']:,.0f} MB/s bare (serial) | {mib * 1.048576 / r['framework']:.3f} s total |"
        )
    return rows


# -- 2. large payloads ------------------------------------------------------------------------

LARGE_MEMORY = """
SIZE = {mib} << 20
data = os.urandom(1 << 20) * {mib}
workers = {workers!r}
baseline_rss = peak_rss_mib()
began = time.perf_counter()
bare_hashes(data)
if "yara" in workers:
    import yara
    from stoq_plugin_yara import plugin as yp
    rules = yara.compile(filepath=str(yp.DEFAULT_WORKER_RULES))
    rules.match(data=data)
bare = SIZE / (time.perf_counter() - began) / 1e6
s = Stoq(always_dispatch=workers, log_dir=None)
began = time.perf_counter()
asyncio.run(s.scan(data))
framework = SIZE / (time.perf_counter() - began) / 1e6
print(json.dumps({{"bare": bare, "framework": framework, "rss": peak_rss_mib(), "data_rss": baseline_rss}}))
"""

LARGE_FILE = """
path, workers = {path!r}, {workers!r}
size = os.path.getsize(path)
if "yara" in workers:
    import yara
    from stoq_plugin_yara import plugin as yp
    rules = yara.compile(filepath=str(yp.DEFAULT_WORKER_RULES))
began = time.perf_counter()
with open(path, "rb") as f:
    for h in (hashlib.md5(), hashlib.sha1(), hashlib.sha256()):
        f.seek(0)
        while chunk := f.read(1 << 20):
            h.update(chunk)
if "yara" in workers:
    rules.match(filepath=path)
bare = size / (time.perf_counter() - began) / 1e6
print(json.dumps({{"bare": bare}}))
"""


def bench_large() -> list[str]:
    rows = []
    for workers in (["hash"], ["hash", "yara"]):
        r = median_of(lambda workers=workers: child(LARGE_MEMORY.format(mib=256, workers=workers)))
        rows.append(
            f"| one 256 MiB payload in memory, `-a {' '.join(workers)}` | {r['framework']:,.0f} MB/s "
            f"| {r['bare']:,.0f} MB/s bare (serial) | {r['framework'] / r['bare']:.2f}x bare; "
            f"peak RSS {r['rss']:,.0f} MiB |"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.bin"
        with open(path, "wb") as out:
            block = os.urandom(1 << 20)
            for _ in range(1024):
                out.write(block)
        for workers in (["hash"], ["hash", "yara"]):
            bare = median_of(
                lambda workers=workers: child(LARGE_FILE.format(path=str(path), workers=workers))
            )["bare"]
            cli = median_of(lambda workers=workers: _cli_scan(path, workers))
            size_mb = path.stat().st_size / 1e6
            what = "hashes read buffered" + (", then yara" if "yara" in workers else "")
            rows.append(
                f"| one 1 GiB file from disk, `stoq scan FILE -s {' -s '.join(workers)}` | "
                f"{size_mb / cli['seconds']:,.0f} MB/s | {bare:,.0f} MB/s bare ({what}, serial) | "
                f"{size_mb / cli['seconds'] / bare:.2f}x bare; peak RSS {cli['rss']:,.0f} MiB |"
            )
    return rows


def _cli_scan(path: Path, workers: list[str]) -> dict[str, float]:
    stoq = shutil.which("stoq") or "stoq"
    args = [stoq, "scan", str(path), "--compact"]
    for worker in workers:
        args += ["-s", worker]
    wrapper = (
        "import resource, subprocess, sys, time, json;"
        "t=time.perf_counter(); p=subprocess.run(sys.argv[1:], capture_output=True);"
        "el=time.perf_counter()-t;"
        "print(json.dumps({'seconds': el, 'rc': p.returncode,"
        "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))"
    )
    with tempfile.TemporaryDirectory() as home:
        # The file is larger than the default max_payload_size (256 MiB), which stoq would
        # refuse to read: allow it, as a user scanning such files would.
        Path(home, "stoq.cfg").write_text("[core]\nmax_payload_size = 2147483648\n")
        env = {**os.environ, "STOQ_HOME": home}
        out = subprocess.run(
            [sys.executable, "-c", wrapper, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
    result = json.loads(out.stdout)
    if result["rc"] != 0:  # 1 would mean an Error in the response: nothing to time
        raise RuntimeError(f"stoq scan failed ({result['rc']})")
    return result


# -- 3. recursion -----------------------------------------------------------------------------

RECURSION = """
import io, zipfile
def zip_of(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()
kind = {kind!r}
if kind == "wide":
    archive = zip_of([(f"f{{i}}.txt", os.urandom(512)) for i in range(1000)])
else:
    archive = os.urandom(512)
    for level in range(5):
        archive = zip_of([(f"level{{level}}.bin", archive), (f"side{{level}}.txt", os.urandom(256))])
s = Stoq(always_dispatch=["hash", "decompress"], log_dir=None, max_recursion=12)
async def scans(times):
    # The median of several scans in one event loop (a loop's start is not a payload's cost).
    runs = []
    for _ in range(times):
        began = time.perf_counter()
        response = await s.scan(archive)
        runs.append(time.perf_counter() - began)
    return response, sorted(runs)[len(runs) // 2]
response, elapsed = asyncio.run(scans(5 if kind == "wide" else 51))
count = len(response.results)
# Bare: the same members read with zipfile and hashed, no framework.
began = time.perf_counter()
stack, bare_count = [archive], 0
while stack:
    data = stack.pop(); bare_count += 1; bare_hashes(data)
    if data[:4] == b"PK\\x03\\x04":  # (a random member may start with b"PK")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                stack.extend(z.read(n) for n in z.namelist())
        except zipfile.BadZipFile:
            pass
bare = bare_count / (time.perf_counter() - began)
print(json.dumps({{"rate": count / elapsed, "count": count, "bare": bare, "errors": len(response.errors)}}))
"""


def bench_recursion() -> list[str]:
    rows = []
    for kind, label in (("wide", "a zip of 1,000 small files"), ("deep", "a zip nested 5 deep")):
        r = median_of(lambda kind=kind: child(RECURSION.format(kind=kind)))
        rows.append(
            f"| {label}, `-a hash decompress` ({r['count']:.0f} payloads) | {r['rate']:,.0f} payloads/s "
            f"| {r['bare']:,.0f}/s bare zipfile+hashlib | {r['bare'] / r['rate']:.2f}x bare |"
        )
    return rows


# -- 4. a directory through stoq run ------------------------------------------------------------


def bench_directory() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        source, results = Path(tmp) / "in", Path(tmp) / "out"
        source.mkdir()
        for i in range(10_000):
            (source / f"f{i:05d}.bin").write_bytes(os.urandom(1024))
        stoq = shutil.which("stoq") or "stoq"

        def once(*extra: str) -> dict[str, float]:
            shutil.rmtree(results, ignore_errors=True)
            began = time.perf_counter()
            subprocess.run(
                [
                    stoq,
                    "run",
                    "-P",
                    "filedir",
                    "-C",
                    "filedir",
                    "-a",
                    "hash",
                    "--plugin-opts",
                    f"filedir:source_dir={source}",
                    f"filedir:results_dir={results}",
                    *extra,
                ],
                check=True,
                capture_output=True,
                timeout=900,
                env={**os.environ, "STOQ_HOME": str(Path(tmp) / "home")},
            )
            elapsed = time.perf_counter() - began
            return {"rate": 10_000 / elapsed, "files": len(list(results.iterdir()))}

        def bare(fsync: bool) -> dict[str, float]:
            # What a careful hand-written loop does for the same output: read, hash, write the
            # JSON to a temporary file renamed to a uuid4 name (as the connector names results
            # by scan_id; random names cost more to create than sequential ones on ext4).
            shutil.rmtree(results, ignore_errors=True)
            results.mkdir()
            began = time.perf_counter()
            for path in sorted(source.iterdir()):
                data = path.read_bytes()
                text = json.dumps({"md5": hashlib.md5(data).hexdigest(),
                                   "sha1": hashlib.sha1(data).hexdigest(),
                                   "sha256": hashlib.sha256(data).hexdigest(),
                                   "filename": path.name, "size": len(data)})  # fmt: skip
                name = str(uuid.uuid4())
                temporary = results / f".{name}.tmp"
                with open(temporary, "w") as handle:
                    handle.write(text)
                    if fsync:
                        handle.flush()
                        os.fsync(handle.fileno())
                os.replace(temporary, results / name)
                if fsync:
                    directory = os.open(results, os.O_RDONLY)
                    os.fsync(directory)
                    os.close(directory)
            return {"rate": 10_000 / (time.perf_counter() - began)}

        # Interleaved, so that a slow spell of this shared machine hits the baselines too.
        runs: dict[str, list[dict[str, float]]] = {"r": [], "b": [], "fast": [], "b_fast": []}
        for _ in range(REPEATS):
            runs["r"].append(once())
            runs["b"].append(bare(True))
            runs["fast"].append(once("filedir:fsync=false"))
            runs["b_fast"].append(bare(False))
        r, b, fast, b_fast = (
            {key: statistics.median(run[key] for run in runs[kind]) for key in runs[kind][0]}
            for kind in ("r", "b", "fast", "b_fast")
        )
        return [
            f"| 10,000 files of 1 KiB, `stoq run -P filedir -C filedir -a hash` | {r['rate']:,.0f} files/s "
            f"| {b['rate']:,.0f}/s bare read+hash+atomic write, fsynced | {r['files']:,.0f} result files, "
            "each fsynced with its directory |",
            f"| the same with `--plugin-opts filedir:fsync=false` | {fast['rate']:,.0f} files/s "
            f"| {b_fast['rate']:,.0f}/s the same bare loop without fsync | writes still atomic |",
        ]


# -- 5. CLI start -----------------------------------------------------------------------------


def bench_cli() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.txt"
        small.write_text("hello stoq\n")
        stoq = shutil.which("stoq") or "stoq"
        env = {**os.environ, "STOQ_HOME": str(Path(tmp) / "home")}

        def timed(args: list[str]) -> float:
            runs = []
            for _ in range(7):
                began = time.perf_counter()
                subprocess.run(args, check=False, capture_output=True, env=env, timeout=60)
                runs.append(time.perf_counter() - began)
            return statistics.median(runs) * 1000

        # The first run in a new $STOQ_HOME writes its entry-point index; time the runs after.
        subprocess.run([stoq, "scan", str(small), "-s", "hash"], capture_output=True, env=env)
        scan = timed([stoq, "scan", str(small), "-s", "hash"])
        bare = timed([sys.executable, "-c", "pass"])
        # The floor for any command built on the project's stack: importing it and nothing else.
        stack = timed([sys.executable, "-c", "import asyncio, attrs, click, pluggy"])
        return [
            f"| CLI start: `stoq scan SMALLFILE -s hash` | {scan:,.0f} ms | {bare:,.0f} ms "
            f"`python -c pass`; {stack:,.0f} ms importing asyncio, attrs, click and pluggy | "
            f"{scan - stack:,.0f} ms more than importing the stack |"
        ]


# -- 6. Redis Streams ---------------------------------------------------------------------------


def bench_redis() -> list[str]:
    """20,000 small payloads through ``-P redis -C redis -a hash``: 1, then 2 worker processes.

    The measuring is ``packages/stoq-plugin-redis/bench_redis.py`` (its own redis-server; the
    worker counts interleaved, medians of REPEATS runs); this turns its figures into rows.
    """
    script = HERE.parent / "packages" / "stoq-plugin-redis" / "bench_redis.py"
    done = subprocess.run(
        [sys.executable, str(script), "--json", "--repeats", str(REPEATS)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench_redis.py failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        "| Redis Streams: 20,000 x 256 B, `stoq run -P redis -C redis -a hash`, 1 worker process | "
        f"{r['rate_1']:,.0f} payloads/s | {r['no_redis_rate']:,.0f}/s the same scans without Redis | "
        f"CPU per payload: worker {r['worker_cpu_us_1']:.0f} us, redis-server "
        f"{r['redis_cpu_us_1']:.0f} us |",
        "| Redis Streams: the same, 2 worker processes (2 cores, shared with redis-server) | "
        f"{r['rate_2']:,.0f} payloads/s | {r['cpu_scaling']:.2f}x: 2 processes of a Python loop "
        f"vs 1 | {r['ratio']:.2f}x 1 process; CPU-bound ceiling {r['ceiling']:.2f}x |",
    ]


# -- 7. the result cache -------------------------------------------------------------------------

# The bench's workers, published as a distribution's entry points (the path any plugin takes).
CACHE_PLUGINS = '''
import time
from stoq_core import WorkerResponse, hookimpl

class Slow:
    """About 10 ms of CPU a payload, the cost the cache is for."""
    def __init__(self, config):
        pass
    @hookimpl
    async def scan(self, payload, request):
        end = time.perf_counter() + 0.010
        while time.perf_counter() < end:
            pass
        return WorkerResponse({"size": len(payload.content)})

class Cheap:
    """Next to nothing a payload: what is left is the framework's, and the cache's, cost."""
    def __init__(self, config):
        pass
    @hookimpl
    async def scan(self, payload, request):
        return WorkerResponse({"size": len(payload.content)})
'''

CACHE = """
import shutil, statistics, sys, tempfile
from pathlib import Path
tmp = Path(tempfile.mkdtemp())
site = tmp / "site"
info = site / "stoq_bench_cache-1.0.dist-info"
info.mkdir(parents=True)
(info / "METADATA").write_text("Metadata-Version: 2.1\\nName: stoq-bench-cache\\nVersion: 1.0\\n")
(info / "entry_points.txt").write_text(
    "[stoq.plugins]\\nslow = bench_cache_plugins:Slow\\ncheap = bench_cache_plugins:Cheap\\n"
)
(site / "bench_cache_plugins.py").write_text({plugins!r})
sys.path.insert(0, str(site))
corpus = tmp / "corpus"
corpus.mkdir()
for i in range({files}):
    (corpus / f"f{{i:04d}}").write_bytes(os.urandom(4096))
files = sorted(corpus.iterdir())

def stoq(home, cache):
    return Stoq(base_dir=str(tmp / home), log_dir=None, plugin_dir_list=[], cache=cache)

async def scan_all(s, worker, contents=None):
    began = time.perf_counter()
    for data in contents if contents is not None else (f.read_bytes() for f in files):
        response = await s.scan(data, add_start_dispatch=[worker])
        assert not response.errors, response.errors
    return time.perf_counter() - began, response

async def main():
    # The corpus twice with the slow worker: the second scan is all hits (a new Stoq, as a
    # second run would be).
    first, response = await scan_all(stoq("slow", "local"), "slow")
    assert response.results[0].cached is None
    second, response = await scan_all(stoq("slow", "local"), "slow")
    assert response.results[0].cached
    # The cost of a miss (a lookup, then a store) and of a hit, with a worker that costs
    # next to nothing, against the same scans without the cache; interleaved.
    n = {misses}
    runs = {{"off": [], "miss": [], "hit": []}}
    for round in range(3):
        contents = [os.urandom(4096) for _ in range(n)]
        runs["off"].append((await scan_all(stoq("off", "off"), "cheap", contents))[0])
        home = f"cheap{{round}}"
        runs["miss"].append((await scan_all(stoq(home, "local"), "cheap", contents))[0])
        runs["hit"].append((await scan_all(stoq(home, "local"), "cheap", contents))[0])
    off, miss, hit = (statistics.median(runs[k]) for k in ("off", "miss", "hit"))
    shutil.rmtree(tmp)
    return {{
        "first": first, "second": second, "speedup": first / second,
        "off_us": off / n * 1e6, "miss_us": (miss - off) / n * 1e6, "hit_us": (hit - off) / n * 1e6,
    }}
print(json.dumps(asyncio.run(main())))
"""


def bench_cache() -> list[str]:
    """The result cache: a corpus scanned twice with a slow worker, and a miss's cost."""
    files, misses = 1000, 5000
    r = median_of(lambda: child(CACHE.format(plugins=CACHE_PLUGINS, files=files, misses=misses)))
    return [
        f"| result cache: {files:,} files of 4 KiB scanned twice, `-s slow` (10 ms of CPU a "
        f"payload), `cache = local` | second scan {r['second']:.3f} s ({files / r['second']:,.0f} "
        f"files/s) | first scan (all misses) {r['first']:.2f} s | {r['speedup']:.0f}x faster |",
        f"| result cache: cost per payload, {misses:,} x 4 KiB, `-s cheap` (a worker costing "
        f"next to nothing) | miss (lookup + store) +{r['miss_us']:.0f} us; hit "
        f"{r['hit_us']:+.0f} us | {r['off_us']:.0f} us/payload the same scans, cache off | "
        "sqlite in WAL mode: one lookup per scan round, writes 100 at a time |",
    ]


# -- every core: --jobs --------------------------------------------------------------------------


def bench_jobs() -> list[str]:
    """``--jobs 2`` against ``--jobs 1``, 10,000 files of 4 KiB, for ``stoq scan DIR`` and for
    ``stoq run -P filedir``.

    ``stoq scan``: the whole command is timed, start-up included (the workers' too), as a user
    waits for it; each also scans a second directory of 10,000 after the first: the time the
    second adds is the steady rate, the start-up taken out. The start-up itself (``stoq scan``
    of one file) is timed too: no number of processes shortens it, so it sets the best the
    whole command could do with perfect sharing, ``T1 / (start + (T1 - start) / 2)``.

    ``stoq run -P filedir``: the provider (reading the files) runs in the parent and each
    request is scanned in a worker, with ``-a hash`` (scanning costs less than ingesting) and
    ``-a hash,yara`` (scanning costs more).
    """
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "first", Path(tmp) / "second"
        for directory in (first, second):
            directory.mkdir()
            for i in range(10_000):
                (directory / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
        one = Path(tmp) / "one.bin"
        one.write_bytes(os.urandom(4096))
        stoq = shutil.which("stoq") or "stoq"
        env = {**os.environ, "STOQ_HOME": str(Path(tmp) / "home")}
        results = Path(tmp) / "results.jsonl"

        def seconds(args: list[str], lines: int) -> float:
            with results.open("wb") as out:
                began = time.perf_counter()
                subprocess.run(
                    [stoq, *args], check=True, stdout=out, stderr=subprocess.PIPE, timeout=900,
                    env=env,
                )  # fmt: skip
                elapsed = time.perf_counter() - began
            printed = results.read_bytes().count(b"\n")
            if printed != lines:
                raise RuntimeError(f"stoq {' '.join(args)} printed {printed} responses")
            return elapsed

        def scan(jobs: int, *directories: Path) -> float:
            args = ["scan", *map(str, directories), "-a", "hash", "--jobs", str(jobs)]
            return seconds(args, 10_000 * len(directories))

        def run(jobs: int, workers: str) -> float:
            args = ["run", "-P", "filedir", "--plugin-opts", f"filedir:source_dir={first}"]
            return seconds([*args, "-a", workers, "--jobs", str(jobs)], 10_000)

        scan(1, first)  # the first run in a new $STOQ_HOME writes its entry-point index
        # Interleaved, so that a slow spell of this shared machine hits both.
        whole: dict[int, list[float]] = {1: [], 2: []}
        added: dict[int, list[float]] = {1: [], 2: []}
        start: list[float] = []
        ran: dict[tuple[str, int], list[float]] = {}
        for _ in range(max(REPEATS, 5)):
            start.append(seconds(["scan", str(one), "-a", "hash", "--compact"], 1))
            for jobs in (1, 2):
                alone = scan(jobs, first)
                both = scan(jobs, first, second)
                whole[jobs].append(alone)
                added[jobs].append(max(both - alone, 1e-9))
                for workers in ("hash", "hash,yara"):
                    ran.setdefault((workers, jobs), []).append(run(jobs, workers))
        w1, w2, a1, a2 = (
            statistics.median(runs[jobs]) for runs in (whole, added) for jobs in (1, 2)
        )
        up = statistics.median(start)
        best = w1 / (up + (w1 - up) / 2)
        rows = [
            "| every core: `stoq scan DIR -a hash --jobs 2`, 10,000 files of 4 KiB, whole command | "
            f"{10_000 / w2:,.0f} files/s | {10_000 / w1:,.0f} files/s `--jobs 1` (one process) | "
            f"{w1 / w2:.2f}x `--jobs 1` ({os.cpu_count()} CPUs); start-up included: "
            f"{up * 1000:.0f} ms that no number of processes shortens, so at best "
            f"{best:.2f}x |",
            "| the same, steady rate (what 10,000 more files add, start-up taken out) | "
            f"{10_000 / a2:,.0f} files/s | {10_000 / a1:,.0f} files/s `--jobs 1` | "
            f"{a1 / a2:.2f}x `--jobs 1` |",
        ]
        for workers in ("hash", "hash,yara"):
            r1, r2 = (statistics.median(ran[workers, jobs]) for jobs in (1, 2))
            rows.append(
                f"| every core: `stoq run -P filedir -a {workers} --jobs 2`, the same 10,000 "
                f"files, whole command | {10_000 / r2:,.0f} files/s | {10_000 / r1:,.0f} "
                f"files/s `--jobs 1` | {r1 / r2:.2f}x `--jobs 1` |"
            )
        return rows


def bench_isolation() -> list[str]:
    """``isolate = true`` against in-process: see ``isolation.py``."""
    from isolation import bench_isolation as rows  # beside this file

    return rows()


SECTIONS: dict[str, Callable[[], list[str]]] = {
    "small": bench_small,
    "scaling": bench_scaling,
    "large": bench_large,
    "recursion": bench_recursion,
    "directory": bench_directory,
    "cli": bench_cli,
    "redis": bench_redis,
    "isolation": bench_isolation,
    "jobs": bench_jobs,
    "cache": bench_cache,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=", ".join(SECTIONS))
    parser.add_argument("--output", default=str(HERE / "latest.md"))
    args = parser.parse_args()
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    args.sections = args.sections or list(SECTIONS)
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; medians of {REPEATS} runs.",
        "",
        "| benchmark | stoQ | bare baseline (same run) | ratio / notes |",
        "|---|---|---|---|",
    ]
    for name in args.sections:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows = SECTIONS[name]()
        except Exception as exc:  # one failed section should not lose the others' figures
            print(f"{name} failed: {exc}", file=sys.stderr, flush=True)  # the whole story
            rows = [f"| {name} | failed: {str(exc).splitlines()[0][:120]} | | |"]
        for row in rows:
            print(row, flush=True)
        lines.extend(rows)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
