"""The hash worker, loaded through its entry point the way a user's Stoq loads it.

``stoq_with`` (stoq_core.testing) gives a Stoq with only this plugin loaded, from its entry
point; ``scan_sync`` runs a whole scan and ``call_hook`` one call of ``scan``, as the engine does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Optional

import pytest
from stoq_plugin_hash import PARALLEL_THRESHOLD

from stoq_core import Stoq, StoqPluginException
from stoq_core.testing import call_hook, make_payload, scan_sync

HELLO = {
    "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    "md5": "5d41402abc4b2a76b9719d911017c592",
    "sha1": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
}

StoqWith = Callable[..., Stoq]


@pytest.fixture
def make_stoq(stoq_with: StoqWith) -> Callable[..., Stoq]:
    """``make_stoq(options)``: a Stoq that runs hash on every payload, with these options."""

    def make(options: Optional[dict[str, Any]] = None) -> Stoq:
        return stoq_with("hash", options=options, always_dispatch=["hash"])

    return make


def scan_hash(stoq: Stoq, content: bytes) -> Any:
    response = scan_sync(stoq, content)
    assert response.errors == []
    return response.results[0].workers["hash"]


def test_known_bytes_give_their_known_digests(make_stoq: Callable[..., Stoq]) -> None:
    assert scan_hash(make_stoq(), b"hello") == HELLO


def test_results_are_keyed_sha256_md5_sha1_in_that_order(make_stoq: Callable[..., Stoq]) -> None:
    assert list(scan_hash(make_stoq(), b"hello")) == ["sha256", "md5", "sha1"]


def test_the_empty_payload_has_the_digests_of_no_bytes(make_stoq: Callable[..., Stoq]) -> None:
    expected = {name: hashlib.new(name, b"").hexdigest() for name in ("sha256", "md5", "sha1")}
    assert scan_hash(make_stoq(), b"") == expected


def test_algorithms_option_picks_the_algorithms(make_stoq: Callable[..., Stoq]) -> None:
    results = scan_hash(make_stoq({"algorithms": ["sha512"]}), b"hello")
    assert results == {"sha512": hashlib.sha512(b"hello").hexdigest()}


def test_algorithms_option_orders_the_results(make_stoq: Callable[..., Stoq]) -> None:
    results = scan_hash(make_stoq({"algorithms": "sha1, sha3_256, md5"}), b"hello")
    assert list(results) == ["sha1", "sha3_256", "md5"]
    assert results["sha3_256"] == hashlib.sha3_256(b"hello").hexdigest()


def test_algorithm_names_are_case_insensitive(make_stoq: Callable[..., Stoq]) -> None:
    results = scan_hash(make_stoq({"algorithms": ["SHA256"]}), b"hello")
    assert results == {"sha256": HELLO["sha256"]}


def test_an_unknown_algorithm_fails_to_load_naming_it(make_stoq: Callable[..., Stoq]) -> None:
    with pytest.raises(StoqPluginException, match="unknown hash algorithm 'sha257'"):
        make_stoq({"algorithms": ["sha256", "sha257"]})


def test_a_variable_length_algorithm_fails_to_load_naming_it(
    make_stoq: Callable[..., Stoq],
) -> None:
    with pytest.raises(StoqPluginException, match="'shake_128' has no fixed digest length"):
        make_stoq({"algorithms": ["shake_128"]})


def test_a_payload_over_the_threshold_gets_hashlibs_digests(make_stoq: Callable[..., Stoq]) -> None:
    content = bytes(range(256)) * (PARALLEL_THRESHOLD // 256 + 1)
    expected = {name: hashlib.new(name, content).hexdigest() for name in ("sha256", "md5", "sha1")}
    assert scan_hash(make_stoq(), content) == expected


def test_a_payload_over_the_threshold_keeps_its_digests_cached(
    make_stoq: Callable[..., Stoq],
) -> None:
    payload = make_payload(b"\x01" * (PARALLEL_THRESHOLD + 1))
    outcome = call_hook(make_stoq(), "hash", "scan", payload)
    assert outcome.errors == []
    assert payload.known_digests() == outcome.value.results


def test_a_small_payload_keeps_its_digests_cached(make_stoq: Callable[..., Stoq]) -> None:
    payload = make_payload(b"hello")
    call_hook(make_stoq(), "hash", "scan", payload)
    assert payload.known_digests() == HELLO


@pytest.mark.parametrize("size", [5, PARALLEL_THRESHOLD + 1], ids=["small", "large"])
def test_a_cached_sha256_is_reused_not_recomputed(
    make_stoq: Callable[..., Stoq], size: int
) -> None:
    payload = make_payload(b"x" * size)
    payload.known_digests()["sha256"] = "sentinel: computed before"
    results = call_hook(make_stoq(), "hash", "scan", payload).value.results
    assert results["sha256"] == "sentinel: computed before"
    assert results["md5"] == hashlib.md5(payload.content).hexdigest()
