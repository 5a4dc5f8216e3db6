"""The connector role: ``-C filedir`` writes each response to ``results_dir/<scan_id>``."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from stoq_core import Request, Stoq, StoqPluginException, StoqResponse
from stoq_core.testing import call_hook, scan_sync


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_each_response_is_written_to_a_file_named_by_its_scan_id(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    results = tmp_path / "out"
    stoq = make_stoq({"results_dir": str(results)}, connectors=["filedir"])

    first = scan_sync(stoq, b"one")
    second = scan_sync(stoq, b"two")

    assert files_under(results) == sorted([first.scan_id, second.scan_id])
    assert json.loads((results / first.scan_id).read_text()) == json.loads(str(first))


def test_results_are_one_line_of_json_by_default(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    stoq = make_stoq({"results_dir": str(tmp_path / "out")}, connectors=["filedir"])

    response = asyncio.run(stoq.scan(b"one"))

    text = (tmp_path / "out" / response.scan_id).read_text()
    assert text.count("\n") == 1
    assert text.endswith("}\n")


def test_compactly_false_writes_indented_json(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    stoq = make_stoq(
        {"results_dir": str(tmp_path / "out"), "compactly": False}, connectors=["filedir"]
    )

    response = asyncio.run(stoq.scan(b"one"))

    text = (tmp_path / "out" / response.scan_id).read_text()
    assert text == str(response) + "\n"
    assert '\n    "results": [' in text


def test_date_mode_files_results_under_the_response_s_date(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    stoq = make_stoq(
        {"results_dir": str(tmp_path / "out"), "date_mode": True}, connectors=["filedir"]
    )
    response = StoqResponse(Request(), time="2021-03-04T05:06:07", scan_id="dated")

    outcome = call_hook(stoq, "filedir", "save", response)

    assert outcome.errors == []
    assert files_under(tmp_path / "out") == [os.path.join("2021", "03", "04", "dated")]


def test_date_format_chooses_the_dated_directories(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    options = {"results_dir": str(tmp_path / "out"), "date_mode": True, "date_format": "%Y-%m"}
    stoq = make_stoq(options, connectors=["filedir"])

    response = asyncio.run(stoq.scan(b"now"))

    month = datetime.datetime.fromisoformat(response.time).strftime("%Y-%m")
    assert files_under(tmp_path / "out") == [os.path.join(month, response.scan_id)]


def test_no_temporary_file_is_left_beside_the_results(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    stoq = make_stoq({"results_dir": str(tmp_path / "out")}, connectors=["filedir"])

    responses = [asyncio.run(stoq.scan(b"x%d" % n)) for n in range(5)]

    assert sorted(os.listdir(tmp_path / "out")) == sorted(r.scan_id for r in responses)


def test_a_failed_write_leaves_neither_a_partial_result_nor_a_temporary_file(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    results = tmp_path / "out"
    (results / "taken").mkdir(parents=True)  # a directory where the result file would go
    connector = make_stoq({"results_dir": str(results)}, connectors=["filedir"]).load_plugin(
        "filedir"
    )

    with pytest.raises(OSError):
        asyncio.run(connector.save(StoqResponse(Request(), scan_id="taken")))

    assert os.listdir(results) == ["taken"]
    assert os.listdir(results / "taken") == []


def test_a_connector_failure_is_an_error_in_the_response(
    make_stoq: Callable[..., Stoq], tmp_path: Path
) -> None:
    (tmp_path / "out").write_text("a file where results_dir should be")
    stoq = make_stoq({"results_dir": str(tmp_path / "out")}, connectors=["filedir"])

    response = asyncio.run(stoq.scan(b"x"))

    assert [e.plugin_name for e in response.errors] == ["filedir"]


@pytest.mark.parametrize("scan_id", ["../escape", "a/b", "..", ""])
def test_a_scan_id_that_is_not_a_plain_file_name_is_refused(
    make_stoq: Callable[..., Stoq], tmp_path: Path, scan_id: str
) -> None:
    results = tmp_path / "sandbox" / "out"
    connector = make_stoq({"results_dir": str(results)}, connectors=["filedir"]).load_plugin(
        "filedir"
    )

    with pytest.raises(StoqPluginException, match="cannot be used as a file name"):
        asyncio.run(connector.save(StoqResponse(Request(), scan_id=scan_id)))

    assert files_under(tmp_path) == []


def test_results_dir_defaults_to_results_in_the_current_directory(
    make_stoq: Callable[..., Stoq], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stoq = make_stoq(connectors=["filedir"])

    response = asyncio.run(stoq.scan(b"x"))

    assert files_under(tmp_path / "results") == [response.scan_id]


def test_fsync_false_still_writes_atomically_without_syncing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    for fsync, expected_syncs in (("false", 0), ("true", 2)):
        synced.clear()
        results = tmp_path / f"results-{fsync}"
        stoq = Stoq(
            base_dir=str(tmp_path),
            log_dir=None,
            connectors=["filedir"],
            plugin_opts={"filedir": {"results_dir": str(results), "fsync": fsync}},
        )
        response = asyncio.run(stoq.scan(b"x"))
        assert [p.name for p in results.iterdir()] == [response.scan_id]
        assert len(synced) == expected_syncs  # the file and its directory, or nothing
