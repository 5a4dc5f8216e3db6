"""``stoq run --consumers N``: N worker processes on this machine, each a full ``stoq run``.

One Python process scans on one core; a queue shared by many workers (a queue provider) lets N of
them share the work. Each child is ``python -m stoq_cli run`` with the same engine options,
spelled out again from what was parsed (so it works however this process was started), without
``--consumers``.

- The options are checked here first (plugins loaded once), so a mistake is one line, not N.
- The children run in their own process group: a Ctrl-C at the terminal reaches this process
  only, which passes SIGINT/SIGTERM on to every child exactly once per signal (the first drains,
  a second aborts, as for ``stoq run``).
- Their stdout is relayed line by line, so JSON lines of different children never interleave;
  their stderr is passed through as it is (with no terminal there, they draw no status line).
- The exit code is the worst of theirs (the highest), or 128 + the signal that stopped them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import IO, Optional, TextIO

from stoq_cli._errors import OutputError
from stoq_cli._home import EngineOptions, StoqHome, build_stoq, check_workers
from stoq_cli._run import require_providers
from stoq_cli._streams import check_destination, results_stream

__all__ = ["child_arguments", "consumers_command"]

_LISTS = (
    ("-P", "providers"),
    ("-s", "start_dispatch"),
    ("-a", "always_dispatch"),
    ("-R", "dispatchers"),
    ("-C", "connectors"),
    ("-D", "decorators"),
    ("-A", "dest_archivers"),
    ("-S", "source_archivers"),
)


def child_arguments(options: EngineOptions) -> list[str]:
    """The ``stoq run`` arguments that give a child the engine ``options`` parsed here.

    An option left unset here stays unset there, so the child reads stoq.cfg as this one did.
    """
    args: list[str] = []
    for flag, name in _LISTS:
        names = getattr(options, name)
        if names:
            args += [flag, ",".join(names)]
    limits: tuple[tuple[str, Optional[float]], ...] = (
        ("--max-recursion", options.max_recursion),
        ("--timeout", options.timeout),
        ("--deadline", options.deadline),
    )
    for flag, limit in limits:
        if limit is not None:
            args += [flag, repr(limit)]
    if options.cache is not None:
        args.append("--cache" if options.cache else "--no-cache")
    for plugin, values in (options.plugin_opts or {}).items():
        for key, value in values.items():
            args += ["--plugin-opts", f"{plugin}:{key}={value}"]
    if options.request_source is not None:
        args += ["--request-source", options.request_source]
    for key, value in options.request_extra.items():
        # Booleans came from 'true'/'false', which give them back.
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--request-extra", f"{key}={text}"]
    for directory in options.plugin_dirs:
        args += ["--plugin-dir", directory]
    if options.config_file is not None:
        args += ["--config-file", options.config_file]
    if options.log_level is not None:
        args += ["--log-level", options.log_level.lower()]
    if options.tracing is not None:
        args.append("--trace" if options.tracing else "--no-trace")
    # One port cannot serve N processes: the children serve no metrics (main.py refuses
    # --metrics-port with --consumers; this keeps stoq.cfg's metrics_port from clashing).
    args += ["--metrics-port", "0"]
    return args


def consumers_command(options: EngineOptions, count: int) -> int:
    """Run ``count`` ``stoq run`` children with ``options``; returns the worst exit code."""
    with results_stream() as out:
        return _consumers_command(options, count, out)


def _consumers_command(options: EngineOptions, count: int, out: TextIO) -> int:
    check_destination(out, options.connectors)
    home = StoqHome.from_environment()
    # Fail once, here, on a bad option or plugin; the children would each fail the same way.
    stoq = build_stoq(home, options)
    check_workers(stoq, options.start_dispatch or (), "-s/--start-dispatch")
    del stoq
    require_providers(home, options)

    command = [sys.executable, "-m", "stoq_cli", "run", *child_arguments(options)]
    children: list[subprocess.Popen[bytes]] = []
    stopped_by: Optional[int] = None
    lock = threading.Lock()
    failures: list[OSError] = []  # writing to our stdout, from the relays

    def forward(signum: int, frame: object) -> None:
        nonlocal stopped_by
        stopped_by = signum
        for child in children:
            if child.poll() is None:
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    relays: list[threading.Thread] = []
    try:
        for _ in range(count):
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                start_new_session=True,  # terminal signals come to this process, not to them
            )
            children.append(child)
            assert child.stdout is not None
            relay = threading.Thread(
                target=_relay, args=(child.stdout, out, lock, failures), daemon=True
            )
            relay.start()
            relays.append(relay)
        codes = [child.wait() for child in children]
        for relay in relays:
            relay.join()
    finally:
        for child in children:  # only if this process itself is failing
            if child.poll() is None:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        raise OutputError(failures[0].strerror or str(failures[0]))
    worst = max(_exit_code(code) for code in codes)
    if stopped_by is not None:
        worst = max(worst, 128 + stopped_by)
    return worst


def _relay(
    stream: IO[bytes], results: TextIO, lock: threading.Lock, failures: list[OSError]
) -> None:
    """Copy a child's stdout to ours (``results``), whole lines at a time."""
    out = results.buffer
    try:
        for line in _lines(stream):
            with lock:
                out.write(line)
                out.flush()
    except BrokenPipeError:
        pass  # our reader left; the child finds out from its own next write
    except OSError as exc:
        failures.append(exc)  # a full disk; the child finds out as above
    finally:
        stream.close()


def _lines(stream: IO[bytes]) -> Iterable[bytes]:
    yield from iter(stream.readline, b"")


def _exit_code(code: int) -> int:
    # A child killed by a signal has a negative returncode; report it as a shell would.
    return 128 - code if code < 0 else code
