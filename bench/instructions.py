"""Instructions per scan, counted by valgrind: a figure this noisy machine cannot blur.

Wall-clock figures here move by a third from one minute to the next; instruction counts move by
well under 1%, so they decide between two versions of a hot path where timings cannot.

    apt-get install valgrind   # not installed by the project: this is a developer's tool
    python bench/instructions.py

Each case runs twice under ``valgrind --tool=callgrind``, with 0 and with N scans; the difference
divided by N is the cost of one scan, start-up excluded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

CASES = {
    "no-op worker, 64-byte payload (the framework alone)": """
        class Noop:
            @hookimpl
            async def scan(self, payload, request):
                return None
        stoq = Stoq(log_dir=None)
        stoq.plugins.register("noop", Noop())
        stoq.always_dispatch = ["noop"]
        payloads = [os.urandom(64) for _ in range(100)]
    """,
    "-a hash, 64-byte payload": """
        stoq = Stoq(always_dispatch=["hash"], log_dir=None)
        payloads = [os.urandom(64) for _ in range(100)]
    """,
    "bare md5+sha1+sha256 of a 64-byte payload (no stoQ)": None,
}

SCANS = """
import asyncio, hashlib, os, sys
from stoq_core import Stoq, hookimpl
{setup}
async def main(count):
    for i in range(count):
        await stoq.scan(payloads[i % 100])
asyncio.run(main(int(sys.argv[1])))
"""

BARE = """
import hashlib, os, sys
payloads = [os.urandom(64) for _ in range(100)]
for i in range(int(sys.argv[1])):
    data = payloads[i % 100]
    {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
     "sha1": hashlib.sha1(data).hexdigest()}
"""

COUNT = 3000


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
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        for title, setup in CASES.items():
            code = BARE if setup is None else SCANS.format(setup=textwrap.dedent(setup))
            script = os.path.join(tmp, "case.py")
            with open(script, "w") as handle:
                handle.write(code)
            per_scan = (instructions(script, COUNT) - instructions(script, 0)) / COUNT
            print(f"{per_scan:>10,.0f} instructions  {title}")


if __name__ == "__main__":
    main()
