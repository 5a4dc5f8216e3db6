"""A stoQ worker process for the fault tests: ``python run_worker.py '<json config>'``.

The config: ``url``, ``base_dir``, and optionally ``redis`` (more options of the redis plugin),
``always_dispatch``, ``connectors``, ``plugin_opts`` and ``provider_consumers``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from stoq_core import Stoq


def main() -> None:
    config = json.loads(sys.argv[1])
    plugin_opts = config.get("plugin_opts", {})
    plugin_opts["redis"] = {
        "url": config["url"],
        "claim_idle": 1,
        "stop_when_idle": 2,
        **config.get("redis", {}),
    }
    stoq = Stoq(
        base_dir=config["base_dir"],
        log_dir=None,
        log_level="WARNING",
        plugin_dir_list=[],
        plugin_opts=plugin_opts,
        providers=["redis"],
        connectors=config.get("connectors", ["redis"]),
        always_dispatch=config.get("always_dispatch", []),
        provider_consumers=config.get("provider_consumers", 2),
    )
    asyncio.run(stoq.run())


if __name__ == "__main__":
    main()
