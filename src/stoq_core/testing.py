"""pytest fixtures and helpers for plugin authors.

Opt in from a ``conftest.py`` (or a test module)::

    pytest_plugins = ["stoq_core.testing"]

    def test_my_worker(stoq_with):
        stoq = stoq_with("mything", options={"depth": 2})      # the installed plugin, alone
        response = scan_sync(stoq, b"payload bytes", start=["mything"])
        assert response.results[0].workers["mything"] == {...}

    def test_my_worker_directly(stoq_with):
        stoq = stoq_with("mything")
        outcome = call_hook(stoq, "mything", "scan", make_payload(b"x"))
        assert outcome.errors == [] and outcome.value.results == {...}
        # The errors the response carries are there too, as a scan records them:
        bad = call_hook(stoq, "mything", "scan", make_payload(b"corrupt"))
        assert bad.errors[0].plugin_name == "mything"

``stoq_with`` loads the plugin through its entry point, exactly as ``stoq scan`` would, so a
test also proves the distribution's packaging. A class not yet installed can be given with
``plugin=MyPlugin`` instead; it then takes the same registration path under that name.

``stoq_command`` runs the installed ``stoq`` script in a child process, for a plugin's own
command or a scan through the real command line::

    def test_my_command(stoq_command):
        done = stoq_command("mything", "--flag")
        assert done.code == 0 and done.lines() == [...]
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import attrs
import pytest

from stoq_core import ENTRY_POINT_GROUP, hookspecs, refresh_entry_points
from stoq_core.data_classes import (
    Error,
    Payload,
    PayloadMeta,
    Request,
    RequestMeta,
    StoqResponse,
)
from stoq_core.engine import Stoq

__all__ = [
    "CommandResult",
    "HookOutcome",
    "StoqCommand",
    "call_hook",
    "make_payload",
    "make_request",
    "publish_plugins",
    "published",
    "scan_sync",
    "stoq_command",
    "stoq_script",
    "stoq_with",
    "write_distribution",
]

#: Folders ``published`` has put on ``sys.path`` (innermost first): a ``stoq`` the test starts
#: (``StoqCommand``) gets them on its ``PYTHONPATH``.
_published_paths: list[str] = []


def make_payload(
    content: bytes | str = b"stoq test payload",
    *,
    filename: Optional[str] = None,
    should_scan: bool = True,
    should_archive: bool = True,
    dispatch_to: Optional[list[str]] = None,
    **extra_data: Any,
) -> Payload:
    """A ``Payload`` with its metadata; ``filename`` and any keyword go to ``extra_data``."""
    if filename is not None:
        extra_data["filename"] = filename
    meta = PayloadMeta(should_archive, should_scan, extra_data, dispatch_to)
    return Payload(content, meta)


def make_request(*payloads: Payload, source: Optional[str] = None, **extra_data: Any) -> Request:
    """A ``Request`` holding ``payloads`` (one default payload if none are given)."""
    return Request(
        list(payloads) or [make_payload()], RequestMeta(source=source, extra_data=extra_data)
    )


def scan_sync(
    stoq: Stoq,
    content: bytes | str | Payload,
    *,
    start: Sequence[str] = (),
    request_meta: Optional[RequestMeta] = None,
) -> StoqResponse:
    """Run one scan to completion from synchronous test code."""
    payload = content if isinstance(content, Payload) else Payload(content)
    return asyncio.run(stoq.scan_request(Request([payload], request_meta), list(start)))


def write_distribution(
    site: Path, dist: str, entry_points: Mapping[str, str], version: str = "1.0"
) -> Path:
    """Write an installed distribution's metadata (a ``.dist-info``) under ``site``.

    ``importlib.metadata`` finds it on ``sys.path`` (or a child process's ``PYTHONPATH``) as it
    finds one pip installed, so the plugins it names take a real plugin's path.

    :param entry_points: plugin name -> ``"module:Class"`` (or ``"module"``).
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: {dist} for tests\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return info


@contextlib.contextmanager
def published(*paths: str | Path) -> Iterator[None]:
    """Put ``paths`` (sites written by ``write_distribution``, plugin modules' folders) first on
    ``sys.path`` while the block runs, with the entry-point cache refreshed on the way in and out.
    """
    added = [str(path) for path in paths]
    sys.path[:0] = added
    _published_paths[:0] = added
    refresh_entry_points()
    try:
        yield
    finally:
        for entry in added:
            sys.path.remove(entry)
            _published_paths.remove(entry)
        refresh_entry_points()


@attrs.define
class HookOutcome:
    """What one hook call gave: its return value (None if it failed) and the errors recorded.

    ``errors`` are the ``Error``s a scan would record for the call: what the hook raised or
    its timeout, then the errors its response carries, each naming the plugin and payload (a
    bare string in ``value.errors`` becomes an ``Error`` here), or why the response was refused.
    """

    value: Any
    errors: list[Error]


def _takes_a_request(hook: str) -> bool:
    """Whether ``hook``'s spec ends with a ``request`` (``scan``, ``get_dispatches``, ``archive``).

    Read from the hookspecs, so this never lists the hooks again.
    """
    spec = getattr(hookspecs, hook, None)
    return callable(spec) and list(inspect.signature(spec).parameters)[-1:] == ["request"]


def call_hook(stoq: Stoq, plugin_name: str, hook: str, *args: Any) -> HookOutcome:
    """Call one hook of one plugin the way the engine does, errors and time limits included.

    Its response is filed as a scan files it: the errors it carries are in the outcome's
    ``errors``, attributed to the plugin and the payload (see ``HookOutcome``); ``value`` is
    the response itself, as the hook returned it. Worker and dispatcher hooks given only a
    payload get a one-payload request around it.
    """
    if len(args) == 1 and _takes_a_request(hook):
        args = (args[0], Request([args[0]]))
    value, errors = asyncio.run(stoq.call_plugin(plugin_name, hook, *args))
    return HookOutcome(value, errors)


@pytest.fixture
def stoq_with(tmp_path: Path) -> Iterator[Callable[..., Stoq]]:
    """A factory: ``stoq_with(name, options=None, plugin=None, **stoq_kwargs)`` -> ``Stoq``.

    The ``Stoq`` has a temporary base directory, no log file and no plugin directories, and the
    plugin ``name`` loaded (from its entry point, or ``plugin`` registered under ``name``) with
    ``options`` as its plugin options.
    """

    def make(
        name: Optional[str] = None,
        options: Optional[dict[str, Any]] = None,
        plugin: Any = None,
        **stoq_kwargs: Any,
    ) -> Stoq:
        stoq_kwargs.setdefault("base_dir", str(tmp_path))
        stoq_kwargs.setdefault("log_dir", None)
        stoq_kwargs.setdefault("plugin_dir_list", [])
        if name is not None and options is not None and plugin is None:
            stoq_kwargs.setdefault("plugin_opts", {})[name] = options
        stoq = Stoq(**stoq_kwargs)
        if name is not None:
            if plugin is not None:
                # Given after construction: Stoq refuses options for a plugin not installed.
                stoq.plugins.plugin_opts[name] = dict(options or {})
                stoq.plugins.register(name, plugin)
            else:
                stoq.plugins.load(name)
        return stoq

    yield make


@pytest.fixture
def publish_plugins(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``publish_plugins({"name": "module:Class"}, dist=..., import_path=...)`` -> the site.

    Publishes test plugins as a distribution's entry points for the rest of the test;
    ``import_path`` is a folder to import their module from (e.g. the tests folder).
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def publish(
            entry_points: Mapping[str, str],
            dist: Optional[str] = None,
            import_path: str | Path | None = None,
            version: str = "1.0",
        ) -> Path:
            nonlocal count
            count += 1
            site = tmp_path / f"stoq-test-site-{count}"
            write_distribution(site, dist or f"stoq-test-plugins-{count}", entry_points, version)
            paths = [site] if import_path is None else [site, import_path]
            stack.enter_context(published(*paths))
            return site

        yield publish


# -- the command line ------------------------------------------------------------------------


@attrs.define
class CommandResult:
    """A finished ``stoq`` command: its exit code, stdout and stderr (text)."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as one JSON document (``stoq scan FILE``)."""
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        """stdout as JSON lines (``stoq scan DIR``, ``stoq run``)."""
        return [json.loads(line) for line in self.out.splitlines()]


@attrs.define
class StoqCommand:
    """Runs the installed ``stoq`` script in a child process, as a user runs it: a plugin's
    own command (``stoq.commands``) or a scan with it, tested through the real command line.

    Plugins published in the test (``publish_plugins``, ``published``) are on the child's
    ``PYTHONPATH``, ahead of the environment's.

    :param home: the child's ``$STOQ_HOME`` (``stoq`` creates it on first use).
    :param cwd: its working directory.
    :param env: its environment.
    """

    home: Path
    cwd: Path
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        """The argument list that runs ``stoq ARGS`` (for ``subprocess.Popen`` and the like)."""
        return [stoq_script(), *args]

    def environment(self) -> dict[str, str]:
        """The child's environment: ``env``, with the published plugins and ``$STOQ_HOME``."""
        env = dict(self.env)
        paths = [*_published_paths, *filter(None, [env.get("PYTHONPATH")])]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["STOQ_HOME"] = str(self.home)
        return env

    def __call__(
        self, *args: str, stdin: Optional[bytes] = None, timeout: float = 60
    ) -> CommandResult:
        """Run ``stoq ARGS`` to its end (``stdin``: bytes to pipe in, else none)."""
        done = subprocess.run(
            self.command(*args),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.environment(),
            cwd=self.cwd,
            timeout=timeout,
        )
        return CommandResult(
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )


def stoq_script() -> str:
    """The ``stoq`` script beside the running interpreter (the one under test), else on PATH."""
    beside = Path(sys.executable).parent / "stoq"
    found = str(beside) if beside.is_file() else shutil.which("stoq")
    if found is None:
        pytest.fail("the stoq console script is not installed: pip install stoq-core")
    return found


@pytest.fixture
def stoq_command(tmp_path: Path) -> StoqCommand:
    """``stoq_command("scan", path, "-s", "mything")`` -> ``CommandResult``: the installed
    ``stoq`` in a child process with a ``$STOQ_HOME`` of its own and an empty working directory,
    both under ``tmp_path``."""
    cwd = tmp_path / "stoq-cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("STOQ_HOME", "PYTHONSTARTUP")}
    return StoqCommand(tmp_path / "stoq-home", cwd, env)
