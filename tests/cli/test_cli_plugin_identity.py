"""What a plugin knows of itself, through the installed ``stoq`` (issue 15, item 12): its name
inside ``__init__``, and the errors its response carries, as ``call_hook`` shows them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import StoqRunner

from stoq_core.testing import call_hook, make_payload

TESTS = Path(__file__).resolve().parents[1]


def _publish(
    stoq: StoqRunner, install_plugins: Callable[..., Path], plugins: dict[str, str]
) -> None:
    site = install_plugins(plugins, dist="stoq-plugin-identity")
    stoq.env["PYTHONPATH"] = os.pathsep.join([str(site), str(TESTS), stoq.env["PYTHONPATH"]])


@pytest.mark.parametrize("cls", ["PlainNamed", "V3Named", "V3NamedBeforeSuper"])
def test_a_scan_sees_the_name_the_plugin_had_in_init(
    stoq: StoqRunner, install_plugins: Callable[..., Path], tmp_path: Path, cls: str
) -> None:
    _publish(stoq, install_plugins, {"who": f"fake_plugin_identity:{cls}"})
    sample = tmp_path / "x.bin"
    sample.write_bytes(b"x")

    done = stoq("scan", str(sample), "-a", "who")

    assert done.code == 0, done.err
    assert done.json()["results"][0]["workers"]["who"] == {"name_at_init": "who"}


def test_call_hook_gives_the_errors_stoq_scan_records(
    stoq: StoqRunner,
    install_plugins: Callable[..., Path],
    stoq_with: Callable[..., object],
    tmp_path: Path,
) -> None:
    _publish(stoq, install_plugins, {"errs": "fake_plugin_identity:ReturnsErrors"})
    sample = tmp_path / "x.bin"
    sample.write_bytes(b"abc")

    done = stoq("scan", str(sample), "-a", "errs")
    outcome = call_hook(stoq_with("errs"), "errs", "scan", make_payload(b"abc"))

    assert done.code == 1  # a response holding errors
    scanned = done.json()
    payload_id = scanned["results"][0]["payload_id"]
    assert [(e["error"], e["plugin_name"]) for e in scanned["errors"]] == [
        (e.error, e.plugin_name) for e in outcome.errors
    ]
    assert scanned["errors"][0]["payload_id"] == payload_id
