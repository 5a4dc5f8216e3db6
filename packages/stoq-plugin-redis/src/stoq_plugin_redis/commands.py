"""``stoq submit`` and ``stoq results``: the command line of the Redis Streams work queue.

Published as ``stoq.commands`` entry points, so ``stoq`` imports this module only when one of
them runs. Where Redis is: ``--url``, else ``url`` in the ``[redis]`` section of
``$STOQ_HOME/stoq.cfg`` (the section the workers read), else ``DEFAULT_URL``. The password:
``password`` in that section, else the URL's, else ``$STOQ_REDIS_PASSWORD``, else
``$REDIS_PASSWORD`` (``connect`` applies the last three).

stdout carries only data: task ids (``submit``) or results as JSON lines (``submit --wait``,
``results``); counts and failures go to stderr.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import attrs
import click

from stoq_cli.commands import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    config_section,
    input_files,
    note,
    write_result,
)
from stoq_core import StoqException
from stoq_plugin_redis import client
from stoq_plugin_redis._connection import PASSWORD_VARIABLES
from stoq_plugin_redis._messages import DEFAULT_RESULTS_STREAM, DEFAULT_STREAM, DEFAULT_URL

__all__ = ["RedisTarget", "results", "submit"]

_SECTION = "redis"  # the plugin's name: workers read the same section


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
        url: Optional[str] = None,
        stream: Optional[str] = None,
        results_stream: Optional[str] = None,
    ) -> RedisTarget:
        """The command line's values, else the ``[redis]`` section of stoq.cfg's, else defaults.

        :raises CliError: stoq.cfg cannot be read or parsed.
        """
        section = config_section(_SECTION)
        return cls(
            url=url or section.get("url") or DEFAULT_URL,
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


_REDIS_NOTE = f"""\
\b
Redis
  Redis is at --url, else at 'url' in the [redis] section of
  $STOQ_HOME/stoq.cfg (where the workers' -P redis / -C redis options live
  too: stream, results_stream, key_prefix, dead_letter_stream), else
  {DEFAULT_URL}. The password: 'password' in that section, else
  the url's, else ${PASSWORD_VARIABLES[0]}, else ${PASSWORD_VARIABLES[1]}.
  These commands come from the stoq-plugin-redis distribution.
"""


@click.command(
    epilog=f"""\
Each FILE is one task; a DIRECTORY is walked as 'stoq scan' walks one
(symlinked directories are not followed) and each file under it is a task,
empty files and FIFOs skipped with a note (--allow-empty submits empty
files). An empty FILE named on the command line is refused unless
--allow-empty, as by 'stoq scan'. Payloads up to 1 MiB
travel in the task message; larger ones are stored in Redis first. Workers
('stoq run -P redis -C redis ...', on any machine) scan them.

\b
Output
  stderr: how many tasks were submitted. stdout, without --wait: the task ids,
  one per line. With --wait: each task's result as one JSON line, as soon as
  it is saved (needs workers with -C redis, which records results by task);
  a task dead-lettered instead is reported on stderr.

\b
Exit status
  0 submitted (with --wait: every result saved without errors); 1 an entry
  under a DIRECTORY could not be read (the rest are submitted), or with
  --wait, a result holds errors, a task was dead-lettered or --timeout passed;
  2 bad input (a missing file, a bad url, Redis unreachable).

{_REDIS_NOTE}
\b
Examples
  stoq submit samples/                          queue every file under samples/
  stoq submit bad.exe --wait > result.jsonl     queue one, print its result
  stoq submit samples/ --wait --timeout 600 --url redis://queue:6379/0
""",
)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--stream", metavar="NAME", help=f"The task stream [default: stoq.cfg, else {DEFAULT_STREAM}]."
)
@click.option("--url", metavar="URL", help="Where Redis is [default: stoq.cfg, else localhost].")
@click.option("--wait", is_flag=True, help="Print each result as a JSON line once it is saved.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up after SECONDS (exit 1) [default: wait as long as it takes].",
)
@click.option("--allow-empty", is_flag=True, help="Submit empty files instead of skipping them.")
def submit(
    paths: tuple[str, ...],
    stream: Optional[str],
    url: Optional[str],
    wait: bool,
    timeout: Optional[float],
    allow_empty: bool,
) -> int:
    """Queue files in Redis for 'stoq run -P redis' workers to scan."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout needs --wait")
    if timeout is not None and not math.isfinite(timeout):
        raise click.BadParameter(
            f"{timeout!r} is not a finite number of seconds", param_hint="'--timeout'"
        )
    target = RedisTarget.resolve(url=url, stream=stream)
    # The files 'stoq scan' would scan: the same rule, from the command line's public API.
    files, unreadable = input_files(paths, allow_empty)
    if not files:
        if unreadable:
            return EXIT_FAILED
        raise CliError(f"nothing to submit: no file to scan under {', '.join(paths)}")
    code = _one_line_errors(_submit(files, target, wait, timeout))
    return max(code, EXIT_FAILED if unreadable else EXIT_OK)


@click.command(
    epilog=f"""\
Each result (a stoQ response) is printed as one JSON line, oldest first: every
result in the results stream, or with --follow, those saved from now on (and
with --from-start, every stored one first), until Ctrl-C. An entry that holds
no readable result is reported on stderr, with its id and why, and skipped.

\b
Exit status
  0 every entry printed; 1 an entry was skipped; 2 bad input (a bad url,
  Redis unreachable); 130 stopped by Ctrl-C.

{_REDIS_NOTE}
\b
Examples
  stoq results > all.jsonl
  stoq results --follow | jq -c '.results[0].workers.hash'
""",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing results as they are saved.")
@click.option("--from-start", is_flag=True, help="With --follow: print the stored ones first.")
@click.option(
    "--results-stream",
    metavar="NAME",
    help=f"The results stream [default: stoq.cfg, else {DEFAULT_RESULTS_STREAM}].",
)
@click.option("--url", metavar="URL", help="Where Redis is [default: stoq.cfg, else localhost].")
def results(
    follow: bool, from_start: bool, results_stream: Optional[str], url: Optional[str]
) -> int:
    """Print the results saved in Redis by 'stoq run ... -C redis' as JSON lines."""
    target = RedisTarget.resolve(url=url, results_stream=results_stream)
    return _one_line_errors(_results(target, follow, from_start))


def _one_line_errors(work: Any) -> int:
    """Run the coroutine ``work``; what a user got wrong is a one-line error (exit 2)."""
    try:
        code: int = asyncio.run(work)
    except StoqException as exc:
        raise CliError(str(exc)) from None
    return code


async def _submit(
    files: Sequence[Path], target: RedisTarget, wait: bool, timeout: Optional[float]
) -> int:
    task_ids = await client.submit(
        list(files), **target.kwargs("url", "password", "stream", "key_prefix")
    )
    note(f"submitted {len(task_ids)} task(s) to {target.stream or DEFAULT_STREAM}")
    if not wait:
        sys.stdout.write("".join(f"{task_id}\n" for task_id in task_ids))
        sys.stdout.flush()
        return EXIT_OK
    return await _wait_for(task_ids, target, timeout)


async def _wait_for(task_ids: list[str], target: RedisTarget, timeout: Optional[float]) -> int:
    """Print each result as it arrives; 1 if one holds errors, was dead-lettered or is late."""
    failed = 0
    kwargs = target.kwargs("url", "password", "stream", "results_stream", "key_prefix")
    try:
        async for outcome in client.wait(
            task_ids, dead_letters=target.dead_letter_stream, timeout=timeout, **kwargs
        ):
            if outcome.response is None:
                failed += 1
                note(f"task {outcome.task_id} has no result: {outcome.error}")
                continue
            failed += bool(outcome.response.get("errors"))
            write_result(outcome.response)
    except client.WaitTimeout as exc:
        note(str(exc))
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


async def _results(target: RedisTarget, follow: bool, from_start: bool) -> int:
    """Print the stored results; 1 if an entry could not be read."""
    # Without --follow, everything stored; with it, only what arrives (unless --from-start).
    start = "$" if follow and not from_start else "0-0"
    skipped = 0

    def report(entry_id: str, why: str) -> None:
        # One entry nobody can read must not hide the results after it.
        nonlocal skipped
        skipped += 1
        note(f"results entry {entry_id} skipped: {why}")

    async for response in client.results(
        follow=follow,
        start=start,
        on_unreadable=report,
        **target.kwargs("url", "password", "results_stream"),
    ):
        write_result(response)
    return EXIT_FAILED if skipped else EXIT_OK
