"""A stoQ v3 program, written the way the v3 "Framework" documentation shows, step by step.

Run from a directory holding ``plugins/`` (v3's default: ``$CWD/plugins``) and ``bad.exe``:

    python v3_program.py RESULTS_DIR RUN_RESULTS_DIR INCOMING_DIR

It prints one JSON line summing up what each step gave, for the test to check.
"""

import asyncio
import json
import os
import sys

from stoq import Payload, Request, RequestMeta, Stoq
from stoq.data_classes import PayloadMeta


def main() -> None:
    results_dir, run_results_dir, incoming_dir = sys.argv[1:4]
    summary = {}
    # The v3 docs call asyncio.get_event_loop() at top level; newer Pythons want a loop set first.
    asyncio.set_event_loop(asyncio.new_event_loop())

    # Individual Scan
    workers = ["carve"]
    s = Stoq(always_dispatch=workers)
    src = "bad.exe"
    loop = asyncio.get_event_loop()
    with open(src, "rb") as src_payload:
        meta = RequestMeta(extra_data={"filename": src})
        results = loop.run_until_complete(s.scan(content=src_payload.read(), request_meta=meta))
    summary["individual"] = json.loads(str(results))

    # Manual Interaction: instantiate, load a plugin, build a Payload, scan a Request
    s = Stoq(plugin_opts={"jsonfile": {"results_dir": results_dir}})
    plugin = s.load_plugin("carve")
    summary["load_plugin"] = {"plugin_name": plugin.plugin_name, "class": type(plugin).__name__}

    filename = os.path.abspath("bad.exe")
    with open(filename, "rb") as src:
        meta = PayloadMeta(
            extra_data={
                "filename": os.path.basename(filename),
                "source_dir": os.path.dirname(filename),
            }
        )
        payload = Payload(src.read(), meta)

    start_dispatch = ["carve"]
    raw = loop.run_until_complete(s.scan("raw bytes", add_start_dispatch=start_dispatch))
    summary["raw_bytes"] = json.loads(str(raw))

    request = Request(payloads=[payload], request_meta=RequestMeta())
    results = loop.run_until_complete(s.scan_request(request, add_start_dispatch=start_dispatch))
    summary["scan_request"] = json.loads(str(results))

    # Save Results
    connector = s.load_plugin("jsonfile")
    loop.run_until_complete(connector.save(results))
    summary["saved"] = sorted(os.listdir(results_dir))

    # Split Results
    split_results = results.split()
    summary["split"] = [list(piece["results"][0]["workers"]) for piece in split_results]

    # Reconstructing Subresponse Results
    async def reconstruct() -> list:
        subresponses = []
        async for result in s.reconstruct_all_subresponses(results):
            subresponses.append(json.loads(str(result)))
        return subresponses

    summary["subresponses"] = loop.run_until_complete(reconstruct())

    # Using Providers
    s = Stoq(
        base_dir=os.getcwd(),
        plugin_dir_list=[os.path.join(os.getcwd(), "plugins")],
        dispatchers=["route"],
        providers=["feed"],
        connectors=["jsonfile"],
        decorators=["stamp"],
        plugin_opts={
            "feed": {"source_dir": incoming_dir},
            "jsonfile": {"results_dir": run_results_dir},
        },
        always_dispatch=["report"],
    )
    loop.run_until_complete(s.run())
    summary["run"] = []
    for name in sorted(os.listdir(run_results_dir)):
        with open(os.path.join(run_results_dir, name)) as saved:
            summary["run"].append(json.load(saved))

    print(json.dumps(summary))


if __name__ == "__main__":
    main()
