"""``stoq submit`` and ``stoq results`` (this plugin's ``stoq.commands``) and ``stoq run -P redis``,
run as a user runs them: the installed ``stoq`` script, against a real redis-server.

Moved here from the core's tests (issue 14): the core's command line no longer knows Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from conftest import TESTS, RedisServer, free_port

from stoq_core.testing import CommandResult, StoqCommand


@pytest.fixture
def stoq(stoq_command: StoqCommand, plugin_site: Path) -> StoqCommand:
    """The installed ``stoq`` (``stoq_core.testing``), with the test plugins on PYTHONPATH."""
    paths = [str(plugin_site), str(TESTS), *filter(None, [stoq_command.env.get("PYTHONPATH")])]
    stoq_command.env["PYTHONPATH"] = os.pathsep.join(paths)
    return stoq_command


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """Three files, one of them in a subdirectory."""
    directory = tmp_path / "samples"
    (directory / "deeper").mkdir(parents=True)
    (directory / "a.txt").write_bytes(b"alpha")
    (directory / "b.txt").write_bytes(b"bravo!")
    (directory / "deeper" / "c.txt").write_bytes(b"charlie")
    return directory


def worker(
    stoq: StoqCommand, server: RedisServer, *more: str, timeout: float = 90
) -> CommandResult:
    """``stoq run -P redis -C redis -a sleepy`` until the queue has been idle for a moment."""
    return stoq(
        "run", "-P", "redis", "-C", "redis", "-a", "sleepy", *more,
        "--plugin-opts", f"redis:url={server.url}", "redis:stop_when_idle=0.5",
        "redis:claim_idle=2",
        timeout=timeout,
    )  # fmt: skip


def one_line_error(done: CommandResult) -> str:
    assert done.code == 2, done.err
    assert done.out == ""
    assert len(done.err.splitlines()) == 1, done.err
    assert "Traceback" not in done.err
    return done.err


# -- the whole flow ----------------------------------------------------------------------------


def test_submit_prints_one_task_id_per_file_and_the_count_on_stderr(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    done = stoq("submit", str(samples), "--url", server.url)

    assert done.code == 0, done.err
    task_ids = done.out.split()
    assert len(task_ids) == 3
    assert "submitted 3 task(s) to stoq:tasks" in done.err
    queued = [f[b"task_id"].decode() for _, f in db.xrange("stoq:tasks")]
    assert queued == task_ids


def test_submitted_files_are_scanned_by_a_worker_and_printed_by_results(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    task_ids = stoq("submit", str(samples), "--url", server.url).out.split()

    ran = worker(stoq, server)
    shown = stoq("results", "--url", server.url)

    assert ran.code == 0, ran.err
    assert shown.code == 0, shown.err
    responses = shown.lines()
    by_task = {r["request_meta"]["extra_data"]["task_id"]: r for r in responses}
    assert sorted(by_task) == sorted(task_ids) and len(responses) == 3
    echoed = {
        r["results"][0]["payload_meta"]["extra_data"]["filename"]: r["results"][0]["workers"][
            "sleepy"
        ]["size"]
        for r in responses
    }
    assert echoed == {"a.txt": 5, "b.txt": 6, "c.txt": 7}
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0


def test_submit_wait_prints_each_result_as_a_worker_saves_it(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    waiting = subprocess.Popen(
        stoq.command("submit", str(samples), "--url", server.url, "--wait", "--timeout", "60"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.environment(), cwd=stoq.cwd,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while db.xlen("stoq:tasks") < 3:  # submitted; now the worker may start
            assert time.monotonic() < deadline and waiting.poll() is None
            time.sleep(0.02)
        ran = worker(stoq, server)
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()

    assert ran.code == 0, ran.err
    assert waiting.returncode == 0, err
    responses = [json.loads(line) for line in out.decode().splitlines()]
    assert sorted(r["results"][0]["workers"]["sleepy"]["size"] for r in responses) == [5, 6, 7]


def _results(db: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in db.xrange("stoq:results")]


def test_submit_wait_exits_1_when_a_scan_reported_errors(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    waiting = subprocess.Popen(
        stoq.command("submit", str(samples / "a.txt"), "--url", server.url, "--wait",
                     "--timeout", "60"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.environment(), cwd=stoq.cwd,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while db.xlen("stoq:tasks") < 1:
            assert time.monotonic() < deadline and waiting.poll() is None
            time.sleep(0.02)
        worker(stoq, server, "-a", "raiser")
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()

    assert waiting.returncode == 1, err
    [response] = [json.loads(line) for line in out.decode().splitlines()]
    assert response["errors"][0]["plugin_name"] == "raiser"


def test_submit_wait_gives_up_after_its_timeout_with_exit_1(
    stoq: StoqCommand, server: RedisServer, samples: Path
) -> None:
    done = stoq("submit", str(samples / "a.txt"), "--url", server.url, "--wait", "--timeout", "0.3")

    assert done.code == 1
    assert done.out == ""
    assert "stoq: 1 of 1 tasks still have no result after 0.3 s" in done.err


def test_results_follow_prints_a_result_saved_after_it_started(
    stoq: StoqCommand, server: RedisServer, samples: Path
) -> None:
    stoq("submit", str(samples / "a.txt"), "--url", server.url)
    worker(stoq, server)  # an old result, which --follow does not print
    following = subprocess.Popen(
        stoq.command("results", "--follow", "--url", server.url),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.environment(), cwd=stoq.cwd,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # it has read where the stream ends
        [task_id] = stoq("submit", str(samples / "b.txt"), "--url", server.url).out.split()
        worker(stoq, server)
        assert following.stdout is not None
        first = json.loads(following.stdout.readline())
        following.send_signal(signal.SIGINT)
        _, err = following.communicate(timeout=30)
    finally:
        following.kill()

    assert first["request_meta"]["extra_data"]["task_id"] == task_id
    assert following.returncode == 130, err


def test_results_from_start_with_follow_prints_the_stored_results_first(
    stoq: StoqCommand, server: RedisServer, samples: Path
) -> None:
    [task_id] = stoq("submit", str(samples / "a.txt"), "--url", server.url).out.split()
    worker(stoq, server)
    following = subprocess.Popen(
        stoq.command("results", "--follow", "--from-start", "--url", server.url),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.environment(), cwd=stoq.cwd,
    )  # fmt: skip
    try:
        assert following.stdout is not None
        first = json.loads(following.stdout.readline())
    finally:
        following.kill()
        following.wait(timeout=30)

    assert first["request_meta"]["extra_data"]["task_id"] == task_id


def test_the_url_comes_from_the_redis_section_of_stoq_cfg(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text(f"[redis]\nurl = {server.url}\nstream = lab:tasks\n")

    done = stoq("submit", str(samples / "a.txt"))

    assert done.code == 0, done.err
    assert db.xlen("lab:tasks") == 1


# -- several worker processes ----------------------------------------------------------------


def test_run_with_two_consumers_shares_a_batch_between_two_processes(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, tmp_path: Path
) -> None:
    files = tmp_path / "batch"
    files.mkdir()
    for number in range(60):
        (files / f"f{number:02d}.txt").write_bytes(b"x" * number)
    task_ids = stoq("submit", str(files), "--url", server.url).out.split()

    ran = worker(stoq, server, "--consumers", "2", "--log-level", "info")

    assert ran.code == 0, ran.err
    readers = {line.split(" as ")[1].split()[0] for line in ran.err.splitlines() if " as " in line}
    assert len(readers) == 2, ran.err  # two consumers of the group, one per process
    saved = [f[b"task_id"].decode() for f in _results(db)]
    assert sorted(saved) == sorted(task_ids)  # each task once
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0


# -- queue poison (issue 12) -----------------------------------------------------------------


def _dead_letters(db: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in db.xrange("stoq:tasks:dead")]


def test_one_garbled_message_among_a_thousand_costs_only_itself(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, tmp_path: Path
) -> None:
    # It once crashed every worker that read it, and the tasks queued behind it were
    # dead-lettered unscanned after a few restarts.
    for half, count in (("first", 500), ("second", 499)):
        (tmp_path / half).mkdir()
        for number in range(count):
            # Sizes from 1: an empty file is skipped, as 'stoq scan' skips it.
            (tmp_path / half / f"{half}{number:03d}.txt").write_bytes(b"x" * (number + 1))
    task_ids = stoq("submit", str(tmp_path / "first"), "--url", server.url).out.split()
    garbled = db.xadd("stoq:tasks", {b"task_id": b"\xff\xfe", b"payload": b"x"})
    task_ids += stoq("submit", str(tmp_path / "second"), "--url", server.url).out.split()
    assert len(task_ids) == 999

    ran = worker(stoq, server, "--consumers", "2", timeout=600)  # started once, never again
    shown = stoq("results", "--url", server.url)

    assert ran.code == 0, ran.err
    assert "provider redis failed" not in ran.err, ran.err
    assert shown.code == 0, shown.err
    saved = [r["request_meta"]["extra_data"]["task_id"] for r in shown.lines()]
    assert sorted(saved) == sorted(task_ids)  # 999 results, one each
    [letter] = _dead_letters(db)
    assert letter[b"message_id"] == garbled
    assert letter[b"error"] == (
        b"malformed task message: its task_id field is not UTF-8: b'\\xff\\xfe'"
    )
    assert letter[b"deliveries"] == b"1"
    assert (letter[b"task_id"], letter[b"payload"]) == (b"\xff\xfe", b"x")  # kept as given
    assert db.xpending("stoq:tasks", "stoq")["pending"] == 0
    assert db.xlen("stoq:tasks") == 0


@pytest.mark.parametrize(
    ("garbled", "reason"),
    [
        ({b"task_id": b"t-1", b"payload": b"x", b"\xc3\x28": b"y"}, "a field name is not UTF-8"),
        (
            {b"task_id": b"t-1", b"archiver": b"\xe2\x82", b"task": b"{}"},
            "its archiver field is not UTF-8",
        ),
        ({b"task_id": b"t-1", b"payload": b"x" * 2000}, "more than max_payload_size (1000 bytes)"),
        (
            {b"task_id": b"t-1", b"payload": b"x", b"archiver": b"redis"},
            "it has both a payload field and an archiver field",
        ),
        ({b"task_id": b"t-1", b"payload": b"x", b"priority": b"1"}, "no task message has"),
    ],
)
def test_a_malformed_message_is_dead_lettered_at_once_while_the_worker_goes_on(
    stoq: StoqCommand,
    server: RedisServer,
    db: redis.Redis,
    samples: Path,
    garbled: dict[bytes, bytes],
    reason: str,
) -> None:
    db.xadd("stoq:tasks", garbled)  # type: ignore[arg-type]
    task_ids = stoq("submit", str(samples), "--url", server.url).out.split()

    ran = worker(stoq, server, "--plugin-opts", "redis:max_payload_size=1000")

    assert ran.code == 0, ran.err
    saved = [f[b"task_id"].decode() for f in _results(db)]
    assert sorted(saved) == sorted(task_ids)
    [letter] = _dead_letters(db)
    assert reason in letter[b"error"].decode()
    assert letter[b"deliveries"] == b"1"
    assert "moved to stoq:tasks:dead (delivery 1): malformed task message" in ran.err


def _unreadable_results(db: redis.Redis) -> tuple[list[str], list[str]]:
    """Results entries, good and bad in turn; returns the good task ids and the bad entry ids."""
    good, bad = [], []
    for number, damaged in enumerate(
        [{"task_id": "d-1"}, {"task_id": "d-2", "result": b"\xff{"}, {"result": "[1]"}]
    ):
        task_id = f"t-{number}"
        response = {"request_meta": {"extra_data": {"task_id": task_id}}}
        db.xadd("stoq:results", {"task_id": task_id, "result": json.dumps(response)})
        good.append(task_id)
        bad.append(db.xadd("stoq:results", damaged).decode())  # type: ignore[arg-type]
    db.xadd(
        "stoq:results",
        {"result": json.dumps({"request_meta": {"extra_data": {"task_id": "last"}}})},
    )
    return [*good, "last"], bad


def test_results_reports_an_entry_it_cannot_read_and_prints_the_rest(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis
) -> None:
    good, bad = _unreadable_results(db)

    shown = stoq("results", "--url", server.url)

    assert shown.code == 1
    assert [r["request_meta"]["extra_data"]["task_id"] for r in shown.lines()] == good
    assert shown.err.splitlines() == [
        f"stoq: results entry {bad[0]} skipped: it has no result field (task 'd-1')",
        f"stoq: results entry {bad[1]} skipped: its result is not UTF-8 (task 'd-2'): b'\\xff{{'",
        f"stoq: results entry {bad[2]} skipped: its result is not a JSON object: b'[1]'",
    ]


def test_results_follow_reports_an_entry_it_cannot_read_and_goes_on(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis
) -> None:
    good, bad = _unreadable_results(db)
    following = subprocess.Popen(
        stoq.command("results", "--follow", "--from-start", "--url", server.url),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=stoq.environment(), cwd=stoq.cwd,
    )  # fmt: skip
    try:
        assert following.stdout is not None
        seen = [json.loads(following.stdout.readline()) for _ in good]
        following.send_signal(signal.SIGINT)
        _, err = following.communicate(timeout=30)
    finally:
        following.kill()

    assert [r["request_meta"]["extra_data"]["task_id"] for r in seen] == good
    assert [line.split()[3] for line in err.decode().splitlines() if "skipped" in line] == bad
    assert following.returncode == 130


# -- bad input -------------------------------------------------------------------------------


def test_submit_of_a_missing_file_is_a_one_line_error_and_sends_nothing(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    done = stoq("submit", str(samples / "a.txt"), "nope.txt", "--url", server.url)

    # In the words of 'stoq scan nope.txt': both take files by one rule.
    assert one_line_error(done) == "stoq: error: nope.txt: No such file or directory\n"
    assert db.exists("stoq:tasks") == 0


def test_submit_to_an_unreachable_redis_is_a_one_line_error(
    stoq: StoqCommand, samples: Path
) -> None:
    done = stoq("submit", str(samples), "--url", f"redis://127.0.0.1:{free_port()}/0")

    assert "cannot reach Redis at redis://127.0.0.1:" in one_line_error(done)


@pytest.mark.parametrize("follow", [[], ["--follow"]])
def test_results_from_an_unreachable_redis_is_a_one_line_error(
    stoq: StoqCommand, follow: list[str]
) -> None:
    done = stoq("results", *follow, "--url", f"redis://127.0.0.1:{free_port()}/0")

    assert "cannot reach Redis at redis://127.0.0.1:" in one_line_error(done)


def test_a_url_that_is_not_redis_is_a_one_line_error(stoq: StoqCommand) -> None:
    done = stoq("results", "--url", "http://example.org")

    assert "must start with redis://, rediss:// or unix://" in one_line_error(done)


@pytest.mark.parametrize("command", ["submit", "results"])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:s3cret@h:notaport/0", "cannot be read: its host and port must be"),
        ("redis://:s3cret@[::1/0", "cannot be read: its host and port must be"),
        ("redis://h/notadb", "the path must be a database number"),
        ("redis://h/0?colour=red", "unexpected keyword argument 'colour'"),
    ],
)
def test_a_bad_url_is_a_one_line_usage_error_without_its_password(
    stoq: StoqCommand, samples: Path, command: str, url: str, message: str
) -> None:
    args = [str(samples)] if command == "submit" else []

    err = one_line_error(stoq(command, *args, "--url", url))

    assert message in err
    assert "s3cret" not in err


def test_submit_of_an_empty_directory_is_a_one_line_error(
    stoq: StoqCommand, server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()

    done = stoq("submit", str(tmp_path / "empty"), "--url", server.url)

    assert "nothing to submit" in one_line_error(done)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit"], "Missing argument 'PATH...'"),
        (["submit", "x", "--timeout", "5"], "--timeout needs --wait"),
        (["submit", "x", "--wait", "--timeout", "-1"], "-1.0 is not in the range x>0"),
        (["submit", "x", "--wait", "--timeout", "nan"], "nan is not a finite number of seconds"),
    ],
)
def test_bad_command_lines_are_one_line_errors(
    stoq: StoqCommand, args: list[str], message: str
) -> None:
    assert message in one_line_error(stoq(*args))


def test_a_bad_stoq_cfg_is_a_one_line_error(stoq: StoqCommand, samples: Path) -> None:
    stoq.home.mkdir()
    (stoq.home / "stoq.cfg").write_text("[redis\nurl = x\n")

    assert "is not a valid stoq.cfg" in one_line_error(stoq("submit", str(samples)))


def test_stoq_help_lists_the_commands_as_the_plugins(stoq: StoqCommand) -> None:
    done = stoq("--help")

    assert done.code == 0, done.err
    listed = done.out.split("Plugin commands:")[1].split()
    assert listed[listed.index("submit") + 2] == "stoq-plugin-redis"
    assert listed[listed.index("results") + 2] == "stoq-plugin-redis"


# -- the files submitted are the files 'stoq scan' scans ---------------------------------------


def test_submit_skips_empty_files_under_a_directory_as_scan_does(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    empty = samples / "deeper" / "empty.txt"
    empty.touch()

    submitted = stoq("submit", str(samples), "--url", server.url)
    scanned = stoq("scan", str(samples))

    assert submitted.code == 0, submitted.err
    note = f"stoq: skipping {empty}: empty (--allow-empty scans it)"
    assert note in submitted.err.splitlines()
    assert note in scanned.err.splitlines()
    assert len(submitted.out.split()) == len(scanned.lines()) == 3
    assert db.xlen("stoq:tasks") == 3


def test_submit_allow_empty_submits_empty_files(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, samples: Path
) -> None:
    (samples / "empty.txt").touch()

    done = stoq("submit", str(samples), "--allow-empty", "--url", server.url)

    assert done.code == 0, done.err
    assert "skipping" not in done.err
    assert db.xlen("stoq:tasks") == 4


def test_submit_of_a_named_empty_file_is_refused_as_by_scan(
    stoq: StoqCommand, server: RedisServer, db: redis.Redis, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.bin"
    empty.touch()

    err = one_line_error(stoq("submit", str(empty), "--url", server.url))

    assert err == f"stoq: error: {empty} is empty (use --allow-empty to scan it anyway)\n"
    assert db.exists("stoq:tasks") == 0
