"""Every check this monorepo runs: ``nox`` runs them all (the README's test command).

``nox -l`` lists them: the core's tests, one session per plugin package, lint and type check,
then ``bench`` and ``build``, which run only when named.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(
    p.name for p in (ROOT / "packages").glob("stoq-plugin-*") if (p / "pyproject.toml").exists()
)

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", *(f"package({name})" for name in PACKAGES), "lint", "typecheck"]


def install(session: nox.Session, *args: str) -> None:
    # The pip a venv is born with can be too old to resolve a local stoq-core for a plugin.
    session.install("--upgrade", "pip")
    session.install(*args)


def note_missing_redis_server(session: nox.Session) -> None:
    """Say up front that the Redis tests will be skipped; nox never installs system packages.

    Without ``redis-server`` on PATH those tests skip with the reason in pytest's summary.
    CI (.ci/run) installs it and sets STOQ_REQUIRE_REDIS=1, which makes a missing one fail.
    """
    if shutil.which("redis-server") is None:
        session.warn(
            "redis-server is not on PATH: the tests that need Redis will be skipped "
            "(install it, e.g. apt-get install redis-server, to run them)"
        )


@nox.session
def tests(session: nox.Session) -> None:
    """The core, the CLI, the v3 compatibility layer and the packaging of every distribution."""
    # No Redis here: stoq submit/results and their tests are stoq-plugin-redis's (issue 14).
    # .[test] brings ruff and mypy too: the scaffold's tests run them on the generated code.
    install(session, "-e", ".[test]", *(f"./packages/{name}" for name in PACKAGES))
    session.run("pytest", "tests", *session.posargs)


@nox.session
@nox.parametrize("name", PACKAGES, ids=PACKAGES)
def package(session: nox.Session, name: str) -> None:
    """One plugin distribution's tests, run from its own folder against this checkout's core."""
    if name == "stoq-plugin-redis":
        note_missing_redis_server(session)
    install(session, "-e", ".[test]", f"./packages/{name}")
    session.chdir(f"packages/{name}")
    session.run("pytest", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's linter and formatter check over every package."""
    install(session, "ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core, the CLI and the compatibility package."""
    install(session, "-e", ".[test]", "mypy>=1.10")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite; figures go to bench/latest.md (``nox -s bench -- small cli``).

    The redis section needs ``redis-server`` on PATH; without it, name the other sections.
    """
    runs_redis = not session.posargs or "redis" in session.posargs
    if runs_redis and shutil.which("redis-server") is None:
        session.error(
            "redis-server is not on PATH, and the redis section needs it: install it (e.g. "
            "apt-get install redis-server), or name the other sections (nox -s bench -- small cli)"
        )
    install(session, ".", *(f"./packages/{name}" for name in PACKAGES))
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Wheels and sdists into dist/, twine-checked, installed in a fresh venv and smoke-tested.

    ``nox -s build -- stoq-plugin-yara`` builds that package and the core (see RELEASING.md).
    """
    # hatchling 1.27 writes PEP 639 license metadata (2.4), which twine reads from 6.1 on.
    install(session, "build>=1", "hatchling>=1.27", "twine>=6.1", "packaging>=23")
    session.run("python", "tools/release.py", "build", *session.posargs)
