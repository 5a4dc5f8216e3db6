"""Each kind of v3 plugin, loaded from a plugin directory, plays its role in a real scan or run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoq import Payload, Request, Stoq, StoqResponse
from stoq.exceptions import StoqPluginException, StoqPluginNotFound
from stoq.helpers import get_sha256


def _scan(stoq: Stoq, content: bytes, *start: str) -> StoqResponse:
    return asyncio.run(stoq.scan(content, add_start_dispatch=list(start)))


@pytest.fixture
def legacy(plugins_dir: Path, make_stoq: Callable[..., Stoq]) -> Callable[..., Stoq]:
    """``legacy(**stoq_kwargs)``: a Stoq over the working v3 plugin directory."""

    def make(**kwargs: Any) -> Stoq:
        return make_stoq(plugin_dir_list=[str(plugins_dir)], **kwargs)

    return make


def test_a_v3_worker_extracts_payloads_that_are_scanned_in_turn(
    legacy: Callable[..., Stoq],
) -> None:
    response = _scan(legacy(always_dispatch=["carve"]), b"one|two")
    root, first, second = response.results
    assert root.workers["carve"]["parts"] == 2
    assert [r.size for r in (first, second)] == [3, 3]
    assert first.extracted_by == ["carve"] and first.extracted_from == [root.payload_id]
    assert second.payload_meta.extra_data == {"offset": 4}
    assert second.workers["carve"]["parts"] == 1


def test_required_workers_from_the_stoq_file_run_first(legacy: Callable[..., Stoq]) -> None:
    response = _scan(legacy(), b"a|b|c", "report")
    root = response.results[0]
    assert root.plugins_run["workers"] == ["carve", "report"]
    assert root.workers["report"] == {"carved_parts": 3, "required": ["carve"]}


def test_a_v3_dispatcher_routes_payloads_and_keeps_its_meta(legacy: Callable[..., Stoq]) -> None:
    stoq = legacy(dispatchers=["route"])
    routed, plain = Payload(b"x|y"), Payload(b"xy")
    asyncio.run(stoq.scan_request(Request(payloads=[routed, plain])))
    assert routed.results.plugins_run["workers"] == ["carve"]
    assert routed.dispatch_meta["route"] == {"matched": "|", "by": "route"}
    assert plain.results.plugins_run["workers"] == []


def test_a_multiclass_plugin_dispatches_to_itself_and_scans(legacy: Callable[..., Stoq]) -> None:
    response = _scan(legacy(dispatchers=["both"], always_dispatch=["carve"]), b"MZ|..")
    mz, carved_mz, dots = response.results
    assert mz.workers["both"] == {"magic": b"MZ"}
    assert "both" in carved_mz.workers and "both" not in dots.workers
    assert json.loads(str(response))["results"][0]["workers"]["both"] == {"magic": "MZ"}


def test_a_v3_archiver_saves_each_payload_where_its_options_say(
    legacy: Callable[..., Stoq], tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    stoq = legacy(dest_archivers=["vault"], plugin_opts={"vault": {"vault_dir": str(vault)}})
    root = _scan(stoq, b"keep me").results[0]
    assert root.plugins_run["archivers"] == ["vault"]
    assert Path(root.archivers["vault"]["path"]).read_bytes() == b"keep me"


def test_a_v3_archiver_loads_back_what_it_archived_for_a_provider(
    legacy: Callable[..., Stoq], tmp_path: Path
) -> None:
    vault, results = tmp_path / "vault", tmp_path / "results"
    vault.mkdir()
    archived = _scan(
        legacy(dest_archivers=["vault"], plugin_opts={"vault": {"vault_dir": str(vault)}}),
        b"round|trip",
    )
    path = archived.results[0].archivers["vault"]["path"]
    stoq = legacy(
        providers=["feed"],
        source_archivers=["vault"],
        connectors=["jsonfile"],
        always_dispatch=["carve"],
        plugin_opts={
            "vault": {"vault_dir": str(vault)},
            "feed": {"vault_paths": path},
            "jsonfile": {"results_dir": str(results)},
        },
    )
    asyncio.run(stoq.run())
    [saved] = [json.loads(p.read_text()) for p in results.iterdir()]
    root = saved["results"][0]
    assert root["payload_meta"]["extra_data"] == {"path": path}
    # The bytes scanned are the bytes archived: carve hashed and split them.
    assert root["workers"]["carve"]["sha256"] == get_sha256(b"round|trip")
    assert root["workers"]["carve"]["parts"] == 2


def test_a_v3_provider_feeds_every_file_to_run(legacy: Callable[..., Stoq], tmp_path: Path) -> None:
    source, results = tmp_path / "incoming", tmp_path / "results"
    source.mkdir()
    (source / "a.txt").write_bytes(b"alpha")
    (source / "b.txt").write_bytes(b"be|ta")
    stoq = legacy(
        providers=["feed"],
        connectors=["jsonfile"],
        always_dispatch=["carve"],
        plugin_opts={
            "feed": {"source_dir": str(source)},
            "jsonfile": {"results_dir": str(results)},
        },
    )
    asyncio.run(stoq.run())
    saved = [json.loads(p.read_text()) for p in results.iterdir()]
    by_name = {s["results"][0]["payload_meta"]["extra_data"]["filename"]: s for s in saved}
    assert sorted(by_name) == ["a.txt", "b.txt"]
    assert by_name["b.txt"]["results"][0]["workers"]["carve"]["parts"] == 2


def test_a_v3_connector_writes_each_response_to_the_directory_in_its_options(
    legacy: Callable[..., Stoq], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    stoq = legacy(connectors=["jsonfile"], plugin_opts={"jsonfile": {"results_dir": str(results)}})
    response = _scan(stoq, b"saved")
    assert (results / f"{response.scan_id}.json").read_text() == str(response)


def test_a_v3_decorator_adds_its_results_under_its_name(legacy: Callable[..., Stoq]) -> None:
    response = _scan(legacy(decorators=["stamp"], always_dispatch=["carve"]), b"a|b")
    assert response.decorators["stamp"] == {
        "label": "100% legacy",
        "payloads": 3,
        "workers": ["carve"],
    }


def test_a_raising_v3_worker_becomes_an_error_and_the_scan_goes_on(
    legacy: Callable[..., Stoq],
) -> None:
    response = _scan(legacy(), b"a|b", "boom", "carve")
    root = response.results[0]
    assert root.workers["carve"]["parts"] == 2
    assert "boom" in root.plugins_run["workers"]
    [error] = response.errors
    assert error.plugin_name == "boom" and error.payload_id == root.payload_id
    assert "boom went the worker" in error.error


def test_a_v3_plugin_refusing_its_options_fails_to_load_with_its_message(
    legacy: Callable[..., Stoq],
) -> None:
    with pytest.raises(StoqPluginException, match=r"'vault'.*vault needs the vault_dir option"):
        legacy(dest_archivers=["vault"])


def test_a_v3_plugin_is_loaded_once_per_stoq(legacy: Callable[..., Stoq]) -> None:
    stoq = legacy(always_dispatch=["carve"])
    assert stoq.load_plugin("carve") is stoq.load_plugin("carve")


def test_naming_a_plugin_no_directory_holds_raises_stoq_plugin_not_found(
    legacy: Callable[..., Stoq],
) -> None:
    with pytest.raises(StoqPluginNotFound, match=r"'crave'.*did you mean 'carve'"):
        legacy(always_dispatch=["crave"])
