"""Every check this monorepo runs: ``nox`` runs them all (the README's test command).

``nox -l`` lists them: the core's tests, one session per plugin package, lint and type check.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").glob("stoq-plugin-*") if (p / "pyproject.toml").exists())

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", *(f"package-{name}" for name in PACKAGES), "lint", "typecheck"]


@nox.session
def tests(session: nox.Session) -> None:
    """The core, the CLI and the v3 compatibility layer."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests", *session.posargs)


@nox.session
@nox.parametrize("name", PACKAGES, ids=PACKAGES)
def package(session: nox.Session, name: str) -> None:
    """One plugin distribution's tests, against the core in this checkout."""
    session.install("-e", ".[test]", f"./packages/{name}")
    session.chdir(f"packages/{name}")
    session.run("pytest", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's linter and formatter check over every package."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core, the CLI and the compatibility package."""
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy")
