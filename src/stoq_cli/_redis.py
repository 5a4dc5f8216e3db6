"""``stoq submit`` and ``stoq results``: the command line of the Redis Streams work queue.

Both need the ``stoq-plugin-redis`` distribution, imported only when one of them runs, so the
rest of the CLI neither needs nor pays for it. Where Redis is: ``--url``, else ``url`` in the
``[redis]`` section of ``$STOQ_HOME/stoq.cfg`` (the section the workers read), else
``redis://127.0.0.1:6379/0``. The password: ``password`` in that section, else the URL's, else
``$STOQ_REDIS_PASSWORD``, else ``$REDIS_PASSWORD``.

stdout carries only data: task ids (``submit``) or results as JSON lines (``submit --wait``,
``results``); counts and failures go to stderr.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional

import attrs

from stoq_cli._engine import StoqHome
from stoq_cli._errors import EXIT_FAILED, EXIT_OK, CliError

__all__ = ["RedisTarget", "results_command", "submit_command"]

_SECTION = "redis"
_DEFAULT_URL = "redis://127.0.0.1:6379/0"


@attrs.frozen
class RedisTarget:
    """Where the queue is: the Redis and the names of its streams and keys."""

    url: str
    password: Optional[str] = None
    stream: Optional[str] = None
    results_stream: Optional[str] = None
    dead_letter_stream: Optional[str] = None
    key_prefix: Optional[str] = None

    @classmethod
    def resolve(
        cls,
        home: StoqHome,
        url: Optional[str] = None,
        stream: Optional[str] = None,
        results_stream: Optional[str] = None,
    ) -> RedisTarget:
        """The command line's values, else the ``[redis]`` section of stoq.cfg's, else defaults.

        :raises StoqException: stoq.cfg cannot be read or parsed.
        """
        section = _config_section(home)
        return cls(
            url=url or section.get("url") or _DEFAULT_URL,
            password=section.get("password") or None,
            stream=stream or section.get("stream") or None,
            results_stream=results_stream or section.get("results_stream") or None,
            dead_letter_stream=section.get("dead_letter_stream") or None,
            key_prefix=section.get("key_prefix") or None,
        )

    def kwargs(self, *names: str) -> dict[str, Any]:
        """Keyword arguments for ``stoq_plugin_redis.client``: those set, of ``names``."""
        values = attrs.asdict(self)
        return {name: values[name] for name in names if values[name] is not None}


def _config_section(home: StoqHome) -> dict[str, str]:
    # Read as the engine reads stoq.cfg (v3's ConfigParser: '%%' is a literal '%').
    from stoq_core.config import read_stoq_cfg

    return read_stoq_cfg(str(home.config_file)).get(_SECTION, {})


def _client_module(command: str) -> Any:
    """``stoq_plugin_redis.client``, or a one-line error saying how to install it."""
    try:
        # By name: the CLI does not depend on the package, nor its type check on its presence.
        return importlib.import_module("stoq_plugin_redis.client")
    except ModuleNotFoundError as exc:
        if exc.name not in ("stoq_plugin_redis", "redis") and not str(exc.name).startswith(
            ("stoq_plugin_redis.", "redis.")
        ):
            raise
        raise CliError(
            f"stoq {command} needs the stoq-plugin-redis package, which is not installed: "
            "run 'stoq install stoq-plugin-redis'"
        ) from None


def _print_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")  # as 'stoq run' prints its JSON lines
    sys.stdout.flush()


def submit_command(
    paths: Sequence[str],
    target: RedisTarget,
    wait: bool,
    timeout: Optional[float],
) -> int:
    """Run ``stoq submit``; returns the exit code."""
    client = _client_module("submit")
    from stoq_core import StoqException

    async def go() -> int:
        task_ids = await client.submit(
            list(paths), **target.kwargs("url", "password", "stream", "key_prefix")
        )
        if not task_ids:
            raise CliError(f"nothing to submit: no regular file under {', '.join(paths)}")
        where = target.stream or client.DEFAULT_STREAM
        print(f"stoq: submitted {len(task_ids)} task(s) to {where}", file=sys.stderr, flush=True)
        if not wait:
            sys.stdout.write("".join(f"{task_id}\n" for task_id in task_ids))
            sys.stdout.flush()
            return EXIT_OK
        return await _wait_for(client, task_ids, target, timeout)

    try:
        return asyncio.run(go())
    except StoqException as exc:
        raise CliError(str(exc)) from None


async def _wait_for(
    client: Any, task_ids: list[str], target: RedisTarget, timeout: Optional[float]
) -> int:
    """Print each result as it arrives; 1 if one holds errors, was dead-lettered or is late."""
    from stoq_core import StoqException

    failed = 0
    dead_letters = target.dead_letter_stream
    kwargs = target.kwargs("url", "password", "stream", "results_stream", "key_prefix")
    try:
        async for outcome in client.wait(
            task_ids, dead_letters=dead_letters, timeout=timeout, **kwargs
        ):
            if outcome.response is None:
                failed += 1
                print(
                    f"stoq: task {outcome.task_id} has no result: {outcome.error}",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            failed += bool(outcome.response.get("errors"))
            _print_line(outcome.response)
    except StoqException as exc:
        if "still have no result" not in str(exc):
            raise
        print(f"stoq: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


def results_command(target: RedisTarget, follow: bool, from_start: bool) -> int:
    """Run ``stoq results``; returns the exit code: 1 if an entry could not be read."""
    client = _client_module("results")
    from stoq_core import StoqException

    # Without --follow, everything stored; with it, only what arrives (unless --from-start).
    start = "$" if follow and not from_start else "0-0"
    skipped = 0

    def report(entry_id: str, why: str) -> None:
        # One entry nobody can read must not hide the results after it.
        nonlocal skipped
        skipped += 1
        print(f"stoq: results entry {entry_id} skipped: {why}", file=sys.stderr, flush=True)

    async def go() -> int:
        async for response in client.results(
            follow=follow,
            start=start,
            on_unreadable=report,
            **target.kwargs("url", "password", "results_stream"),
        ):
            _print_line(response)
        return EXIT_FAILED if skipped else EXIT_OK

    try:
        return asyncio.run(go())
    except StoqException as exc:
        raise CliError(str(exc)) from None
