"""What tests/test_docs_run.py needs to run the documentation's code blocks.

Reading the blocks (markdown-it, so fenced and indented blocks are found as a renderer finds
them), deciding what each one is, building the sandbox a block runs in (a home, a current
directory holding the sample files the docs name, a site folder for what the docs "install"),
and running shell lines in it.

Run as a script, it is the stand-in the shell blocks get for ``pip install`` and for ``stoq
install`` of a distribution (see ``main``): the docs' install lines are checked by pip itself
(``--dry-run``) without changing the test's environment.
"""

from __future__ import annotations

import ast
import email.message
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import tomllib
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent

# An HTML comment right before a block: `<!-- not run: why -->`.
MARKER = re.compile(r"<!--\s*not run\b\s*:?\s*(?P<reason>.*?)\s*-->", re.S)

# The first word of a line that makes an unlabelled block a shell block.
SHELL_COMMANDS = {"stoq", "python", "python3", "pip", "cd", "cat", "nox", "redis-server"}

# Absolute paths the docs use as examples; a block sees them under its sandbox instead, so that
# a test never writes to the machine's /tmp or /srv nor depends on what is there.
SANDBOXED_ROOTS = ("/tmp", "/srv", "/etc/stoq", "/nowhere")

# A documented exit status: `stoq plugin check yara ...   # exits 1`.
EXPECTED_STATUS = re.compile(r"#.*?\bexits (\d+)\b")

# Commands that serve until Ctrl-C: the test lets them start, interrupts them and expects the
# documented 130.
SERVES_UNTIL_INTERRUPTED = (
    re.compile(r"^stoq run\b.*-P\s*redis\b"),
    re.compile(r"^stoq results\b.*(--follow|\s-f\b)"),
)
SERVE_SECONDS = 4.0
COMMAND_TIMEOUT = 240.0


@dataclass(frozen=True)
class Block:
    """One code block of a doc: where it is, its language and text, and its marker if any."""

    doc: str
    line: int
    info: str
    text: str
    marker: str | None
    fenced: bool = True

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def first_line(self) -> int:
        """The line of the block's first line of code (a fence's opening line comes before)."""
        return self.line + 1 if self.fenced else self.line

    @property
    def header_path(self) -> str | None:
        """The file a block says it is, by a first-line comment: `# src/pkg/plugin.py`."""
        first = self.text.split("\n", 1)[0]
        found = re.fullmatch(r"#\s*([\w./-]+\.(?:py|toml))\s*", first)
        return found.group(1) if found else None


def blocks(path: Path) -> list[Block]:
    """Every code block of ``path``, fenced or indented, with the HTML comment just before it."""
    doc = str(path.relative_to(ROOT))
    found: list[Block] = []
    previous_html: str | None = None
    for token in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        if token.type == "html_block":
            previous_html = token.content
            continue
        if token.type in ("fence", "code_block") and token.map is not None:
            info = token.info.strip().split(" ", 1)[0] if token.type == "fence" else ""
            fenced = token.type == "fence"
            found.append(Block(doc, token.map[0] + 1, info, token.content, previous_html, fenced))
        if token.type.endswith("_open") or token.type in ("fence", "code_block"):
            # Only a comment immediately before a block marks it: a paragraph, heading or list
            # between the two breaks the link.
            previous_html = None
    return found


def all_blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in blocks(path)]


def not_run_reason(block: Block) -> str | None:
    """The reason a block is marked not to run; ``""`` for a marker without one."""
    if block.marker is None:
        return None
    found = MARKER.search(block.marker)
    return None if found is None else found.group("reason")


# --- what a block is ---------------------------------------------------------------------------


def is_synopsis(text: str) -> bool:
    """A one-line usage summary: `stoq plugin check [OPTIONS] NAME...`."""
    lines = text.strip().splitlines()
    return (
        len(lines) == 1
        and lines[0].startswith("stoq")
        and bool(re.search(r"\[[-A-Z]|[A-Z]\.\.\.", lines[0]))
    )


def is_transcript(text: str) -> bool:
    return any(line.startswith("$ ") for line in text.splitlines())


def is_shell(text: str) -> bool:
    commands = list(shell_commands(text))
    return bool(commands) and all(c.split(maxsplit=1)[0] in SHELL_COMMANDS for c, _ in commands)


def kind(block: Block) -> str | None:
    """What the test does with ``block``: shell, transcript, synopsis, python, ini, toml, json.

    ``None``: the block cannot be classified (it needs a language or a `not run` marker).
    """
    if block.info in ("sh", "bash", "shell", "console"):
        return "transcript" if is_transcript(block.text) else "shell"
    if block.info in ("python", "py"):
        return "python"
    if block.info in ("ini", "cfg"):
        return "ini"
    if block.info in ("toml", "json"):
        return block.info
    if block.info:
        return None
    if is_synopsis(block.text):
        return "synopsis"
    if is_transcript(block.text):
        return "transcript"
    if is_shell(block.text):
        return "shell"
    return None


def shell_commands(text: str, prompt: bool = False) -> Iterator[tuple[str, int]]:
    """The commands of a shell block, continuation lines joined, with their line offsets.

    ``prompt``: only the lines starting with ``$ `` are commands (a transcript); the others are
    output.
    """
    pending: list[str] = []
    start = 0
    for offset, raw in enumerate(text.splitlines()):
        if not pending:
            if prompt and not raw.startswith("$ "):
                continue
            line = raw[2:] if prompt else raw
            start = offset
        else:
            line = raw
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        yield " ".join(part.strip() for part in pending), start
        pending = []


# --- the sandbox -------------------------------------------------------------------------------

MZ = (
    b"MZ\x90\x00\x03"
    + b"\x00" * 59
    + b"This program cannot be run in DOS mode.\r\r\n$"
    + b"\x00" * 64
)

YARA_RULE = """rule doc_sample_mz
{
    strings:
        $mz = "MZ"
    condition:
        $mz at 0
}
"""

V3_PLUGIN = '''"""A v3 worker, as the public v3 plugins are written."""

from stoq.data_classes import WorkerResponse
from stoq.plugins import WorkerPlugin


class {cls}(WorkerPlugin):
    async def scan(self, payload, request):
        return WorkerResponse({{"size": len(payload.content)}})
'''

V3_STOQ_FILE = """[Core]
Name = {name}
Module = {name}

[Documentation]
Author = docs test
Version = 3.0.0
Description = a v3 plugin the docs name
"""

STAND_IN = '''"""A worker standing in for a plugin a stoq.cfg example names but this checkout lacks."""

from stoq_core import WorkerResponse, hookimpl


class StandIn:
    def __init__(self, config):
        self.config = config

    @hookimpl
    async def scan(self, payload, request):
        return WorkerResponse({"size": len(payload.content)})
'''


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _mail(attachment: bytes) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = "Alice <alice@example.com>"
    message["To"] = "bob@example.com"
    message["Subject"] = "invoice"
    message["Message-ID"] = "<1@example.com>"
    message.set_content("The invoice is attached.\n")
    message.add_attachment(
        attachment, maintype="application", subtype="zip", filename="invoice.zip"
    )
    return bytes(message)


def sample_files() -> dict[str, bytes]:
    """The files the docs' commands name, relative to the current directory of a block."""
    inner = _zip({"docs/invoice.doc": b"\xd0\xcf\x11\xe0 not really a document", "stub.exe": MZ})
    mail = _mail(inner)
    data = b"some bytes\x00\x00\x00 to scan\n"
    files = {
        "suspicious.zip": _zip({"readme.txt": b"hello\n", "inner.zip": inner}),
        "message.eml": mail,
        "mail.eml": mail,
        "rules.yar": YARA_RULE.encode(),
        "samples/one.txt": b"one\n",
        "samples/two.bin": data,
        "samples/nested/three.zip": inner,
        "in/first.txt": b"first\n",
        "in/second.bin": data,
    }
    for name in ("sample.exe", "bad.exe", "a.exe"):
        files[name] = MZ
    for name in ("FILE", "b.doc", "x.bin", "sample.bin", "some.file"):
        files[name] = data
    return files


def sandboxed_files() -> dict[str, bytes | None]:
    """What the sandbox holds at the absolute paths the docs name (``None``: a directory)."""
    return {
        "tmp/in/first.txt": b"first\n",
        "tmp/monitor/new.txt": b"new\n",
        "tmp/results": None,
        "srv/rules/sample.yar": YARA_RULE.encode(),
        "srv/stoq/results": None,
        "etc/stoq/rules/sample.yar": YARA_RULE.encode(),
    }


def write_v3_plugin(folder: Path, name: str) -> None:
    """A v3 plugin folder: ``name.stoq``, its module and a requirements.txt (already met)."""
    folder.mkdir(parents=True)
    (folder / f"{name}.stoq").write_text(V3_STOQ_FILE.format(name=name))
    (folder / f"{name}.py").write_text(V3_PLUGIN.format(cls=f"{name.title()}Plugin"))
    (folder / "requirements.txt").write_text("pluggy\n")


def write_home_files(home: Path) -> None:
    """The v3 plugins the docs install from ``~``: a plugin folder and v3 source folders."""
    write_v3_plugin(home / "v3-plugins" / "peinfo", "peinfo")
    public = home / "src" / "stoq-plugins-public"
    write_v3_plugin(public / "mraptor" / "mraptor", "mraptor")
    (public / "mraptor" / "setup.py").write_text("raise SystemExit('never run')\n")
    (public / "mraptor" / "requirements.txt").write_text("pluggy\n")
    write_v3_plugin(public / "yara" / "yarascan", "yarascan")


def write_dist_info(site: Path, dist: str, version: str, groups: dict[str, dict[str, str]]) -> None:
    """An installed distribution's metadata under ``site``, with entry points in any group."""
    info = site / f"{re.sub(r'[-.]+', '_', dist)}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    text = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in names.items())
        for group, names in groups.items()
    )
    (info / "entry_points.txt").write_text(text)


@dataclass
class Sandbox:
    """Where one block runs: a home, a ``$STOQ_HOME``, a current directory, a site folder."""

    root: Path
    redis_port: int | None = None
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Variables a block's `$env:NAME` values name, so that they are set as its reader would.
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def cwd(self) -> Path:
        return self.root / "work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def stoq_home(self) -> Path:
        return self.root / "stoq-home"

    @property
    def site(self) -> Path:
        return self.root / "site"

    def build(self, assembled: dict[str, str]) -> None:
        """Sample files in the current directory, the doc's own files over them (``assembled``:
        path -> text), or, when the doc assembles none, a view of this checkout (its README's
        commands run from a clone)."""
        for directory in (self.cwd, self.home, self.stoq_home, self.site):
            directory.mkdir(parents=True)
        for name, content in sample_files().items():
            target = self.cwd / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        for name, maybe in sandboxed_files().items():
            target = self.root / name
            if maybe is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(maybe)
        write_home_files(self.home)
        if assembled:
            for name, text in assembled.items():
                target = self.cwd / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            (self.cwd / "packages").symlink_to(ROOT / "packages")
        else:
            for entry in ROOT.iterdir():
                if not entry.name.startswith(".") and not (self.cwd / entry.name).exists():
                    (self.cwd / entry.name).symlink_to(entry)

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("STOQ_", "PYTEST_", "PIP_", "VIRTUAL_ENV", "COV_"))
        }
        env.update(
            HOME=str(self.home),
            STOQ_HOME=str(self.stoq_home),
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=str(self.site),
            DOCS_RUN_SITE=str(self.site),
            DOCS_RUN_PYTHON=sys.executable,
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
            NO_COLOR="1",
            COLUMNS="120",
        )
        env.update(self.extra_env)
        return env

    def rewrite(self, text: str) -> str:
        """``text`` with the docs' example paths and Redis address moved into the sandbox."""
        for prefix in SANDBOXED_ROOTS:
            text = re.sub(
                rf"(?<![\w.~/-]){re.escape(prefix)}(?=/|\b)", f"{self.root}{prefix}", text
            )
        if self.redis_port is not None:
            text = re.sub(r"redis://[^/\s]+/", f"redis://127.0.0.1:{self.redis_port}/", text)
            text = re.sub(r"--port 6379\b", f"--port {self.redis_port} --bind 127.0.0.1", text)
        return text

    def stop_background(self) -> None:
        for process in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.background:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.background.clear()


def prelude() -> str:
    """What every shell line runs after: stand-ins for installing into the environment."""
    helper = Path(__file__).resolve()
    return f"""set -o pipefail
_docs_run() {{ "$DOCS_RUN_PYTHON" {helper} "$@"; }}
pip() {{ _docs_run pip "$@"; }}
pip3() {{ _docs_run pip "$@"; }}
python() {{ if [ "$1" = -m ] && [ "$2" = pip ]; then shift 2; _docs_run pip "$@"; \
else command python "$@"; fi; }}
python3() {{ python "$@"; }}
stoq() {{ if [ "$1" = install ]; then shift; _docs_run stoq-install "$@"; \
else command stoq "$@"; fi; }}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --- the pip stand-in --------------------------------------------------------------------------


def _project_name(directory: Path) -> tuple[str, str, dict[str, dict[str, str]]]:
    with open(directory / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    version = str(project.get("version", "0"))
    return str(project["name"]), version, dict(project.get("entry-points", {}))


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def publish_project(directory: Path, site: Path) -> None:
    """``pip install -e directory`` for the sandbox: its packages linked into the site folder
    (which is on the block's ``PYTHONPATH``) and its metadata, entry points included, written
    there. A distribution the test environment already has (this repository's) stays as it is."""
    name, version, groups = _project_name(directory)
    if _installed(name):
        return
    source = directory / "src" if (directory / "src").is_dir() else directory
    for entry in source.iterdir():
        is_module = entry.suffix == ".py" or (entry.is_dir() and entry.name.isidentifier())
        if is_module and entry.name != "setup.py" and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry.resolve())
    write_dist_info(site, name, version, groups)


def pip_install(args: list[str]) -> int:
    """Check a documented ``pip install`` with pip itself, changing nothing.

    pip resolves the specs as a fresh environment would (``--ignore-installed``: a name this
    environment happens to have is not taken as given) and builds each local project's
    metadata (``--dry-run``: nothing is installed; ``--no-index``: nothing is fetched). Then
    each local project is published into the sandbox's site folder (editable-like), so the
    doc's next commands find its plugins.
    """
    if not args or args[0] != "install":
        print(f"docs test: only `pip install` is supported, not {args}", file=sys.stderr)
        return 2
    # `-e` is dropped for the check: the metadata is the same, and an editable build needs
    # hatchling's `editables`, which pip's build isolation would fetch from the index.
    specs = [a for a in args[1:] if a not in ("-U", "--upgrade", "-e", "--editable")]
    checked = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "install", "--dry-run", "--no-deps", "--no-index"),
            *("--no-build-isolation", "--ignore-installed", "--quiet"),
            *specs,
        ],
        check=False,
    )
    if checked.returncode:
        return checked.returncode
    site = Path(os.environ["DOCS_RUN_SITE"])
    for spec in specs:
        path = Path(re.sub(r"\[.*\]$", "", spec))
        if not spec.startswith("-") and (path / "pyproject.toml").is_file():
            publish_project(path, site)
    return 0


def _v3_plugin_folder(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.is_dir() and next(path.rglob("*.stoq"), None) is not None


def stoq_install(args: list[str]) -> int:
    """``stoq install``: v3 plugin folders for real (they go to the sandbox's ``$STOQ_HOME``),
    distributions through ``pip_install``'s check (they would change the test's environment)."""
    if any(_v3_plugin_folder(arg) for arg in args if not arg.startswith("-")):
        stoq = shutil.which("stoq") or str(VENV_BIN / "stoq")
        return subprocess.run([stoq, "install", *args], check=False).returncode
    return pip_install(["install", *args])


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "pip":
        return pip_install(rest)
    if command == "stoq-install":
        return stoq_install(rest)
    print(f"docs test: unknown stand-in {command!r}", file=sys.stderr)
    return 2


# --- Python blocks -----------------------------------------------------------------------------

FRAGMENT_PREAMBLE = "from stoq_core import *  # noqa: F403\nfrom stoq_core import hookimpl\n\n"
FRAGMENT_CLASS = (
    "class DocFragment:\n    def __init__(self, config):\n        self.config = config\n\n"
)


def python_source(text: str) -> tuple[str, str]:
    """The block as a module to run, and what it is: ``program``, ``tests``, ``plugin``.

    A method (``def`` with ``self``) or statements that only make sense in one (``return ...``)
    are wrapped in a worker class, so they are checked as the plugin code they are.
    """
    try:
        # compile, not ast.parse: only the compiler refuses a `return` outside a function.
        compile(text, "<block>", "exec")
    except SyntaxError:
        body = "\n".join(f"        {line}" for line in text.splitlines())
        source = (
            f"{FRAGMENT_PREAMBLE}{FRAGMENT_CLASS}    @hookimpl\n"
            f"    async def scan(self, payload, request):\n{body}\n"
        )
        compile(source, "<block>", "exec")
        return source, "plugin"
    tree = ast.parse(text)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if any(f.args.args and f.args.args[0].arg == "self" for f in functions):
        body = "\n".join(f"    {line}" for line in text.splitlines())
        return f"{FRAGMENT_PREAMBLE}{FRAGMENT_CLASS}{body}\n", "plugin"
    if any(f.name.startswith("test_") for f in functions):
        return text, "tests"
    if plugin_classes(text):
        return text, "plugin"
    return text, "program"


def plugin_classes(source: str) -> list[str]:
    """The classes of ``source`` that are plugins: a method marked ``@hookimpl``, or a base class
    of ``stoq_core.plugins`` (``WorkerPlugin``...)."""
    names = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
        marked = any(
            (isinstance(d, ast.Name) and d.id == "hookimpl") or ast.unparse(d).endswith("hookimpl")
            for item in node.body
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            for d in item.decorator_list
        )
        if marked or any(base.endswith("Plugin") for base in bases):
            names.append(node.name)
    return names


def has_method(source: str, cls: str, method: str) -> bool:
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return any(
                isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == method
                for item in node.body
            )
    return False


def defined_names(source: str) -> set[str]:
    """The top-level classes and functions a Python block defines (``set()`` if it is a
    fragment that does not parse on its own)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    }


def entry_points_of(toml_text: str) -> dict[str, dict[str, str]]:
    """The stoq entry points (``stoq.plugins``, ``stoq.commands``) a TOML block declares."""
    parsed = tomllib.loads(toml_text)
    groups = parsed.get("project", {}).get("entry-points", {})
    return {group: dict(names) for group, names in groups.items() if group.startswith("stoq.")}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
