"""The layering, checked once over the whole tree (STYLE.md: "a rule about imports is one
architecture test over the whole tree, not a copy in every package's tests").

- The core (``src/``) never imports a plugin package: plugins are found through entry points.
- A plugin distribution (``packages/``, its tests included) uses only the public names of
  ``stoq_core`` and ``stoq_cli``, as an outside author's plugin would.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = sorted(path for path in (ROOT / "packages").glob("stoq-plugin-*") if path.is_dir())


def python_files(top: Path) -> Iterator[Path]:
    for path in sorted(top.rglob("*.py")):
        if not any(part in ("build", ".nox", "__pycache__") for part in path.parts):
            yield path


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, with its line: ``import a.b``, ``from a import b``
    (as ``a.b``, so that ``from stoq_core import _index`` counts as private), and
    ``importlib.import_module("a.b")``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value  # imported by name, at run time


def is_private_core(module: str) -> bool:
    top, _, rest = module.partition(".")
    return top in ("stoq_core", "stoq_cli") and rest.startswith("_") and rest != "__version__"


def test_the_core_imports_no_plugin_package() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in python_files(ROOT / "src")
        for line, module in imported_modules(path)
        if module.startswith("stoq_plugin_")
    ]
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES, ids=[path.name for path in PACKAGES])
def test_a_plugin_package_uses_only_the_public_core(package: Path) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in python_files(package)
        for line, module in imported_modules(path)
        if is_private_core(module)
    ]
    assert offenders == []


def test_the_check_sees_every_way_of_naming_a_private_module(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import stoq_core._index\nfrom stoq_core import _budget\nfrom stoq_cli._streams import x\n"
        "from stoq_core import Stoq\nimport stoq_plugin_hash\n"
        "importlib.import_module('stoq_plugin_redis.client')\n"
    )
    found = [module for _, module in imported_modules(sample)]
    assert [m for m in found if is_private_core(m)] == [
        "stoq_core._index",
        "stoq_core._budget",
        "stoq_cli._streams",
        "stoq_cli._streams.x",
    ]
    assert "stoq_plugin_hash" in found
    assert "stoq_plugin_redis.client" in found


def private_attributes(path: Path) -> Iterator[tuple[int, str]]:
    """Every ``x._name`` read in ``path`` (``self._name`` and dunders aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            yield node.lineno, node.attr


def test_the_testing_module_uses_only_the_public_core() -> None:
    # Plugin authors' tests lean on stoq_core.testing: what it reaches, they reach.
    testing = ROOT / "src" / "stoq_core" / "testing.py"
    offenders = [
        f"testing.py:{line}: {module}"
        for line, module in imported_modules(testing)
        if is_private_core(module)
    ] + [f"testing.py:{line}: ._{name[1:]}" for line, name in private_attributes(testing)]
    assert offenders == []
