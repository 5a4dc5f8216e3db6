"""``stoq plugin new``: the files of a new plugin distribution, ``stoq-plugin-NAME``.

Every generated file is built here from small string templates: a pyproject (hatchling) with
the ``stoq.plugins`` entry point, the plugin module with one commented example per chosen hook,
tests that pass as generated (through ``stoq_core.testing``), a README and ``py.typed``.

Each hook's example brings its own options, imports, helper functions, tests and README lines,
so any subset of hooks gives a module that imports exactly what it uses.

The examples that write and read files are safe to copy (issue 12): their directories default
to ``$STOQ_HOME``, never to a fixed name in the shared temporary directory; files are created
exclusively and renamed into place, and never opened through a symbolic link.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from string import Template

__all__ = [
    "HOOK_ORDER",
    "Scaffold",
    "ScaffoldError",
    "core_requirement",
    "parse_hooks",
    "parse_name",
    "write_scaffold",
]

#: The hooks a plugin can implement, in the order a scan meets them (``hookspecs.HOOK_NAMES``;
#: a test holds them equal). Spelled out so that writing files needs nothing of the core.
HOOK_ORDER = ("ingest", "get", "get_dispatches", "scan", "archive", "decorate", "save")

# Lowercase words of letters and digits joined by single '-' or '_', starting with a letter.
_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_PREFIXES = ("stoq-plugin-", "stoq_plugin_")
_MAX_NAME = 60


class ScaffoldError(ValueError):
    """A name, hook list or target the user gave that a plugin cannot be made from."""


def parse_name(text: str) -> str:
    """The plugin name for ``text``: lowercase words joined by ``-`` or ``_``.

    A leading ``stoq-plugin-`` (the distribution's name typed instead) is dropped.

    :raises ScaffoldError: the name is empty, too long, or has characters a name cannot.
    """
    name = text.strip()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if not name:
        raise ScaffoldError(f"plugin name {text!r} is empty")
    if len(name) > _MAX_NAME:
        raise ScaffoldError(f"plugin name {text!r} is longer than {_MAX_NAME} characters")
    if _NAME.fullmatch(name) is None:
        hint = ""
        lowered = name.lower()
        if lowered != name and _NAME.fullmatch(lowered):
            hint = f"; did you mean {lowered!r}?"
        raise ScaffoldError(
            f"plugin name {text!r} is not valid: use lowercase letters, digits and single "
            f"'-' or '_' between them, starting with a letter (e.g. 'pe_info'){hint}"
        )
    return name


def parse_hooks(values: Iterable[str]) -> tuple[str, ...]:
    """``('scan,get_dispatches', 'save')`` as hooks in scan order; ``('all',)`` is every hook.

    :raises ScaffoldError: a name is not a hook (the message lists the valid ones).
    """
    chosen: set[str] = set()
    for value in values:
        for part in value.split(","):
            hook = part.strip()
            if not hook:
                continue
            if hook == "all":
                chosen.update(HOOK_ORDER)
                continue
            if hook not in HOOK_ORDER:
                close = difflib.get_close_matches(hook, HOOK_ORDER, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ScaffoldError(
                    f"unknown hook {hook!r}{hint} (valid: {', '.join(HOOK_ORDER)}, or all)"
                )
            chosen.add(hook)
    if not chosen:
        raise ScaffoldError(f"no hook given (valid: {', '.join(HOOK_ORDER)}, or all)")
    return tuple(hook for hook in HOOK_ORDER if hook in chosen)


def core_requirement(core_version: str) -> str:
    """The core range a new plugin supports: this core's major version, ``stoq-core>=4,<5``."""
    match = re.match(r"\d+", core_version)
    if match is None:
        raise ScaffoldError(f"cannot read the major version of stoq-core {core_version!r}")
    major = int(match.group())
    return f"stoq-core>={major},<{major + 1}"


@dataclasses.dataclass(frozen=True)
class Scaffold:
    """What a new plugin is: its name, hooks and the core range it declares."""

    name: str
    hooks: tuple[str, ...]
    requirement: str
    description: str = ""

    @property
    def distribution(self) -> str:
        """``stoq-plugin-pe-info`` for ``pe_info``: PyPI's normal form uses hyphens."""
        return "stoq-plugin-" + self.name.replace("_", "-")

    @property
    def package(self) -> str:
        """``stoq_plugin_pe_info``: the import package."""
        return "stoq_plugin_" + self.name.replace("-", "_")

    @property
    def class_name(self) -> str:
        """``PeInfoPlugin``."""
        words = re.split(r"[-_]", self.name)
        return "".join(word[:1].upper() + word[1:] for word in words) + "Plugin"

    def summary(self) -> str:
        """One line for the metadata and docstrings: the description, or what the plugin is."""
        if self.description:
            return self.description
        roles = [_HOOKS[hook].role for hook in self.hooks]
        if len(roles) > 2:
            return f"A stoQ plugin with {len(roles)} roles"
        return "A stoQ " + " and ".join(roles)

    def files(self) -> dict[str, str]:
        """Every file of the distribution, by its path relative to the project directory."""
        src = f"src/{self.package}"
        return {
            "pyproject.toml": self._pyproject(),
            "README.md": self._readme(),
            ".gitignore": _GITIGNORE,
            f"{src}/__init__.py": self._init(),
            f"{src}/plugin.py": self._plugin(),
            f"{src}/py.typed": "",
            "tests/conftest.py": _CONFTEST,
            "tests/test_plugin.py": self._tests(),
        }

    # -- the files -----------------------------------------------------------------------

    def _subst(self, template: str, python: bool = False) -> str:
        text = Template(template).substitute(
            name=self.name,
            cls=self.class_name,
            package=self.package,
            distribution=self.distribution,
            requirement=self.requirement,
            summary=_quoted(self.summary()),
            summary_text=self.summary(),
            hooks=", ".join(f"`{hook}`" for hook in self.hooks),
        )
        return _fit_prose(text) if python else text

    def _pyproject(self) -> str:
        return self._subst(_PYPROJECT)

    def _init(self) -> str:
        line = f"from {self.package}.plugin import {self.class_name}"
        return self._subst(_INIT.replace("$$IMPORT", _wrap(line)), python=True)

    def _plugin(self) -> str:
        examples = [_HOOKS[hook] for hook in self.hooks]
        imports = _import_block(
            [name for example in examples for name in example.imports],
            always={"stoq_core": ["StoqConfigParser", "hookimpl"]},
        )
        options: dict[str, str] = {}
        for example in examples:
            options.update(example.options)
        # A constructor with nothing to read still needs a statement after its comments.
        option_lines = "\n".join(options.values()) or "        self.config = config"
        methods = "".join(example.method for example in examples)
        # Module-level helpers after the class, each once however many hooks use it.
        helpers: dict[str, str] = {}
        for example in examples:
            helpers.update(example.helpers)
        body = (
            _PLUGIN_HEAD
            + imports
            + _PLUGIN_CLASS
            + option_lines
            + "\n"
            + methods
            + "".join(helpers.values())
        )
        return self._subst(body, python=True)

    def _tests(self) -> str:
        examples = [_HOOKS[hook] for hook in self.hooks]
        imports = _import_block(
            [name for example in examples for name in example.test_imports],
            always={"stoq_core.testing": []},
        )
        hooks_list = ", ".join(f'"{hook}"' for hook in self.hooks)
        if len(f"    assert info.hooks == [{hooks_list}]") > _WIDTH:
            hooks_list = "".join(f'\n        "{hook}",' for hook in self.hooks) + "\n    "
        body = (
            _TEST_HEAD
            + imports
            + _TEST_COMMON.replace("$$HOOKS", hooks_list)
            + "".join(example.tests for example in examples)
        )
        return self._subst(body, python=True)

    def _readme(self) -> str:
        examples = [_HOOKS[hook] for hook in self.hooks]
        width = max(len(example.usage[0]) for example in examples)
        usage = "\n".join(
            f"    {command:<{width}}  # {what}" for command, what in (e.usage for e in examples)
        )
        rows = list(dict.fromkeys(row for example in examples for row in example.option_rows))
        if rows:
            options = _README_OPTIONS + "\n".join(rows) + "\n"
        else:
            options = 'None yet: read them in `__init__` with `config.get("options", ...)`.\n'
        text = _README.replace("$$USAGE", usage).replace("$$OPTIONS", options)
        return self._subst(text)


def write_scaffold(scaffold: Scaffold, parent: Path) -> Path:
    """Write ``scaffold`` into ``parent/stoq-plugin-NAME`` and return that directory.

    The files are written to a temporary sibling first and moved into place at the end, so a
    failure never leaves half a project behind.

    :raises ScaffoldError: the directory exists already, or ``parent`` is not a directory.
    """
    target = parent / scaffold.distribution
    if target.exists() or target.is_symlink():
        raise ScaffoldError(f"{target} already exists: remove it or choose another --dir")
    if parent.exists() and not parent.is_dir():
        raise ScaffoldError(f"--dir {parent} is not a directory")
    parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its directory is private (0700), and this one becomes the project.
    staging = parent / f".{scaffold.distribution}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    try:
        for relative, text in scaffold.files().items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


#: The generated code's line length: ruff's and black's default.
_WIDTH = 88
_QUOTES = ('"""', "'''")


def _fit_prose(source: str) -> str:
    """Break the docstring and comment lines a long plugin name pushed past ``_WIDTH``.

    Only prose is touched: a line is broken at its last space that fits, and the rest goes to
    a new line with the same indentation (and ``# `` for a comment).
    """
    out: list[str] = []
    in_docstring = False
    for line in source.split("\n"):
        stripped = line.lstrip()
        comment = stripped.startswith("#")
        prose = in_docstring or comment or stripped.startswith(_QUOTES)
        if sum(line.count(quotes) for quotes in _QUOTES) % 2:
            in_docstring = not in_docstring
        indent = line[: len(line) - len(stripped)]
        while prose and len(line) > _WIDTH:
            cut = line.rfind(" ", len(indent) + 4, _WIDTH + 1)
            if cut < 0:
                break
            out.append(line[:cut].rstrip())
            line = indent + ("# " if comment else "") + line[cut + 1 :]
        out.append(line)
    return "\n".join(out)


def _quoted(text: str) -> str:
    # The summary goes between double quotes in TOML and in docstrings.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _import_block(names: Sequence[str], always: dict[str, list[str]]) -> str:
    """Imports for ``names`` (``"module:Name"``, or ``"module"`` alone), sorted as isort does:
    the standard library's, then the others; in each, ``import x`` lines before ``from x``."""
    plain: set[str] = set()
    members: dict[str, set[str]] = {module: set(given) for module, given in always.items()}
    for entry in names:
        module, _, member = entry.partition(":")
        if member:
            members.setdefault(module, set()).add(member)
        else:
            plain.add(module)
    lines = [f"import {module}" for module in plain] + [
        f"from {module} import {', '.join(sorted(imported, key=_isort_key))}"
        for module, imported in members.items()
        if imported
    ]
    sections = (
        sorted((line for line in lines if line.split()[1] not in _THIRD_PARTY), key=_line_key),
        sorted((line for line in lines if line.split()[1] in _THIRD_PARTY), key=_line_key),
    )
    blocks = ["\n".join(_wrap(line) for line in section) for section in sections if section]
    return "\n\n".join(blocks) + "\n"


# Modules that are not the standard library's, for grouping the imports.
_THIRD_PARTY = {"pytest", "stoq_core", "stoq_core.testing"}


def _isort_key(name: str) -> tuple[int, str]:
    # isort's "force_sort_within_sections" off: CONSTANTS, then Classes, then functions.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return (kind, name)


def _line_key(line: str) -> tuple[int, str]:
    # isort's default: every ``import x`` of a section before its ``from x import y``.
    return (0 if line.startswith("import ") else 1, line.split()[1])


def _wrap(line: str) -> str:
    if len(line) <= _WIDTH or " import " not in line:
        return line
    head, names = line.split(" import ", 1)
    inner = "".join(f"    {name.strip()},\n" for name in names.split(","))
    return f"{head} import (\n{inner})"


@dataclasses.dataclass(frozen=True)
class _Example:
    """One hook's contribution to the generated project."""

    role: str
    imports: tuple[str, ...]  # "module:Name", or "module" for a plain import
    options: dict[str, str]  # option name -> the __init__ lines that read it
    method: str
    test_imports: tuple[str, ...]
    tests: str
    usage: tuple[str, str]  # a command line, and what it does
    option_rows: tuple[str, ...] = ()
    helpers: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> module code


# The generated files are laid out for a line length of 88 (ruff's and black's default), so
# a new project passes its author's formatter as generated.

_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.18"]
build-backend = "hatchling.build"

[project]
name = "${distribution}"
version = "0.1.0"
description = "${summary}"
readme = "README.md"
requires-python = ">=3.10"
keywords = ["stoq", "stoq-plugin"]
classifiers = [
    "Programming Language :: Python :: 3",
    "Framework :: AsyncIO",
    "Typing :: Typed",
]
# The stoQ core versions this plugin supports: the major version it was written for.
dependencies = ["${requirement}"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The entry-point name is the plugin's name, the one users type:
# stoq scan FILE -s ${name}
[project.entry-points."stoq.plugins"]
${name} = "${package}.plugin:${cls}"

[tool.hatch.build.targets.wheel]
packages = ["src/${package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-ra"
"""

_INIT = '''\
"""${summary}."""

$$IMPORT

__all__ = ["${cls}"]
'''

_GITIGNORE = """\
__pycache__/
*.py[cod]
dist/
build/
*.egg-info/
.pytest_cache/
"""

_CONFTEST = '''\
"""stoQ's fixtures for plugin tests: stoq_with, and the helpers of stoq_core.testing."""

pytest_plugins = ["stoq_core.testing"]
'''

_PLUGIN_HEAD = '''\
"""${summary}.

Generated by ``stoq plugin new``: each hook below is a working example to replace
with your own logic. stoQ finds the class through the ``stoq.plugins`` entry point
in pyproject.toml and calls its methods marked ``@hookimpl``; docs/writing-plugins.md
in the stoQ repository describes every hook.
"""

from __future__ import annotations

'''

_PLUGIN_CLASS = '''
__all__ = ["${cls}"]


class ${cls}:
    """${summary}.

    stoQ constructs one instance per run, with the plugin's options in ``config``.
    A hook may be ``async def`` (the usual case; it must not block) or a plain
    ``def`` for blocking work, which stoQ runs in a worker thread.
    """

    #: The name errors are filed under: the entry-point name in pyproject.toml.
    plugin_name = "${name}"

    def __init__(self, config: StoqConfigParser) -> None:
        # Options, highest first: --plugin-opts ${name}:KEY=VALUE on the command line
        # (or Stoq(plugin_opts=...)), the [${name}] section of stoq.cfg, then the
        # fallbacks below. The typed getters (getint, getfloat, getboolean, getlist,
        # getset, getjson) parse the text values. A raise here stops the plugin
        # from loading; 'stoq plugin check ${name}' prints why.
'''

_TEST_HEAD = '''\
"""Tests of the plugin, loaded through its entry point exactly as ``stoq`` loads it.

``stoq_with``, ``call_hook``, ``make_payload`` and ``scan_sync`` come from
``stoq_core.testing`` (tests/conftest.py opts in). Run them with:
pip install -e '.[test]' && pytest
"""

from __future__ import annotations

'''

_TEST_COMMON = """
NAME = "${name}"


def test_the_entry_point_loads_the_plugin_with_its_hooks(stoq_with):
    stoq = stoq_with(NAME)
    info = stoq.list_plugins()[NAME]
    assert info.error is None
    assert info.hooks == [$$HOOKS]
"""

_README_OPTIONS = """\
Set them with `--plugin-opts ${name}:OPTION=VALUE`, in the `[${name}]` section of
`$$STOQ_HOME/stoq.cfg`, or with `Stoq(plugin_opts={"${name}": {...}})`.

| option | default | meaning |
|---|---|---|
"""

_README = """\
# ${distribution}

${summary_text}.

Its name, the one `stoq` takes, is `${name}`. It implements the
[stoQ](https://github.com/PUNCH-Cyber/stoq) hooks ${hooks}, and needs
`${requirement}`.

## Install

    pip install ${distribution}
    stoq plugin check ${name}

From a checkout of this project, `stoq install .` (or `pip install .`) installs it.
`stoq plugin check ${name}` says whether it loads, and if it does not, why.

## Use

$$USAGE

## Options

$$OPTIONS
## Develop

    python -m venv .venv && . .venv/bin/activate
    pip install -e '.[test]'
    pytest

The tests use stoQ's fixtures (`pytest_plugins = ["stoq_core.testing"]` in
`tests/conftest.py`): `stoq_with("${name}", options={...})` gives a `Stoq` with only this
plugin loaded, through its entry point; `call_hook` runs one hook as the engine does;
`make_payload` and `scan_sync` build payloads and run whole scans.

## Publish

    pip install build twine
    python -m build && twine check dist/* && twine upload dist/*
"""


_SCAN = _Example(
    role="worker",
    imports=(
        "stoq_core:Error",
        "stoq_core:Payload",
        "stoq_core:Request",
        "stoq_core:WorkerResponse",
    ),
    options={
        "preview_bytes": (
            '        self.preview_bytes = config.getint("options", "preview_bytes", fallback=16)'
        )
    },
    method='''
    @hookimpl
    async def scan(self, payload: Payload, request: Request) -> WorkerResponse | None:
        """Worker: analyse one payload (stoq scan FILE -s ${name}).

        ``results`` go to the JSON under ``workers["${name}"]``. A response may also
        carry ``extracted=[ExtractedPayload(...)]``, scanned next round, and
        ``dispatch_to=[...]``, more workers for this payload. ``None``: nothing
        to say.
        """
        content = payload.content  # bytes (or a buffer such as an mmap)
        if not content:
            # An expected problem: return an Error; the response records it and the
            # scan goes on. A raise is recorded the same way, with its type.
            error = Error(
                "empty payload: nothing to preview",
                self.plugin_name,
                payload.payload_id,
            )
            return WorkerResponse(errors=[error])
        # Earlier workers' results are in payload.results.workers (["hash"]...);
        # the submitter's metadata in payload.results.payload_meta.extra_data.
        filename = payload.results.payload_meta.extra_data.get("filename")
        return WorkerResponse(
            {
                "size": len(content),
                "preview": bytes(content[: self.preview_bytes]).hex(),
                "filename": filename,
            }
        )
''',
    test_imports=(
        "stoq_core.testing:call_hook",
        "stoq_core.testing:make_payload",
        "stoq_core.testing:scan_sync",
    ),
    tests="""

def test_scan_reports_the_size_and_a_preview(stoq_with):
    stoq = stoq_with(NAME)
    response = scan_sync(stoq, b"hello world", start=[NAME])
    assert response.errors == []
    assert response.results[0].workers[NAME] == {
        "size": 11,
        "preview": b"hello world".hex(),
        "filename": None,
    }


def test_scan_preview_bytes_option_shortens_the_preview(stoq_with):
    stoq = stoq_with(NAME, options={"preview_bytes": 2})
    outcome = call_hook(stoq, NAME, "scan", make_payload(b"hello", filename="a.txt"))
    assert outcome.errors == []
    assert outcome.value.results == {"size": 5, "preview": "6865", "filename": "a.txt"}


def test_scan_returns_an_error_for_an_empty_payload(stoq_with):
    outcome = call_hook(stoq_with(NAME), NAME, "scan", make_payload(b""))
    errors = [error.error for error in outcome.value.errors]
    assert errors == ["empty payload: nothing to preview"]
""",
    usage=("stoq scan FILE -s ${name}", "a worker: results under workers.${name}"),
    option_rows=("| `preview_bytes` | 16 | how many leading bytes `scan` shows, as hex |",),
)

_GET_DISPATCHES = _Example(
    role="dispatcher",
    imports=("stoq_core:DispatcherResponse", "stoq_core:Payload", "stoq_core:Request"),
    options={
        "zip_workers": (
            "        self.zip_workers: list[str] = config.getlist(\n"
            '            "options", "zip_workers", fallback=["decompress"]\n'
            "        )"
        )
    },
    method=r'''
    @hookimpl
    async def get_dispatches(
        self, payload: Payload, request: Request
    ) -> DispatcherResponse | None:
        """Dispatcher: choose workers for a payload (stoq scan FILE -R ${name}).

        Called for every payload in every round, so it may route on what earlier
        workers found. The ``plugin_names`` run on this payload; ``meta`` is kept
        in ``payload.dispatch_meta["${name}"]`` for them. ``None``: no workers.
        """
        # Example: send ZIP archives to the workers the zip_workers option names.
        if bytes(payload.content[:4]) == b"PK\x03\x04" and self.zip_workers:
            return DispatcherResponse(self.zip_workers, meta={"matched": "zip magic"})
        return None
''',
    test_imports=("stoq_core.testing:call_hook", "stoq_core.testing:make_payload"),
    tests=r"""

def test_get_dispatches_sends_zip_archives_to_the_zip_workers(stoq_with):
    stoq = stoq_with(NAME, options={"zip_workers": "hash, decompress"})
    zip_start = make_payload(b"PK\x03\x04 and more")
    outcome = call_hook(stoq, NAME, "get_dispatches", zip_start)
    assert outcome.errors == []
    assert outcome.value.plugin_names == ["hash", "decompress"]
    assert outcome.value.meta == {"matched": "zip magic"}


def test_get_dispatches_leaves_other_payloads_alone(stoq_with):
    text = make_payload(b"plain text")
    outcome = call_hook(stoq_with(NAME), NAME, "get_dispatches", text)
    assert outcome.errors == []
    assert outcome.value is None
""",
    usage=("stoq scan FILE -R ${name} -a hash", "a dispatcher: picks workers per payload"),
    option_rows=(
        "| `zip_workers` | decompress | workers `get_dispatches` sends ZIP archives to |",
    ),
)

# Module-level helpers of the examples that touch files, shared by the hooks that use them.

_OPTION_DIR = '''

def _option_dir(config: StoqConfigParser, option: str, default: str) -> Path:
    """The directory ``option`` names, else ``default`` under stoQ's home.

    stoQ's home is the stoq command's: $$STOQ_HOME, else ~/.stoq. Not the temporary
    directory: a fixed name there is one another user can create first, or fill with
    links to files of their choosing for this plugin to write through.
    """
    given = config.get("options", option, fallback="")
    home = os.environ.get("STOQ_HOME") or "~/.stoq"
    return Path(given or os.path.join(home, default)).expanduser()
'''

_WRITE_FILE = '''

def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole, never through a symbolic link.

    The bytes go to a new file with a random name, created exclusively (O_EXCL fails
    if anything is there, a link included) and readable by you alone, then renamed to
    ``path``: a rename replaces a link at ``path``, never the file it points to.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
'''

_READ_FILE = '''

def _read_file(path: Path) -> bytes:
    """The bytes of the regular file at ``path``; a symbolic link there is refused.

    O_NOFOLLOW makes the open itself fail on a link, so a link swapped in after a
    check cannot turn the read to another file; O_NONBLOCK keeps a FIFO from hanging.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_symlink():
            raise StoqPluginException(f"{path} is a symbolic link: not read") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoqPluginException(f"{path} is not a regular file")
        return handle.read()
'''

_ARCHIVE_DIR_ROW = (
    "| `archive_dir` | `$$STOQ_HOME/archive/${name}` | where `archive` saves payloads, "
    "and `get` loads them, by sha256 |"
)

_ARCHIVE = _Example(
    role="destination archiver",
    imports=(
        "os",
        "secrets",
        "pathlib:Path",
        "stoq_core:ArchiverResponse",
        "stoq_core:Payload",
        "stoq_core:Request",
    ),
    options={
        "archive_dir": (
            "        self.archive_dir = _option_dir(\n"
            '            config, "archive_dir", f"archive/{self.plugin_name}"\n'
            "        )"
        )
    },
    method='''
    @hookimpl
    def archive(self, payload: Payload, request: Request) -> ArchiverResponse | None:
        """Destination archiver: save a payload's bytes (stoq scan FILE -A ${name}).

        A plain ``def``: writing files blocks, so stoQ runs it in a worker thread.
        ``results`` (what ``get`` needs to find the bytes again) go to the JSON
        under ``archivers["${name}"]``.
        """
        sha256 = payload.digest("sha256")  # computed once, shared with the core
        path = self.archive_dir / sha256
        # Named by content: a regular file of this name holds these bytes already.
        if path.is_symlink() or not path.is_file():
            # Private (0700): payloads may be malware, or someone's documents.
            self.archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_file(path, bytes(payload.content))
        return ArchiverResponse({"path": str(path), "sha256": sha256})
''',
    helpers={"_option_dir": _OPTION_DIR, "_write_file": _WRITE_FILE},
    test_imports=("pathlib:Path", "stoq_core.testing:call_hook", "stoq_core.testing:make_payload"),
    tests="""

def test_archive_saves_the_bytes_under_their_sha256(stoq_with, tmp_path):
    stoq = stoq_with(NAME, options={"archive_dir": str(tmp_path / "archive")})
    payload = make_payload(b"keep me")
    outcome = call_hook(stoq, NAME, "archive", payload)
    assert outcome.errors == []
    path = Path(outcome.value.results["path"])
    assert path == tmp_path / "archive" / payload.digest("sha256")
    assert path.read_bytes() == b"keep me"


def test_archive_defaults_to_a_directory_in_stoq_home(stoq_with, tmp_path, monkeypatch):
    monkeypatch.setenv("STOQ_HOME", str(tmp_path / "home"))
    payload = make_payload(b"keep me")
    outcome = call_hook(stoq_with(NAME), NAME, "archive", payload)
    assert outcome.errors == []
    expected = tmp_path / "home" / "archive" / NAME / payload.digest("sha256")
    assert Path(outcome.value.results["path"]) == expected


def test_archive_never_writes_through_a_link_planted_at_its_path(stoq_with, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    payload = make_payload(b"the payload")
    target = tmp_path / "victim"  # a write through the link would create it
    (archive / payload.digest("sha256")).symlink_to(target)
    stoq = stoq_with(NAME, options={"archive_dir": str(archive)})
    outcome = call_hook(stoq, NAME, "archive", payload)
    assert outcome.errors == []
    assert not target.exists()
    saved = archive / payload.digest("sha256")
    assert not saved.is_symlink()
    assert saved.read_bytes() == b"the payload"
""",
    usage=("stoq scan FILE -A ${name}", "an archiver: saves every payload's bytes"),
    option_rows=(_ARCHIVE_DIR_ROW,),
)

_GET = _Example(
    role="source archiver",
    imports=(
        "os",
        "re",
        "stat",
        "pathlib:Path",
        "stoq_core:ArchiverResponse",
        "stoq_core:Payload",
        "stoq_core:PayloadMeta",
        "stoq_core:StoqPluginException",
    ),
    options={
        "archive_dir": (
            "        self.archive_dir = _option_dir(\n"
            '            config, "archive_dir", f"archive/{self.plugin_name}"\n'
            "        )"
        )
    },
    method='''
    @hookimpl
    def get(self, task: ArchiverResponse) -> Payload | None:
        """Source archiver: load a payload (stoq run -P PROVIDER -S ${name}).

        ``task.results`` is what a provider queued as ``{"${name}": {...}}``:
        typically what ``archive`` returned. A plain ``def``: reading files
        blocks. ``None``: nothing to scan.
        """
        # Only a file of archive_dir, named by its sha256: a task comes from a queue,
        # and a path in it could name any file this process can read.
        sha256 = str(task.results.get("sha256", ""))
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise StoqPluginException(f"the task's sha256 is not valid: {sha256!r}")
        content = _read_file(self.archive_dir / sha256)
        return Payload(content, PayloadMeta(extra_data={"sha256": sha256}))
''',
    helpers={"_option_dir": _OPTION_DIR, "_read_file": _READ_FILE},
    test_imports=("hashlib", "stoq_core:ArchiverResponse", "stoq_core.testing:call_hook"),
    tests="""

def test_get_loads_an_archived_payload_by_its_sha256(stoq_with, tmp_path):
    sha256 = hashlib.sha256(b"stored bytes").hexdigest()
    (tmp_path / sha256).write_bytes(b"stored bytes")
    stoq = stoq_with(NAME, options={"archive_dir": str(tmp_path)})
    outcome = call_hook(stoq, NAME, "get", ArchiverResponse({"sha256": sha256}))
    assert outcome.errors == []
    assert outcome.value.content == b"stored bytes"
    assert outcome.value.results.payload_meta.extra_data == {"sha256": sha256}


def test_get_refuses_a_symbolic_link_in_the_archive(stoq_with, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the archive")
    archive = tmp_path / "archive"
    archive.mkdir()
    sha256 = hashlib.sha256(b"anything").hexdigest()
    (archive / sha256).symlink_to(secret)
    stoq = stoq_with(NAME, options={"archive_dir": str(archive)})
    outcome = call_hook(stoq, NAME, "get", ArchiverResponse({"sha256": sha256}))
    assert outcome.value is None
    assert "symbolic link" in outcome.errors[0].error


def test_get_refuses_a_task_that_names_a_path(stoq_with, tmp_path):
    stoq = stoq_with(NAME, options={"archive_dir": str(tmp_path)})
    task = ArchiverResponse({"sha256": "../../etc/passwd"})
    outcome = call_hook(stoq, NAME, "get", task)
    assert outcome.value is None
    assert "sha256 is not valid" in outcome.errors[0].error
""",
    usage=("stoq run -P PROVIDER -S ${name}", "a source archiver: loads queued tasks"),
    option_rows=(_ARCHIVE_DIR_ROW,),
)


_DECORATE = _Example(
    role="decorator",
    imports=("stoq_core:DecoratorResponse", "stoq_core:StoqResponse"),
    options={},
    method='''
    @hookimpl
    async def decorate(self, response: StoqResponse) -> DecoratorResponse | None:
        """Decorator: look at a finished response as a whole (stoq scan FILE -D ${name}).

        Called once per response, after the workers and archivers and before the
        connectors; ``results`` go to the JSON under ``decorators["${name}"]``.
        """
        workers = {name for result in response.results for name in result.workers}
        return DecoratorResponse(
            {
                "payloads": len(response.results),
                "errors": len(response.errors),
                "workers": sorted(workers),
            }
        )
''',
    test_imports=("stoq_core.testing:scan_sync",),
    tests="""

def test_decorate_summarises_each_response(stoq_with):
    stoq = stoq_with(NAME, decorators=[NAME])
    response = scan_sync(stoq, b"anything")
    assert response.decorators[NAME] == {"payloads": 1, "errors": 0, "workers": []}
""",
    usage=("stoq scan FILE -D ${name}", "a decorator: results under decorators.${name}"),
)

_SAVE = _Example(
    role="connector",
    imports=("os", "secrets", "pathlib:Path", "stoq_core:StoqResponse"),
    options={
        "results_dir": (
            "        self.results_dir = _option_dir(\n"
            '            config, "results_dir", f"results/{self.plugin_name}"\n'
            "        )"
        )
    },
    method='''
    @hookimpl
    def save(self, response: StoqResponse) -> None:
        """Connector: store a finished response (stoq scan FILE -C ${name}).

        A plain ``def``: writing files blocks. A raise is recorded in the response's
        errors (and stoq exits 1); the other connectors still save.
        """
        # Private (0700): a response tells what was scanned and what was found.
        self.results_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.results_dir / f"{response.scan_id}.json"
        _write_file(path, str(response).encode())  # str(): stoQ's JSON
''',
    helpers={"_option_dir": _OPTION_DIR, "_write_file": _WRITE_FILE},
    test_imports=("json", "stoq_core.testing:scan_sync"),
    tests="""

def test_save_writes_each_response_as_json(stoq_with, tmp_path):
    options = {"results_dir": str(tmp_path / "out")}
    stoq = stoq_with(NAME, options=options, connectors=[NAME])
    response = scan_sync(stoq, b"anything")
    assert response.errors == []
    saved = json.loads((tmp_path / "out" / f"{response.scan_id}.json").read_text())
    assert saved["scan_id"] == response.scan_id
    assert saved["results"][0]["size"] == len(b"anything")


def test_save_defaults_to_a_directory_in_stoq_home(stoq_with, tmp_path, monkeypatch):
    monkeypatch.setenv("STOQ_HOME", str(tmp_path / "home"))
    stoq = stoq_with(NAME, connectors=[NAME])
    response = scan_sync(stoq, b"anything")
    assert response.errors == []
    saved = tmp_path / "home" / "results" / NAME / f"{response.scan_id}.json"
    assert json.loads(saved.read_text())["scan_id"] == response.scan_id
""",
    usage=("stoq scan FILE -C ${name}", "a connector: saves each response"),
    option_rows=(
        "| `results_dir` | `$$STOQ_HOME/results/${name}` | where `save` writes responses |",
    ),
)

_INGEST = _Example(
    role="provider",
    imports=(
        "asyncio",
        "os",
        "stat",
        "pathlib:Path",
        "typing:Any",
        "stoq_core:Payload",
        "stoq_core:PayloadMeta",
        "stoq_core:StoqPluginException",
    ),
    options={
        "source_dir": (
            '        source_dir = config.get("options", "source_dir", fallback="")\n'
            "        self.source_dir = Path(source_dir).expanduser() if source_dir else None"
        )
    },
    method='''
    @hookimpl
    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        """Provider: queue payloads for ``stoq run -P ${name}`` to scan.

        Put ``Payload``s, ``Request``s, or ``{archiver_name: task}`` for a source
        archiver; ``await queue.put(...)`` waits while the queue is full. The run
        ends once every provider has returned and the queue is drained.
        """
        if self.source_dir is None:
            raise StoqPluginException(
                f"{self.plugin_name}: set the source_dir option "
                f"(--plugin-opts {self.plugin_name}:source_dir=DIR)"
            )
        for path in sorted(self.source_dir.iterdir()):
            # Links are skipped: whoever can write to source_dir could link any file.
            if path.is_file() and not path.is_symlink():
                # A read may block: run it in a thread, so queued scans go on.
                content = await asyncio.to_thread(_read_file, path)
                meta = PayloadMeta(extra_data={"filename": path.name})
                await queue.put(Payload(content, meta))
''',
    test_imports=("asyncio",),
    tests="""

def test_ingest_queues_each_file_of_the_source_dir(stoq_with, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.txt").write_bytes(b"first")
    (source / "b.txt").write_bytes(b"second")
    stoq = stoq_with(NAME, options={"source_dir": str(source)}, providers=[NAME])
    responses = []
    stats = asyncio.run(stoq.run(on_response=responses.append))
    assert stats.failed == 0
    names = sorted(r.results[0].payload_meta.extra_data["filename"] for r in responses)
    assert names == ["a.txt", "b.txt"]


def test_ingest_skips_symbolic_links(stoq_with, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for scanning")
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.txt").write_bytes(b"first")
    (source / "link.txt").symlink_to(secret)
    stoq = stoq_with(NAME, options={"source_dir": str(source)}, providers=[NAME])
    responses = []
    asyncio.run(stoq.run(on_response=responses.append))
    names = [r.results[0].payload_meta.extra_data["filename"] for r in responses]
    assert names == ["a.txt"]
""",
    helpers={"_read_file": _READ_FILE},
    usage=("stoq run -P ${name} -a hash", "a provider: scans what it queues"),
    option_rows=("| `source_dir` | (required) | the directory whose files `ingest` queues |",),
)

_HOOKS: dict[str, _Example] = {
    "ingest": _INGEST,
    "get": _GET,
    "get_dispatches": _GET_DISPATCHES,
    "scan": _SCAN,
    "archive": _ARCHIVE,
    "decorate": _DECORATE,
    "save": _SAVE,
}
