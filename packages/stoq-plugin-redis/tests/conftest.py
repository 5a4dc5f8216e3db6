"""Fixtures: a real redis-server per test on a free loopback port, and test plugins as entry points.

No fake Redis: every test talks to a ``redis-server`` it starts itself in a temporary directory
and stops afterwards. If ``redis-server`` is not on PATH those tests are skipped, with the
reason in pytest's summary, so that ``nox`` passes on a machine without Redis; CI installs it
and sets ``STOQ_REQUIRE_REDIS=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import redis

from stoq_core import Stoq

pytest_plugins = ["stoq_core.testing"]

TESTS = Path(__file__).parent
REDIS_SERVER = shutil.which("redis-server")
#: Set (to 1) where the Redis tests must run: CI (.ci/run), never a developer's machine.
REQUIRE_REDIS = "STOQ_REQUIRE_REDIS"

#: The test plugins, published as entry points of a test distribution.
TEST_PLUGINS = {
    "sleepy": "redis_testplugins:SleepyWorker",
    "crasher": "redis_testplugins:CrashWorker",
    "raiser": "redis_testplugins:RaisingWorker",
    "pending_probe": "redis_testplugins:PendingProbe",
    "flaky": "redis_testplugins:FlakyConnector",
    "text": "redis_testplugins:TextArchiver",
}


def pytest_configure(config: pytest.Config) -> None:
    # Started in the background of a shell without job control, the tests and every command
    # they start would have SIGINT ignored, and the Ctrl-C tests would wait forever. A handled
    # signal is reset to its default at exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1, its data in ``directory``."""

    def __init__(
        self,
        directory: Path,
        appendonly: bool = False,
        password: Optional[str] = None,
        unixsocket: bool = False,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.socket_path = directory / "redis.sock" if unixsocket else None
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.socket_path:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        return args

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited at start: {self.log_tail()}")
            try:
                if self.client().ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer PING within 15 s: {self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Shut down as an administrator would (SIGTERM: the append-only file is flushed)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=10)

    def log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text()[-2000:] if log.exists() else "(no log)"


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``make_server(appendonly=..., password=..., unixsocket=...)``: a started redis-server."""
    if REDIS_SERVER is None:
        reason = (
            "redis-server is not on PATH: these tests need a real Redis "
            "(apt-get install redis-server, or brew install redis)"
        )
        if os.environ.get(REQUIRE_REDIS, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_REDIS} is set")
        pytest.skip(reason)
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., RedisServer]) -> RedisServer:
    """A plain redis-server (no persistence, no password)."""
    return make_server()


@pytest.fixture
def db(server: RedisServer) -> Iterator[redis.Redis]:
    """A synchronous client of ``server``, for looking at what the plugin wrote."""
    client = server.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test plugins published as a distribution's entry points, on ``sys.path``."""
    # Imported here: at module level it would precede pytest_plugins' own (assertion-rewriting)
    # import of stoq_core.testing.
    from stoq_core.testing import published, write_distribution

    site = tmp_path_factory.mktemp("site")
    write_distribution(site, "stoq-redis-test-plugins", TEST_PLUGINS)
    with published(site, TESTS):
        yield site


@pytest.fixture
def make_stoq(tmp_path: Path, server: RedisServer, plugin_site: Path) -> Callable[..., Stoq]:
    """``make_stoq(redis={options}, **stoq_kwargs)``: a worker of ``server``, stopping when idle.

    Defaults: provider and connector ``redis``, ``claim_idle`` 1 s, ``stop_when_idle`` 0.5 s.
    """

    def make(redis: Optional[dict[str, Any]] = None, **kwargs: Any) -> Stoq:
        plugin_opts = kwargs.pop("plugin_opts", {})
        plugin_opts["redis"] = {
            "url": server.url,
            "claim_idle": 1,
            "stop_when_idle": 0.5,
            **(redis or {}),
        }
        kwargs.setdefault("providers", ["redis"])
        kwargs.setdefault("connectors", ["redis"])
        return Stoq(
            base_dir=str(tmp_path),
            log_dir=None,
            plugin_dir_list=[],
            plugin_opts=plugin_opts,
            **kwargs,
        )

    return make


class Workers:
    """Worker processes (``run_worker.py``), each a ``Stoq.run`` of its own; all killed at the end."""

    def __init__(self, tmp_path: Path, site: Path) -> None:
        self.tmp_path = tmp_path
        self.site = site
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, **config: Any) -> subprocess.Popen[bytes]:
        config = {"url": url, "base_dir": str(self.tmp_path), **config}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(TESTS), env.get("PYTHONPATH", "")])
        log = open(self.tmp_path / f"worker{len(self.processes)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, str(TESTS / "run_worker.py"), json.dumps(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def wait_all(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {process.pid} still running after {timeout} s: {self.logs()}")
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.tmp_path.glob("worker*.log"))
        )

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path, plugin_site: Path) -> Iterator[Workers]:
    """Start worker processes with ``workers.start(url, redis={...}, ...)``."""
    started = Workers(tmp_path, plugin_site)
    yield started
    started.kill_all()
