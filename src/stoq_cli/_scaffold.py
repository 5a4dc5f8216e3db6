"""``stoq plugin new``: the files of a new plugin distribution, ``stoq-plugin-NAME``.

The files are templates shipped with this package, under ``templates/plugin/``: a pyproject
(hatchling) with the ``stoq.plugins`` entry point, the plugin module with one commented example
per hook, tests that pass as generated (through ``stoq_core.testing``), a README whose develop,
test, build and install steps work as written, ``py.typed``, a LICENSE (Apache-2.0, as stoQ's)
and a CI workflow that runs the tests. Each template holds every hook's part; ``render`` keeps
the parts of the hooks chosen and fills in the names, so any subset of hooks gives a module
that imports exactly what it uses. A part that is not a hook, ``command``, adds a ``stoq NAME`` command of the plugin's
own (``commands.py``, its ``stoq.commands`` entry point and its tests).

The template syntax is ``string.Template``'s ``${name}`` (``$$`` for a dollar sign), plus lines
that keep or drop what they mark by the hooks chosen::

    import asyncio  #% if ingest          one line, kept if ingest is chosen
    #% if get archive                     a block, kept if get or archive is chosen
    ...
    #% else                               (optional) kept if neither is
    ...
    #% end

Besides the parts, ``#% if`` may test the flags in ``FLAGS``: ``core_source`` is set when the
running stoq-core was not installed from a package index, and the README then installs it from
where it came (``core_source``), so that its steps work before stoq-core is published (issue 15).

Templates end in ``.tmpl``: before rendering they are not valid Python, and ruff and mypy check
what they render to instead (tests/cli/test_cli_plugin_new.py: every subset of the parts).

The examples that write and read files are safe to copy (issue 12): their directories default
to ``$STOQ_HOME``, never to a fixed name in the shared temporary directory; files are created
exclusively and renamed into place, and never opened through a symbolic link.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import secrets
import shlex
import shutil
from collections.abc import Collection, Iterable, Mapping
from importlib import metadata, resources
from pathlib import Path
from string import Template
from urllib.parse import unquote, urlsplit

from stoq_core.plugins import ROLES

__all__ = [
    "BUILTIN_COMMANDS",
    "EXTRAS",
    "FLAGS",
    "HOOK_ORDER",
    "PARTS",
    "Scaffold",
    "ScaffoldError",
    "core_requirement",
    "core_source",
    "installed_core_source",
    "parse_hooks",
    "parse_name",
    "render",
    "write_scaffold",
]

#: The hooks a plugin can implement, in the order a scan meets them (``hookspecs.HOOK_NAMES``;
#: a test holds them equal). Spelled out so that writing files needs nothing of the core.
HOOK_ORDER = tuple(role.hook for role in ROLES)

#: What each hook's example is, for the generated summary line.
_ROLES = {role.hook: role.name for role in ROLES}

#: The parts ``--hooks`` may name that are not hooks: ``command``, a ``stoq NAME`` command.
#: ``all`` leaves them out: it means every hook, and a command is a name in every user's
#: ``stoq --help`` (shared with every other installed plugin), which an author asks for by name.
EXTRAS = ("command",)

#: The names a template's ``#% if`` may test: the hooks, then the extras.
PARTS = HOOK_ORDER + EXTRAS

#: What a template's ``#% if`` may test besides the parts: ``core_source``, set when the README
#: must install stoq-core from where the running one came (``Scaffold.core_source``).
FLAGS = ("core_source",)

#: ``stoq``'s own commands (``StoqGroup``'s; a test holds them equal): a plugin command of one
#: of these names is never run, since a built-in command keeps its name.
BUILTIN_COMMANDS = ("install", "list", "plugin", "run", "scan", "uninstall")

#: Each generated file: its template under ``templates/plugin/``, its path in the project, and
#: the part it belongs to (``None``: every project has it).
_FILES: tuple[tuple[str, str, str | None], ...] = (
    ("pyproject.toml.tmpl", "pyproject.toml", None),
    ("README.md.tmpl", "README.md", None),
    ("gitignore.tmpl", ".gitignore", None),
    ("LICENSE.tmpl", "LICENSE", None),
    ("github/workflows/test.yml.tmpl", ".github/workflows/test.yml", None),
    ("package/__init__.py.tmpl", "src/${package}/__init__.py", None),
    ("package/plugin.py.tmpl", "src/${package}/plugin.py", None),
    ("package/commands.py.tmpl", "src/${package}/commands.py", "command"),
    ("package/py.typed.tmpl", "src/${package}/py.typed", None),
    ("tests/conftest.py.tmpl", "tests/conftest.py", None),
    ("tests/test_plugin.py.tmpl", "tests/test_plugin.py", None),
    ("tests/test_commands.py.tmpl", "tests/test_commands.py", "command"),
)

# Lowercase words of letters and digits joined by single '-' or '_', starting with a letter.
_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_PREFIXES = ("stoq-plugin-", "stoq_plugin_")
_MAX_NAME = 60
# The end of an unknown-hook error: what --hooks takes.
_VALID = f"valid: {', '.join(HOOK_ORDER)}, or all; and {', '.join(EXTRAS)}"


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

    An extra (``command``) may be named too: it follows the hooks, in ``PARTS`` order. ``all``
    does not include it (see ``EXTRAS``).

    :raises ScaffoldError: a name is not a hook or an extra (the message lists the valid
        ones), or no hook is named: an extra belongs to a plugin.
    """
    chosen: set[str] = set()
    for value in values:
        for word in value.split(","):
            part = word.strip()
            if not part:
                continue
            if part == "all":
                chosen.update(HOOK_ORDER)
                continue
            if part not in PARTS:
                close = difflib.get_close_matches(part, PARTS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ScaffoldError(f"unknown hook {part!r}{hint} ({_VALID})")
            chosen.add(part)
    if not chosen.intersection(HOOK_ORDER):
        extras = ",".join(extra for extra in EXTRAS if extra in chosen)
        needs = f": {extras} belongs to a plugin, e.g. --hooks scan,{extras}" if extras else ""
        raise ScaffoldError(f"no hook given{needs} ({_VALID})")
    return tuple(part for part in PARTS if part in chosen)


def core_requirement(core_version: str) -> str:
    """The core range a new plugin supports: this core's major version, ``stoq-core>=4,<5``."""
    match = re.match(r"\d+", core_version)
    if match is None:
        raise ScaffoldError(f"cannot read the major version of stoq-core {core_version!r}")
    major = int(match.group())
    return f"stoq-core>={major},<{major + 1}"


def core_source(direct_url: str | None) -> str:
    """What ``pip install`` takes to install stoq-core from where it came; ``""``: an index.

    :param direct_url: the text of stoq-core's ``direct_url.json`` (PEP 610), which pip writes
        for a distribution installed from a folder, a file or a URL and not from an index;
        None when there is none.
    :returns: a local folder or wheel's path (one that exists), or a ``stoq-core @ URL``
        requirement for a remote archive or a version control checkout; ``""`` when stoq-core
        came from a package index, or from a local path that is gone, so the plain steps apply.
    """
    if not direct_url:
        return ""
    try:
        origin = json.loads(direct_url)
    except ValueError:
        return ""
    url = origin.get("url") if isinstance(origin, dict) else None
    if not isinstance(url, str) or not url:
        return ""
    vcs = origin.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        commit = vcs.get("commit_id")
        pinned = f"@{commit}" if isinstance(commit, str) and commit else ""
        return f"stoq-core @ {vcs['vcs']}+{url}{pinned}"
    parts = urlsplit(url)
    if parts.scheme != "file":
        return f"stoq-core @ {url}"
    # A folder or a wheel on this machine: worth writing down only while it is still there.
    path = Path(unquote(parts.path))
    return str(path) if path.exists() else ""


def installed_core_source() -> str:
    """``core_source`` for the stoq-core this process runs (``""`` when its metadata is missing)."""
    try:
        return core_source(metadata.distribution("stoq-core").read_text("direct_url.json"))
    except metadata.PackageNotFoundError:
        return ""


@dataclasses.dataclass(frozen=True)
class Scaffold:
    """What a new plugin is: its name, hooks, extras and the core range it declares.

    ``hooks`` may be what ``parse_hooks`` returns, extras included: they are moved to
    ``extras``, so ``hooks`` holds hooks alone (the plugin's ``info.hooks``).

    :raises ScaffoldError: a command is asked for a name ``stoq`` keeps for its own command,
        or the description holds a character that is not printable.
    """

    name: str
    hooks: tuple[str, ...]
    requirement: str
    description: str = ""
    extras: tuple[str, ...] = ()
    #: How the README's steps install stoq-core before the plugin (``core_source``); ``""``:
    #: from the package index, with the plugin's own dependencies.
    core_source: str = ""

    def __post_init__(self) -> None:
        parts = {*self.hooks, *self.extras}
        unknown = sorted(parts.difference(PARTS))
        if unknown:
            raise ValueError(f"not hooks or extras: {', '.join(unknown)}")
        # Frozen: set through object, once, so that every reader sees the split parts.
        object.__setattr__(self, "hooks", tuple(h for h in HOOK_ORDER if h in parts))
        object.__setattr__(self, "extras", tuple(e for e in EXTRAS if e in parts))
        if not self.description.isprintable():
            # A control character is illegal in a TOML string (the pyproject would not parse,
            # and the project would not build), and a byte that is not UTF-8 cannot be written.
            raise ScaffoldError(
                f"description {self.description!r} holds a character that is not printable "
                "(a control character, or a byte that is not UTF-8): write it in plain text"
            )
        if "command" in self.extras and self.name in BUILTIN_COMMANDS:
            raise ScaffoldError(
                f"a plugin named {self.name!r} cannot add a command: 'stoq {self.name}' is "
                "stoq's own; choose another name, or leave command out of --hooks"
            )

    @property
    def parts(self) -> tuple[str, ...]:
        """The hooks, then the extras: everything ``--hooks`` chose."""
        return self.hooks + self.extras

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
        roles = [_ROLES[hook] for hook in self.hooks]
        if len(roles) > 2:
            return f"A stoQ plugin with {len(roles)} roles"
        return "A stoQ " + " and ".join(roles)

    def files(self) -> dict[str, str]:
        """Every file of the distribution, by its path relative to the project directory."""
        values = {
            "name": self.name,
            "cls": self.class_name,
            "package": self.package,
            "distribution": self.distribution,
            "requirement": self.requirement,
            "summary": _quoted(self.summary()),
            "summary_text": self.summary(),
            "hooks": ", ".join(f"`{hook}`" for hook in self.hooks),
            # Quoted for the shell: the README's steps are run as written.
            "core_source": shlex.quote(self.core_source),
        }
        chosen = self.parts + (("core_source",) if self.core_source else ())
        files: dict[str, str] = {}
        for template, target, part in _FILES:
            if part is not None and part not in self.extras:
                continue
            text = render(_read_template(template), chosen, values, name=template)
            # A formatter leaves prose alone, and a name or description can be long.
            files[Template(target).substitute(values)] = (
                _fit_prose(text) if target.endswith(".py") else text
            )
        return files


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


# A whole line "#% if a b", "#% else" or "#% end"; and a line's own "  #% if a b" at its end.
_BLOCK = re.compile(r"[ \t]*#%[ \t]*(if|else|end)\b[ \t]*(.*?)[ \t]*")
_LINE_IF = re.compile(r"[ \t]+#%[ \t]*if[ \t]+(.*?)[ \t]*$")


def render(
    template: str, chosen: Collection[str], values: Mapping[str, str], *, name: str = "template"
) -> str:
    """``template`` with the parts of the ``chosen`` hooks and extras kept, ``${key}`` filled in.

    ``#% if a b`` keeps what it marks when ``a`` or ``b`` is chosen (see the module's
    docstring); every name it tests must be one of ``PARTS`` or ``FLAGS``.

    :param name: the template's name, for errors.
    :raises ValueError: the template is malformed: an unknown name, an ``else`` or ``end``
        without its ``if``, an ``if`` never ended, or a ``${key}`` ``values`` lacks.
    """
    kept: list[str] = []
    open_blocks: list[bool] = []  # per open block: whether its current branch is kept
    for number, line in enumerate(template.splitlines(keepends=True), 1):
        where = f"{name}, line {number}"
        block = _BLOCK.fullmatch(line.rstrip("\n"))
        if block is not None:
            word, names = block.groups()
            if word == "if":
                open_blocks.append(_any_chosen(names, chosen, where))
            elif not open_blocks:
                raise ValueError(f"{where}: '#% {word}' without its '#% if'")
            elif word == "else":
                open_blocks[-1] = not open_blocks[-1]
            else:
                open_blocks.pop()
            continue
        if not all(open_blocks):
            continue
        own = _LINE_IF.search(line.rstrip("\n"))
        if own is not None:
            if not _any_chosen(own.group(1), chosen, where):
                continue
            line = line[: own.start()] + "\n"
        kept.append(line)
    if open_blocks:
        raise ValueError(f"{name}: {len(open_blocks)} '#% if' never ended with '#% end'")
    try:
        return Template("".join(kept)).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{name}: cannot fill in {exc}") from None


def _any_chosen(names: str, chosen: Collection[str], where: str) -> bool:
    tested = names.split()
    known = PARTS + FLAGS
    unknown = [part for part in tested if part not in known]
    if not tested or unknown:
        raise ValueError(f"{where}: '#% if' needs names from {', '.join(known)}: {names!r}")
    return any(part in chosen for part in tested)


def _read_template(relative: str) -> str:
    # Package data: read through importlib.resources, so it works from a wheel or a zip.
    path = resources.files("stoq_cli") / "templates" / "plugin"
    for part in relative.split("/"):  # one at a time: Python 3.10's joinpath takes one
        path = path / part
    return path.read_text(encoding="utf-8")
