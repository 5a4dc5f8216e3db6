"""Instructions per scan, counted by valgrind: a figure this noisy machine cannot blur.

Wall-clock figures here move by a third from one minute to the next; instruction counts move by
well under 1%, so they decide between two versions of a hot path where timings cannot.

    apt-get install valgrind   # not installed by the project: this is a developer's tool
    python bench/instructions.py

Each case runs twice under ``valgrind --tool=callgrind``, with 0 and with N scans; the difference
divided by the payloads those scans held is the cost of one payload, start-up excluded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

# Each script takes the number of scans to run as its argument.
SCANS = """
import asyncio, hashlib, io, os, sys, zipfile
from stoq_core import Stoq, hookimpl
{setup}
async def main(count):
    for i in range(count):
        await stoq.scan(payloads[i % len(payloads)])
asyncio.run(main(int(sys.argv[1])))
"""

NOOP = """
class Noop:
    @hookimpl
    async def scan(self, payload, request):
        return None
stoq = Stoq(log_dir=None)
stoq.plugins.register("noop", Noop())
stoq.always_dispatch = ["noop"]
payloads = [os.urandom(64) for _ in range(100)]
"""

HASH = """
stoq = Stoq(always_dispatch=["hash"], log_dir=None)
payloads = [os.urandom(64) for _ in range(100)]
"""

BARE = """
import hashlib, os, sys
payloads = [os.urandom(64) for _ in range(100)]
for i in range(int(sys.argv[1])):
    data = payloads[i % 100]
    {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
     "sha1": hashlib.sha1(data).hexdigest()}
"""

# A zip of 1,000 members of 512 random bytes, the recursion benchmark's wide case.
ZIP = """
import io, os, random, zipfile
random.seed(1)
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    for i in range(1000):
        archive.writestr("f%d.txt" % i, random.randbytes(512))
"""

ZIP_SCAN = f"""{ZIP}
stoq = Stoq(always_dispatch=["hash", "decompress"], log_dir=None, max_recursion=12)
payloads = [buffer.getvalue()]
"""

ZIP_BARE = f"""
import hashlib, sys
{ZIP}
def scan(data):
    {{"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
     "sha1": hashlib.sha1(data).hexdigest()}}
    if data.startswith(b"PK\\x03\\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                scan(archive.read(info))
for _ in range(int(sys.argv[1])):
    scan(buffer.getvalue())
"""

#: title: (script, scans, payloads per scan)
CASES = {
    "no-op worker, 64-byte payload (the framework alone)": (SCANS.format(setup=NOOP), 3000, 1),
    "-a hash, 64-byte payload": (SCANS.format(setup=HASH), 3000, 1),
    "bare md5+sha1+sha256 of a 64-byte payload (no stoQ)": (BARE, 3000, 1),
    "per payload of a zip of 1,000 members, -a hash decompress": (
        SCANS.format(setup=ZIP_SCAN),
        3,
        1001,
    ),
    "per payload of the same zip, bare zipfile+hashlib": (ZIP_BARE, 3, 1001),
}


def instructions(script: str, count: int) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            os.path.realpath(sys.executable),
            script,
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
        # str hashing is seeded at random per process, and dict and set layouts with it: the
        # same scan measured about 500 instructions apart from one run to the next without this.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "case.py")
        for title, (code, runs, payloads) in CASES.items():
            with open(script, "w") as handle:
                handle.write(code)
            per = (instructions(script, runs) - instructions(script, 0)) / (runs * payloads)
            print(f"{per:>10,.0f} instructions  {title}", flush=True)


if __name__ == "__main__":
    main()
