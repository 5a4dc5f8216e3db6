"""Every code block of README.md and docs/*.md runs, so the documentation cannot rot.

One test per block, named ``doc:line``. Each block runs in a sandbox of its own (see
``docs_run_support.Sandbox``): a temporary ``$HOME``, ``$STOQ_HOME`` and current directory
holding the sample files the docs name (``suspicious.zip``, ``samples/``, ``message.eml``...),
with the docs' example paths (``/tmp/in``, ``/srv/rules``) moved under it.

- **Shell** blocks (and indented blocks of commands) run line by line with bash; each line must
  exit 0, or with the status its comment documents (``# exits 1``). A command that serves until
  Ctrl-C (``stoq run -P redis``, ``stoq results --follow``) is interrupted once it has settled
  and must exit 130. A transcript runs its ``$`` lines; a synopsis line
  (``stoq list [--json] ...``) must match ``stoq ... --help``.
- **Installing** changes no environment: ``pip install`` and ``stoq install DISTRIBUTION`` are
  checked by pip with ``--dry-run --ignore-installed --no-index`` (the specs must resolve and
  local projects build their metadata, as on a fresh machine without the package index), then
  local projects are published into the sandbox's site folder, editable-like, for the doc's
  next commands. The real install of every distribution from its wheel is
  tests/test_distributions.py's; ``stoq install`` of a v3 plugin folder runs for real (it
  copies into the sandbox's ``$STOQ_HOME``).
- **Python** blocks run with this interpreter: a program must exit 0; a plugin class (or a hook
  method or its body, wrapped in a class) is published under an entry point and must pass
  ``stoq plugin check`` and scan without a raised error; a module of tests runs with pytest
  against the plugin the doc builds.
- **ini** blocks are written as the sandbox's ``stoq.cfg`` (a v3 ``.stoq`` file as a plugin
  folder's) and loaded through ``stoq plugin check`` and ``stoq scan``; plugin sections naming
  a plugin this checkout lacks get a stand-in worker of that name, and the variables its
  ``$env:NAME`` values name are set. **toml** blocks must parse,
  and their stoq entry points name a class or function the doc defines; **json** must parse.
- Files a doc's blocks name in a first-line comment (``# src/stoq_plugin_x/plugin.py``) are
  assembled into the doc's project in the current directory; a doc without any runs in a view
  of this checkout (its commands run "from a clone").

A block that cannot run here is marked with ``<!-- not run: reason -->`` right before it and
skipped with that reason; a marker without a reason, or an unmarked block of no known kind,
fails. Commands that need Redis start a ``redis-server`` on a free loopback port when one is on
PATH and are skipped, saying so, when not.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import pytest
from docs_run_support import (
    COMMAND_TIMEOUT,
    EXPECTED_STATUS,
    SERVE_SECONDS,
    SERVES_UNTIL_INTERRUPTED,
    STAND_IN,
    V3_PLUGIN,
    Block,
    Sandbox,
    all_blocks,
    defined_names,
    entry_points_of,
    free_port,
    has_method,
    kind,
    not_run_reason,
    plugin_classes,
    prelude,
    publish_project,
    python_source,
    shell_commands,
    wait_for_port,
    write_dist_info,
)

BLOCKS = all_blocks()
REDIS_SERVER = shutil.which("redis-server")


def _status(code: int) -> int:
    """A shell's view of an exit status: killed by signal N is 128 + N."""
    return 128 - code if code < 0 else code


def assembled_files(doc: str) -> dict[str, str]:
    """The files a doc's blocks say they are (a first-line ``# path``), later ones winning; a
    TOML fragment (no ``[build-system]``) is not a whole pyproject.toml and is left out."""
    files: dict[str, str] = {}
    for block in BLOCKS:
        path = block.header_path
        if block.doc != doc or path is None:
            continue
        if path.endswith(".toml") and "[build-system]" not in block.text:
            continue
        files[path] = block.text
    return files


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sandbox]:
    block: Block = request.param
    box = Sandbox(tmp_path)
    box.build(assembled_files(block.doc))
    yield box
    box.stop_background()


def _fail(
    block: Block, what: str, done: subprocess.CompletedProcess[str] | None = None
) -> NoReturn:
    detail = ""
    if done is not None:
        detail = f"\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
    pytest.fail(f"{block.id}: {what}{detail}", pytrace=False)


def _run(
    box: Sandbox, args: list[str], timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in the sandbox; past ``timeout``, its whole process group is killed (what a
    shell line started must not outlive the test)."""
    process = subprocess.Popen(
        args,
        cwd=box.cwd,
        env=box.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n(killed after {timeout} s)"
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _stoq(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(box, [str(Path(sys.executable).parent / "stoq"), *args])


# --- shell ------------------------------------------------------------------------------------


def _popen(box: Sandbox, command: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["bash", "-c", prelude() + command],
            cwd=box.cwd,
            env=box.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _run_line(block: Block, box: Sandbox, command: str, line: int) -> None:
    documented = EXPECTED_STATUS.search(command)
    expected = int(documented.group(1)) if documented else 0
    command = box.rewrite(command)
    where = f"line {line}: `{command}`"
    if re.search(r"\|\s*jq\b", command) and shutil.which("jq") is None:
        pytest.skip(f"{where} needs jq, and none is on PATH")
    if re.search(r"(?<!&)&\s*(#.*)?$", command):
        log = box.root / f"background-{len(box.background)}.log"
        box.background.append(_popen(box, re.sub(r"&\s*(#.*)?$", "", command), log))
        if command.startswith("redis-server") and box.redis_port is not None:
            if not wait_for_port(box.redis_port):
                _fail(block, f"{where}: redis-server did not start: {log.read_text()[-2000:]}")
        return
    if any(pattern.search(command) for pattern in SERVES_UNTIL_INTERRUPTED):
        _interrupt(block, box, command, where)
        return
    done = _run(box, ["bash", "-c", prelude() + command])
    if _status(done.returncode) != expected:
        _fail(block, f"{where}: exited {_status(done.returncode)}, expected {expected}", done)


def _interrupt(block: Block, box: Sandbox, command: str, where: str) -> None:
    """Start a command that serves until Ctrl-C, let it settle, press Ctrl-C: it must exit 130."""
    log = box.root / "serving.log"
    process = _popen(box, command, log)
    if not _settled(process, log):
        _fail(
            block,
            f"{where}: stopped by itself ({process.returncode}) instead of serving:\n{log.read_text()[-3000:]}",
        )
    # As a terminal does: SIGINT to the whole foreground process group.
    os.killpg(process.pid, signal.SIGINT)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _fail(block, f"{where}: still running 60 s after Ctrl-C:\n{log.read_text()[-3000:]}")
    if _status(code) != 130:
        _fail(
            block, f"{where}: exited {_status(code)} on Ctrl-C, not 130:\n{log.read_text()[-3000:]}"
        )


def _settled(process: subprocess.Popen[bytes], log: Path) -> bool:
    """Wait until a serving command is up: ``SERVE_SECONDS`` and then its output quiet for two
    seconds (its workers have started and said so), or 60 s. False if it ended meanwhile.

    A Ctrl-C while `stoq run --consumers N` is still starting its processes is not what the docs
    show, and it is flaky on a loaded machine."""
    deadline = time.monotonic() + 60
    size, quiet_since = -1, time.monotonic()
    time.sleep(SERVE_SECONDS)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        now_size = log.stat().st_size
        if now_size != size:
            size, quiet_since = now_size, time.monotonic()
        elif time.monotonic() - quiet_since >= 2.0:
            return True
        time.sleep(0.1)
    return process.poll() is None


def _uses_redis(block: Block) -> bool:
    return bool(re.search(r"\bredis\b|stoq submit|stoq results", block.text))


def _prepare_redis(block: Block, box: Sandbox) -> None:
    if REDIS_SERVER is None:
        pytest.skip("needs a redis-server, and none is on PATH")
    box.redis_port = free_port()
    (box.stoq_home / "stoq.cfg").write_text(
        f"[redis]\nurl = redis://127.0.0.1:{box.redis_port}/0\n"
    )
    if "redis-server" not in block.text:
        box.background.append(
            subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(box.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(box.root),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        if not wait_for_port(box.redis_port):
            _fail(block, "the test's redis-server did not start")
    if "stoq submit" in block.text and not re.search(r"stoq run .*&", block.text):
        # `stoq submit --wait` waits for a worker: the docs start one elsewhere.
        _run_line(block, box, "stoq run -P redis -C redis -a hash &", 0)


def run_shell(block: Block, box: Sandbox, transcript: bool = False) -> None:
    if _uses_redis(block):
        _prepare_redis(block, box)
    if transcript:
        install_doc_project(block, box)
    for command, offset in shell_commands(block.text, prompt=transcript):
        _run_line(block, box, command, block.first_line + offset)


def run_synopsis(block: Block, box: Sandbox) -> None:
    line = block.text.strip()
    words = []
    for word in line.split()[1:]:
        if word[0] in "[-" or not word.islower():
            break
        words.append(word)
    done = _stoq(box, *words, "--help")
    if done.returncode:
        _fail(block, f"`stoq {' '.join(words)} --help` exited {done.returncode}", done)
    for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line):
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", done.stdout):
            _fail(block, f"{option} is not an option of `stoq {' '.join(words)}`", done)


# --- python -------------------------------------------------------------------------------------


def install_doc_project(block: Block, box: Sandbox) -> None:
    """Install the projects the doc assembles into the sandbox's site folder, for a block that
    takes them as installed (a transcript of using the plugin, the plugin's tests)."""
    for path in assembled_files(block.doc):
        if Path(path).name == "pyproject.toml":
            publish_project(box.cwd / Path(path).parent, box.site)


def run_python(block: Block, box: Sandbox) -> None:
    source, what = python_source(block.text)
    if what == "program":
        script = box.cwd / "doc_block.py"
        script.write_text(source)
        done = _run(box, [sys.executable, str(script)])
        if done.returncode:
            _fail(block, f"the program exited {done.returncode}", done)
    elif what == "tests":
        install_doc_project(block, box)
        folder = box.cwd / "doc_tests"
        folder.mkdir()
        (folder / "pytest.ini").write_text("[pytest]\n")
        (folder / "conftest.py").write_text('pytest_plugins = ["stoq_core.testing"]\n')
        (folder / "test_doc_block.py").write_text(source)
        done = _run(
            box, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)]
        )
        if done.returncode:
            _fail(block, f"its tests failed (pytest exited {done.returncode})", done)
    else:
        run_plugin(block, box, source)


# An error the engine records for a hook that raised, timed out or returned the wrong type, as
# opposed to one the plugin chose to return.
ENGINE_ERROR = re.compile(r"^\w+ (failed|timed out)\b|returned \w+, expected")


def run_plugin(block: Block, box: Sandbox, source: str) -> None:
    (box.site / "docs_snippet.py").write_text(source)
    classes = plugin_classes(source)
    names = {cls.lower(): f"docs_snippet:{cls}" for cls in classes}
    write_dist_info(box.site, "docs-snippet", "1.0", {"stoq.plugins": names})
    done = _stoq(box, "plugin", "check", *names)
    if done.returncode:
        _fail(block, "its plugin does not load", done)
    for cls in classes:
        if not has_method(source, cls, "scan"):
            continue
        done = _stoq(box, "scan", "sample.exe", "-s", cls.lower(), "--compact")
        if done.returncode not in (0, 1):
            _fail(block, f"scanning with {cls} exited {done.returncode}", done)
        try:
            errors = json.loads(done.stdout)["errors"]
        except (ValueError, KeyError):
            _fail(block, f"scanning with {cls} printed no response", done)
        raised = [e for e in errors if ENGINE_ERROR.search(e["error"])]
        if raised:
            _fail(block, f"scanning with {cls} recorded {raised}", done)


# --- ini, toml, json ------------------------------------------------------------------------------


def _installed_plugins() -> set[str]:
    return {ep.name for ep in metadata.entry_points(group="stoq.plugins")}


def run_ini(block: Block, box: Sandbox) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(block.text)
    except configparser.Error as exc:
        _fail(block, f"is not an INI file: {exc}")
    if parser.has_section("Core") and parser.has_section("Documentation"):
        run_v3_stoq_file(block, box, parser)
        return
    (box.stoq_home / "stoq.cfg").write_text(box.rewrite(block.text))
    box.extra_env.update(dict.fromkeys(re.findall(r"\$env:(\w+)", block.text), "docs-test-value"))
    sections = [s for s in parser.sections() if s != "core"]
    missing = [s for s in sections if s not in _installed_plugins()]
    if missing:
        (box.site / "docs_stand_in.py").write_text(STAND_IN)
        entry_points = {name: "docs_stand_in:StandIn" for name in missing}
        write_dist_info(box.site, "docs-stand-in", "1.0", {"stoq.plugins": entry_points})
    if sections:
        done = _stoq(box, "plugin", "check", *sections)
        if done.returncode:
            _fail(block, "as stoq.cfg, its plugin sections do not load", done)
    if parser.has_section("core"):
        done = _stoq(box, "scan", "sample.exe", "--compact")
        if done.returncode:
            _fail(block, f"as stoq.cfg, `stoq scan sample.exe` exited {done.returncode}", done)


def run_v3_stoq_file(block: Block, box: Sandbox, parser: configparser.ConfigParser) -> None:
    name, module = parser["Core"]["Name"], parser["Core"]["Module"]
    folder = box.root / "v3-plugins" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.stoq").write_text(block.text)
    (folder / f"{module}.py").write_text(V3_PLUGIN.format(cls="DocPlugin"))
    plugin_dir = str(folder.parent)
    done = _stoq(box, "plugin", "check", name, "--plugin-dir", plugin_dir)
    if done.returncode:
        _fail(block, "as a v3 plugin's .stoq file, it does not load", done)
    listed = json.loads(_stoq(box, "list", "--json", "--plugin-dir", plugin_dir).stdout)
    [entry] = [p for p in listed if p["name"] == name]
    if entry["version"] != parser["Documentation"]["Version"]:
        _fail(block, f"stoq list shows version {entry['version']}, not the file's")


def run_toml(block: Block) -> None:
    defined = set().union(
        *(defined_names(b.text) for b in BLOCKS if b.doc == block.doc and b.info == "python")
    )
    for group, names in entry_points_of(block.text).items():
        for name, target in names.items():
            attr = target.partition(":")[2]
            if attr and attr not in defined:
                _fail(
                    block,
                    f"entry point {group} {name} = {target!r}: no block of {block.doc} defines {attr}",
                )


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "sandbox"), [(b, b) for b in BLOCKS], ids=[b.id for b in BLOCKS], indirect=["sandbox"]
)
def test_documented_block_runs(block: Block, sandbox: Sandbox) -> None:
    reason = not_run_reason(block)
    if reason == "":
        _fail(block, "is marked `not run` without a reason: <!-- not run: why -->")
    if reason is not None:
        pytest.skip(f"not run: {reason}")
    what = kind(block)
    if what is None:
        _fail(
            block,
            "is no block the test knows how to run: give its fence a language "
            "(sh, python, ini, toml, json) or mark it <!-- not run: why -->",
        )
    elif what in ("shell", "transcript"):
        run_shell(block, sandbox, transcript=what == "transcript")
    elif what == "synopsis":
        run_synopsis(block, sandbox)
    elif what == "python":
        run_python(block, sandbox)
    elif what == "ini":
        run_ini(block, sandbox)
    elif what == "toml":
        run_toml(block)
    elif what == "json":
        json.loads(block.text)


def test_every_doc_has_blocks_and_each_block_one_test() -> None:
    assert {b.doc for b in BLOCKS} >= {"README.md", "docs/cli.md", "docs/writing-plugins.md"}
    assert len({b.id for b in BLOCKS}) == len(BLOCKS)
