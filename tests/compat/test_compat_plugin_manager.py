"""``stoq.plugin_manager.StoqPluginManager``: v3 scripts find and build plugins without a ``Stoq``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import stoq
from stoq import StoqException, StoqPluginNotFound
from stoq.helpers import StoqConfigParser
from stoq.plugin_manager import StoqPluginManager


def test_list_plugins_describes_a_plugin_directory_plugin_as_v3_did(plugins_dir: Path) -> None:
    listing = StoqPluginManager([str(plugins_dir)]).list_plugins()
    assert listing["carve"] == {
        "classes": ["Worker"],
        "version": "3.0.1",
        "description": "Carve every separated part of a payload into a payload of its own",
    }


def test_list_plugins_names_each_role_of_a_multiclass_plugin(plugins_dir: Path) -> None:
    listing = StoqPluginManager([str(plugins_dir)]).list_plugins()
    assert sorted(listing["both"]["classes"]) == ["Dispatcher", "Worker"]
    assert listing["vault"]["classes"] == ["Archiver"]


def test_list_plugins_leaves_out_unreadable_stoq_files_but_lists_broken_modules(
    broken_dir: Path,
) -> None:
    listing = StoqPluginManager([str(broken_dir)]).list_plugins()
    assert "bad_ini" not in listing and "missing_module" not in listing
    assert not [name for name in listing if name.endswith(".stoq")]
    assert listing["no_class"]["classes"] == []


@pytest.mark.parametrize("name", ["no_class", "two_classes"])
def test_loading_a_module_without_exactly_one_plugin_class_raises_stoq_exception(
    broken_dir: Path, name: str
) -> None:
    with pytest.raises(StoqException, match=name):
        StoqPluginManager([str(broken_dir)]).load_plugin(name)


def test_loading_an_unknown_name_raises_plugin_not_found(plugins_dir: Path) -> None:
    with pytest.raises(StoqPluginNotFound, match="nosuchplugin"):
        StoqPluginManager([str(plugins_dir)]).load_plugin("nosuchplugin")


def test_load_plugin_builds_a_plugin_once_with_its_v3_attributes(plugins_dir: Path) -> None:
    manager = StoqPluginManager([str(plugins_dir)])
    carve = manager.load_plugin(" carve ")  # v3 stripped the name
    assert manager.load_plugin("carve") is carve
    assert carve.plugin_name == "carve"
    assert (carve.__version__, carve.__website__) == ("3.0.1", "https://example.invalid/carve")
    assert manager._loaded_plugins == {"carve": carve}


def test_a_loaded_plugin_can_be_called_directly(plugins_dir: Path) -> None:
    carve = StoqPluginManager([str(plugins_dir)]).load_plugin("carve")
    response = asyncio.run(carve.scan(stoq.Payload(b"a|b"), stoq.Request()))
    assert [child.content for child in response.extracted] == [b"a", b"b"]


def test_the_later_plugin_directory_wins_a_name(data_dir: Path) -> None:
    dirs = [str(data_dir / "first"), str(data_dir / "second")]
    for order, expected in ((dirs, "second"), (dirs[::-1], "first")):
        echo = StoqPluginManager(order).load_plugin("echo")
        response = asyncio.run(echo.scan(stoq.Payload(b"x"), stoq.Request()))
        assert response.results == {"from": expected}


def test_a_missing_plugin_directory_is_skipped(tmp_path: Path, plugins_dir: Path) -> None:
    listing = StoqPluginManager([str(tmp_path / "nowhere"), str(plugins_dir)]).list_plugins()
    assert "carve" in listing


def _separator(manager: StoqPluginManager) -> str:
    return str(manager.load_plugin("carve").config.get("options", "separator"))


def test_plugin_options_come_from_plugin_opts_then_stoq_cfg_then_the_stoq_file(
    plugins_dir: Path,
) -> None:
    stoq_cfg = StoqConfigParser()
    stoq_cfg.read_string("[carve]\nseparator = ,\n")
    dirs = [str(plugins_dir)]
    assert _separator(StoqPluginManager(dirs)) == "|"
    assert _separator(StoqPluginManager(dirs, stoq_config=stoq_cfg)) == ","
    opts = {"carve": {"separator": ";"}}
    assert _separator(StoqPluginManager(dirs, opts, stoq_cfg)) == ";"


def test_installed_distributions_are_listed_and_loaded_too(
    install_plugins: Callable[..., Path],
) -> None:
    install_plugins({"pm_worker": "fakes:Worker"}, dist="stoq-plugin-pm-worker", version="1.2")
    manager = StoqPluginManager([])
    listing = manager.list_plugins()
    assert listing["pm_worker"]["classes"] == ["Worker"]
    assert listing["pm_worker"]["version"] == "1.2"
    assert type(manager.load_plugin("pm_worker")).__name__ == "Worker"
