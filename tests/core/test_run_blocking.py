"""``stoq_core.run_blocking``: blocking work in a daemon thread, for plugins and the engine."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import threading

import pytest

from stoq_core import run_blocking

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("CALLER", default="unset")


def test_it_returns_what_the_function_returns_from_another_thread() -> None:
    async def main() -> tuple[int, int]:
        return await run_blocking(lambda a, b: (a + b, threading.get_ident()), 2, 3)

    total, thread = asyncio.run(main())

    assert total == 5
    assert thread != threading.get_ident()


def test_it_raises_what_the_function_raises() -> None:
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        asyncio.run(run_blocking(fail))


def test_the_function_sees_the_callers_context_variables() -> None:
    async def main() -> str:
        CALLER.set("the caller")
        return await run_blocking(CALLER.get)

    assert asyncio.run(main()) == "the caller"


def test_work_a_timeout_abandoned_does_not_hold_up_the_programs_exit() -> None:
    # With asyncio.to_thread, asyncio.run would wait the full 60 s for the sleeping thread.
    program = textwrap.dedent(
        """
        import asyncio, time
        from stoq_core import run_blocking

        async def main():
            try:
                await asyncio.wait_for(run_blocking(time.sleep, 60), 0.2)
            except asyncio.TimeoutError:
                print("abandoned")

        asyncio.run(main())
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30
    )

    assert (done.returncode, done.stdout.strip()) == (0, "abandoned"), done.stderr
