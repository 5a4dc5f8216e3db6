"""stoQ's Redis plugin: a Redis Streams work queue, a results store and a payload store.

The plugin class is ``stoq_plugin_redis.plugin.RedisPlugin`` (entry point ``redis``); the
functions here submit tasks and read results, for scripts and for the ``stoq submit`` and
``stoq results`` commands (``stoq_plugin_redis.commands``, ``stoq.commands`` entry points).
"""

from stoq_plugin_redis.client import (
    DEFAULT_INLINE_LIMIT,
    DEFAULT_RESULTS_STREAM,
    DEFAULT_STREAM,
    DEFAULT_URL,
    Outcome,
    WaitTimeout,
    results,
    submit,
    wait,
)

__version__ = "1.0.0"

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_RESULTS_STREAM",
    "DEFAULT_STREAM",
    "DEFAULT_URL",
    "Outcome",
    "WaitTimeout",
    "__version__",
    "results",
    "submit",
    "wait",
]
