"""Where ``Stoq`` writes its log file when no ``log_dir`` is given (issue 15).

v3 wrote ``base_dir/logs`` with ``base_dir`` defaulting to the current directory, so a script
that made a ``Stoq()`` left a ``logs/`` folder wherever it ran. The default now holds only
where ``base_dir`` is stoQ's own: given, or holding a stoq.cfg.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoq_core import Stoq


@pytest.fixture(autouse=True)
def no_file_log_after(tmp_path: Path) -> Iterator[None]:
    """The ``stoq`` logger's handlers are per process: leave none pointing into tmp_path."""
    yield
    Stoq(base_dir=str(tmp_path), log_dir=None, plugin_dir_list=[])


def logged_to_file(directory: Path) -> bool:
    logging.getLogger("stoq").warning("where does this go?")
    log = directory / "stoq.log"
    return log.is_file() and "where does this go?" in log.read_text()


def test_stoq_without_base_dir_leaves_no_logs_folder_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    Stoq(plugin_dir_list=[])
    logging.getLogger("stoq").warning("to stderr only")

    assert list(tmp_path.iterdir()) == []


def test_a_given_base_dir_keeps_v3s_log_file_in_base_dir_logs(tmp_path: Path) -> None:
    Stoq(base_dir=str(tmp_path), plugin_dir_list=[])

    assert logged_to_file(tmp_path / "logs")


def test_a_current_directory_holding_stoq_cfg_keeps_v3s_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A v3 deployment run from its own folder: Stoq() there found its stoq.cfg and logs.
    (tmp_path / "stoq.cfg").write_text("[core]\nmax_queue = 10\n")
    monkeypatch.chdir(tmp_path)

    Stoq(plugin_dir_list=[])

    assert logged_to_file(tmp_path / "logs")


def test_log_dir_in_stoq_cfg_is_used_without_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "etc" / "stoq.cfg"
    config.parent.mkdir()
    config.write_text(f"[core]\nlog_dir = {tmp_path / 'var'}\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    Stoq(config_file=str(config), plugin_dir_list=[])

    assert logged_to_file(tmp_path / "var")
    assert list((tmp_path / "cwd").iterdir()) == []


def test_an_explicit_log_dir_is_used_without_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")

    Stoq(log_dir=str(tmp_path / "mine"), plugin_dir_list=[])

    assert logged_to_file(tmp_path / "mine")
