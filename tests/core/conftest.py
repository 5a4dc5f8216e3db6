from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq_core import Stoq

FAKES = {
    "worker": "fakes:Worker",
    "worker2": "fakes:Worker",
    "worker3": "fakes:Worker",
    "extractor": "fakes:Worker",
    "dispatcher": "fakes:Dispatcher",
    "dispatcher2": "fakes:Dispatcher",
    "archiver": "fakes:Archiver",
    "archiver2": "fakes:Archiver",
    "connector": "fakes:Connector",
    "connector2": "fakes:Connector",
    "decorator": "fakes:Decorator",
    "decorator2": "fakes:Decorator",
    "provider": "fakes:Provider",
    "provider2": "fakes:Provider",
    "multi": "fakes:Multi",
    "sync": "fakes:SyncWorker",
    "wrong_return": "fakes:WrongReturn",
    "module_plugin": "fake_module_plugin",
    "reports_config": "fakes:ReportsConfig",
}


@pytest.fixture
def make_stoq(install_plugins: Callable[..., Path], tmp_path: Path) -> Callable[..., Stoq]:
    """A ``Stoq`` whose fake plugins come from a real (test) distribution's entry points."""
    install_plugins(FAKES, dist="stoq-test-fakes")

    def make(**kwargs: Any) -> Stoq:
        kwargs.setdefault("base_dir", str(tmp_path))
        kwargs.setdefault("log_dir", None)
        return Stoq(**kwargs)

    return make
