"""The hash worker, loaded through its entry point the way a user's Stoq loads it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, Optional

import pytest
from stoq_plugin_hash import PARALLEL_THRESHOLD

from stoq_core import Payload, Request, Stoq, StoqPluginException

HELLO = {
    "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    "md5": "5d41402abc4b2a76b9719d911017c592",
    "sha1": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
}


def make_stoq(tmp_path: Path, options: Optional[dict[str, Any]] = None) -> Stoq:
    plugin_opts = {"hash": options} if options else None
    return Stoq(
        always_dispatch=["hash"], log_dir=None, base_dir=str(tmp_path), plugin_opts=plugin_opts
    )


def scan_hash(stoq: Stoq, content: bytes) -> Any:
    response = asyncio.run(stoq.scan(content))
    assert response.errors == []
    return response.results[0].workers["hash"]


def test_known_bytes_give_their_known_digests(tmp_path: Path) -> None:
    assert scan_hash(make_stoq(tmp_path), b"hello") == HELLO


def test_results_are_keyed_sha256_md5_sha1_in_that_order(tmp_path: Path) -> None:
    assert list(scan_hash(make_stoq(tmp_path), b"hello")) == ["sha256", "md5", "sha1"]


def test_the_empty_payload_has_the_digests_of_no_bytes(tmp_path: Path) -> None:
    expected = {name: hashlib.new(name, b"").hexdigest() for name in ("sha256", "md5", "sha1")}
    assert scan_hash(make_stoq(tmp_path), b"") == expected


def test_algorithms_option_picks_the_algorithms(tmp_path: Path) -> None:
    results = scan_hash(make_stoq(tmp_path, {"algorithms": ["sha512"]}), b"hello")
    assert results == {"sha512": hashlib.sha512(b"hello").hexdigest()}


def test_algorithms_option_orders_the_results(tmp_path: Path) -> None:
    results = scan_hash(make_stoq(tmp_path, {"algorithms": "sha1, sha3_256, md5"}), b"hello")
    assert list(results) == ["sha1", "sha3_256", "md5"]
    assert results["sha3_256"] == hashlib.sha3_256(b"hello").hexdigest()


def test_algorithm_names_are_case_insensitive(tmp_path: Path) -> None:
    results = scan_hash(make_stoq(tmp_path, {"algorithms": ["SHA256"]}), b"hello")
    assert results == {"sha256": HELLO["sha256"]}


def test_an_unknown_algorithm_fails_to_load_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoqPluginException, match="unknown hash algorithm 'sha257'"):
        make_stoq(tmp_path, {"algorithms": ["sha256", "sha257"]})


def test_a_variable_length_algorithm_fails_to_load_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoqPluginException, match="'shake_128' has no fixed digest length"):
        make_stoq(tmp_path, {"algorithms": ["shake_128"]})


def test_a_payload_over_the_threshold_gets_hashlibs_digests(tmp_path: Path) -> None:
    content = bytes(range(256)) * (PARALLEL_THRESHOLD // 256 + 1)
    expected = {name: hashlib.new(name, content).hexdigest() for name in ("sha256", "md5", "sha1")}
    assert scan_hash(make_stoq(tmp_path), content) == expected


def test_a_payload_over_the_threshold_keeps_its_digests_cached(tmp_path: Path) -> None:
    plugin = make_stoq(tmp_path).load_plugin("hash")
    payload = Payload(b"\x01" * (PARALLEL_THRESHOLD + 1))
    response = asyncio.run(plugin.scan(payload, Request([payload])))
    assert payload.known_digests() == response.results


def test_a_small_payload_keeps_its_digests_cached(tmp_path: Path) -> None:
    plugin = make_stoq(tmp_path).load_plugin("hash")
    payload = Payload(b"hello")
    asyncio.run(plugin.scan(payload, Request([payload])))
    assert payload.known_digests() == HELLO


@pytest.mark.parametrize("size", [5, PARALLEL_THRESHOLD + 1], ids=["small", "large"])
def test_a_cached_sha256_is_reused_not_recomputed(tmp_path: Path, size: int) -> None:
    plugin = make_stoq(tmp_path).load_plugin("hash")
    payload = Payload(b"x" * size)
    payload.known_digests()["sha256"] = "sentinel: computed before"
    response = asyncio.run(plugin.scan(payload, Request([payload])))
    assert response.results["sha256"] == "sentinel: computed before"
    assert response.results["md5"] == hashlib.md5(payload.content).hexdigest()
