"""``--cache`` / ``--no-cache`` and ``[core] cache``: results reused across ``stoq`` runs."""

from __future__ import annotations

from pathlib import Path

from cli_support import StoqRunner

from stoq_cli._consumers import child_arguments
from stoq_cli._home import EngineOptions


def _cached(stoq: StoqRunner, sample: Path, *flags: str) -> dict[str, str] | None:
    done = stoq("scan", str(sample), "-s", "cli_carve", *flags)
    assert done.code == 0, done.err
    cached: dict[str, str] | None = done.json()["results"][0].get("cached")
    return cached


def test_with_cache_a_second_run_reuses_the_workers_result(stoq: StoqRunner, sample: Path) -> None:
    first = stoq("scan", str(sample), "-s", "cli_carve", "--cache")
    second = stoq("scan", str(sample), "-s", "cli_carve", "--cache")

    assert (first.code, second.code) == (0, 0), second.err
    assert "cached" not in first.json()["results"][0]
    reused = second.json()["results"][0]
    assert list(reused["cached"]) == ["cli_carve"]
    assert reused["workers"] == first.json()["results"][0]["workers"]
    assert (stoq.home / "cache" / "results.sqlite3").is_file()


def test_without_the_flag_or_stoq_cfg_nothing_is_cached(stoq: StoqRunner, sample: Path) -> None:
    assert _cached(stoq, sample) is None
    assert _cached(stoq, sample) is None
    assert not (stoq.home / "cache" / "results.sqlite3").exists()


def test_stoq_cfg_turns_the_cache_on_and_no_cache_turns_it_off_for_one_run(
    stoq: StoqRunner, sample: Path
) -> None:
    stoq.home.mkdir(exist_ok=True)
    (stoq.home / "stoq.cfg").write_text("[core]\ncache = local\n")

    assert _cached(stoq, sample) is None
    assert _cached(stoq, sample, "--no-cache") is None
    assert list(_cached(stoq, sample) or {}) == ["cli_carve"]


def test_an_unknown_backend_in_stoq_cfg_is_one_error_line(stoq: StoqRunner, sample: Path) -> None:
    stoq.home.mkdir(exist_ok=True)
    (stoq.home / "stoq.cfg").write_text("[core]\ncache = lcoal\n")
    done = stoq("scan", str(sample), "-s", "cli_carve")

    assert done.code == 2 and done.out == ""
    assert done.err.splitlines() == [
        "stoq: error: [core] cache: no cache backend 'lcoal'; did you mean 'local'? "
        "(known: local, off, redis; plugin distributions add others through the 'stoq.cache' "
        "entry points)"
    ]


def test_a_bad_cache_ttl_is_one_error_line(stoq: StoqRunner, sample: Path) -> None:
    stoq.home.mkdir(exist_ok=True)
    (stoq.home / "stoq.cfg").write_text("[core]\ncache = local\ncache_ttl = -1\n")
    done = stoq("scan", str(sample), "-s", "cli_carve")

    assert done.code == 2
    [line] = done.err.splitlines()
    assert line.startswith("stoq: error: ") and "cache_ttl must be a number of seconds >= 0" in line


def test_consumers_pass_the_cache_flag_to_each_child() -> None:
    assert "--cache" in child_arguments(EngineOptions(cache=True))
    assert "--no-cache" in child_arguments(EngineOptions(cache=False))
    assert not {"--cache", "--no-cache"} & set(child_arguments(EngineOptions()))


def test_with_jobs_every_format_keeps_the_cached_mark(stoq: StoqRunner, tmp_path: Path) -> None:
    # Each worker process writes its cache entries before it ends (it ends with os._exit, which
    # skips exit's handlers); its responses are rebuilt here for jsonl: the mark must survive.
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(6):
        (tree / f"f{index}").write_bytes(f"part a|part {index}".encode())
    stoq("scan", str(tree), "-s", "cli_carve", "--cache", "--jobs", "2")

    lines = stoq(
        "scan", str(tree), "-s", "cli_carve", "--cache", "--jobs", "2", "--format", "jsonl"
    )
    jsonl = [line["results"][0] for line in lines.lines()]
    jsonl = [result for result in jsonl if not result["extracted_from"]]  # the files
    compact = stoq("scan", str(tree), "-s", "cli_carve", "--cache", "--jobs", "2").lines()

    assert lines.code == 0, lines.err
    assert len(jsonl) == len(compact) == 6
    assert all(list(line["cached"]) == ["cli_carve"] for line in jsonl)
    assert all(list(r["results"][0]["cached"]) == ["cli_carve"] for r in compact)
