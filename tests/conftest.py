"""Shared fixtures: fake plugins are published as real entry points, the way a distribution does."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stoq_core import _manager

TESTS = Path(__file__).parent

# The fixtures plugin authors use; the core's own tests use them too.
pytest_plugins = ["stoq_core.testing"]


def write_distribution(
    site: Path, dist: str, entry_points: dict[str, str], version: str = "1.0"
) -> Path:
    """Write an installed distribution's metadata (``.dist-info``) under ``site``.

    ``importlib.metadata`` finds it on ``sys.path`` exactly as it finds one pip installed, so
    the plugins it names take the same path as a real plugin distribution's.
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: {dist} for tests\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[stoq.plugins]\n{lines}")
    return info


@pytest.fixture
def install_plugins(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``install_plugins({"name": "fakes:Class"}, dist="stoq-plugin-x")`` publishes entry points.

    The targets live in ``tests/fakes.py``; the site directory is removed from ``sys.path``
    afterwards and the entry-point cache is refreshed both ways.
    """
    sites: list[str] = []
    counter = iter(range(1000))

    def install(
        entry_points: dict[str, str], dist: str | None = None, version: str = "1.0"
    ) -> Path:
        site = tmp_path / f"site{next(counter)}"
        name = dist or f"stoq-test-plugins-{len(sites)}"
        write_distribution(site, name, entry_points, version)
        sys.path.insert(0, str(site))
        sites.append(str(site))
        _manager.refresh_entry_points()
        return site

    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    yield install
    for site in sites:
        sys.path.remove(site)
    _manager.refresh_entry_points()
