"""The ``yara`` plugin: a worker that reports YARA matches and a dispatcher that routes on them.

Both halves compile their rules once, when the plugin is constructed, so a broken rule file stops
``Stoq(...)`` with a message naming the file and line instead of failing every scan. Matching runs
in one of stoQ's daemon threads (``stoq_core.run_blocking``, which a timeout can abandon);
yara's ``Rules.match`` is thread-safe, so concurrent scans share one compiled rules object.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import os
import weakref
from collections.abc import Iterator
from importlib import resources
from typing import Any, Optional, Union

import yara  # type: ignore[import-not-found,import-untyped,unused-ignore]

from stoq_core import (
    DispatcherResponse,
    Error,
    Option,
    Payload,
    Request,
    StoqConfigParser,
    StoqPluginException,
    WorkerResponse,
    run_blocking,
)
from stoq_core.plugins import DispatcherPlugin, WorkerPlugin

__all__ = [
    "DEFAULT_DISPATCH_RULES",
    "DEFAULT_WORKER_RULES",
    "YaraPlugin",
    "load_rules",
    "matched_strings",
]

#: The rule files shipped in this distribution, used when the options are not set.
DEFAULT_WORKER_RULES = str(resources.files("stoq_plugin_yara").joinpath("rules", "worker.yar"))
DEFAULT_DISPATCH_RULES = str(
    resources.files("stoq_plugin_yara").joinpath("rules", "dispatcher.yar")
)

#: File name endings taken from a rules directory.
RULE_SUFFIXES = (".yar", ".yara")

# Every file written by yara's Rules.save() starts with these bytes.
_COMPILED_MAGIC = b"YARA"

# yara-python takes the timeout as a C int; a larger one raised OverflowError in every scan.
_YARA_MAX_TIMEOUT = 2**31 - 1

Externals = dict[str, Union[str, int, float, bool]]


class YaraPlugin(WorkerPlugin, DispatcherPlugin):
    """Match payloads against YARA rules, as a worker (``-a yara``) and a dispatcher (``-R yara``).

    Options (``plugin_opts={"yara": {...}}``, ``--plugin-opts yara:key=value`` or ``[yara]`` in
    stoq.cfg):

    - ``worker_rules``: a rule file, a directory of ``.yar``/``.yara`` files or a compiled rules
      file; empty disables the worker. Default: the rules shipped in ``rules/worker.yar``.
    - ``dispatch_rules``: the same for the dispatcher. Default: ``rules/dispatcher.yar``.
    - ``strings_limit``: matched strings kept per rule in the worker's output (default 100).
    - ``timeout``: seconds yara may spend on one payload, 0 for no limit (default 60). stoQ's
      core reads the same option as its limit on each call of this plugin.
    - ``externals``: a JSON object of external variables, e.g. ``{"filename": "a.exe"}``.
    """

    options = (
        Option(
            "worker_rules",
            str,
            DEFAULT_WORKER_RULES,
            "the worker's rules: a rule file, a directory of them or compiled rules; "
            "empty disables the worker",
        ),
        Option(
            "dispatch_rules",
            str,
            DEFAULT_DISPATCH_RULES,
            "the dispatcher's rules, as worker_rules; empty disables the dispatcher",
        ),
        Option("strings_limit", int, 100, "matched strings kept per rule in the results"),
        Option(
            "timeout",
            float,
            None,
            "seconds yara may spend on one payload (60 if unset; 0: no limit); also the "
            "core's limit on each call",
        ),
        Option("externals", dict, None, 'external variables, as JSON: {"filename": "a.exe"}'),
    )

    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        self.strings_limit = _int_option(config, "strings_limit", 100)
        self.timeout = _timeout_option(config)
        self.externals = _externals_option(config)
        self.worker_rules_path: str = config.get(
            "options", "worker_rules", fallback=DEFAULT_WORKER_RULES
        )
        self.dispatch_rules_path: str = config.get(
            "options", "dispatch_rules", fallback=DEFAULT_DISPATCH_RULES
        )
        #: The compiled rules of each half; ``None`` when its option is empty.
        self.worker_rules: Optional[yara.Rules] = load_rules(
            "worker_rules", self.worker_rules_path, self.externals
        )
        self.dispatch_rules: Optional[yara.Rules] = load_rules(
            "dispatch_rules", self.dispatch_rules_path, self.externals
        )
        #: How many payloads the dispatcher has matched (cached answers are not counted).
        self.dispatch_scans = 0
        # The dispatcher is asked about every payload in every round of a scan; keyed by the
        # Payload object, an answer lives exactly as long as the payload does.
        self._dispatched: weakref.WeakKeyDictionary[Payload, DispatcherResponse] = (
            weakref.WeakKeyDictionary()
        )

    async def scan(self, payload: Payload, request: Request) -> WorkerResponse:
        """Report every worker rule that matches: ``{"matches": [{rule, namespace, tags, meta,
        strings}, ...]}``, each ``strings`` entry ``[offset, identifier, matched bytes]``."""
        payload_id = payload.results.payload_id
        if self.worker_rules is None:
            return WorkerResponse(
                errors=[
                    Error(
                        "the worker is disabled because worker_rules is empty; "
                        "set worker_rules to a rule file or directory to scan with yara",
                        self.plugin_name,
                        payload_id,
                    )
                ]
            )
        try:
            matches = await self._match(self.worker_rules, payload)
        except yara.Error as exc:
            return WorkerResponse(
                errors=[Error(self._match_error(exc), self.plugin_name, payload_id)]
            )
        return WorkerResponse({"matches": [self._worker_match(match) for match in matches]})

    async def get_dispatches(
        self, payload: Payload, request: Request
    ) -> Optional[DispatcherResponse]:
        """Route the payload to the workers named by matching rules' ``plugin`` meta.

        A rule whose ``save`` meta is ``"False"`` keeps the payload out of the destination
        archivers. Each match is kept in the response's meta under the rule's name. A payload is
        matched once; later rounds get the same answer.
        """
        if self.dispatch_rules is None:
            return None
        known = self._dispatched.get(payload)
        if known is not None:
            return known
        self.dispatch_scans += 1
        try:
            matches = await self._match(self.dispatch_rules, payload)
        except (yara.Error, asyncio.CancelledError) as exc:
            # Remember "nothing to dispatch" so that a payload yara cannot match (or that the
            # core's timeout cancelled) costs one attempt and one error, not one per round.
            self._dispatched[payload] = DispatcherResponse()
            if isinstance(exc, asyncio.CancelledError):
                raise
            error = Error(self._match_error(exc), self.plugin_name, payload.results.payload_id)
            return DispatcherResponse(errors=[error])
        response = _dispatch_response(payload, matches)
        self._dispatched[payload] = response
        return response

    async def _match(self, rules: yara.Rules, payload: Payload) -> list[Any]:
        content = payload.content
        data = content if isinstance(content, bytes) else bytes(content)
        # yara counts whole seconds; rounding up keeps a fraction from meaning "no limit".
        timeout = min(math.ceil(self.timeout), _YARA_MAX_TIMEOUT)
        kwargs: dict[str, Any] = {"data": data, "timeout": timeout}
        if self.externals:
            # Compiled rules files were built elsewhere; their externals are only set here.
            kwargs["externals"] = self.externals
        matches: list[Any] = await run_blocking(functools.partial(rules.match, **kwargs))
        return matches

    def _match_error(self, exc: Exception) -> str:
        if isinstance(exc, yara.TimeoutError):
            return f"YARA matching timed out after {self.timeout:g} seconds (option timeout)"
        return f"YARA matching failed: {exc}"

    def _worker_match(self, match: Any) -> dict[str, Any]:
        strings = list(itertools.islice(matched_strings(match), self.strings_limit))
        return {**_match_summary(match), "strings": strings}


def matched_strings(match: Any) -> Iterator[list[Any]]:
    """Every string a ``yara.Match`` holds, as ``[offset, identifier, matched bytes]``.

    yara-python 4.3 made ``match.strings`` a list of ``StringMatch`` objects, each with its
    ``instances``; 4.2 and earlier gave ``(offset, identifier, data)`` tuples. Both give yara's
    order (by string, then by offset), so the output is the same under either. Reading both lets
    this plugin share an environment with v3's yara plugin, which reads only the tuples.
    """
    for string in match.strings:
        if isinstance(string, tuple):
            offset, identifier, data = string
            yield [offset, identifier, data]
        else:
            for instance in string.instances:
                yield [instance.offset, string.identifier, instance.matched_data]


def _match_summary(match: Any) -> dict[str, Any]:
    return {
        "rule": match.rule,
        "namespace": match.namespace,
        "tags": list(match.tags),
        "meta": dict(match.meta),
    }


def _dispatch_response(payload: Payload, matches: list[Any]) -> DispatcherResponse:
    names: list[str] = []
    meta: dict[str, Any] = {}
    for match in matches:
        plugins = match.meta.get("plugin")
        if plugins:
            names.extend(name.strip().lower() for name in str(plugins).split(",") if name.strip())
        save = match.meta.get("save")
        # yara meta may be a string ("False", as v3's rules wrote it) or a bare boolean.
        if save is False or (isinstance(save, str) and save.strip().lower() == "false"):
            payload.results.payload_meta.should_archive = False
        meta[match.rule] = _match_summary(match)
    return DispatcherResponse(plugin_names=list(dict.fromkeys(names)), meta=meta)


def load_rules(
    option: str, path: str, externals: Optional[Externals] = None
) -> Optional[yara.Rules]:
    """Compile or load the rules ``path`` names, for the option called ``option``.

    :param path: a rule source file (its namespace is the file's name without the ending), a
        directory whose ``.yar``/``.yara`` files are each compiled in their own namespace, or a
        file saved by ``yara.Rules.save``. Relative paths are taken from the current directory.
    :param externals: external variables the rules may use.
    :returns: the rules; ``None`` when ``path`` is empty.
    :raises StoqPluginException: the path does not exist, holds no rules, or a rule does not
        compile; the message names the option, the file and, for a syntax error, the line.
    """
    if not path.strip():
        return None
    path = os.path.abspath(os.path.expanduser(path.strip()))
    if os.path.isdir(path):
        return _compile(option, _namespaces(option, path), externals)
    if not os.path.exists(path):
        raise StoqPluginException(f"{option}: {path}: no such file or directory")
    try:
        with open(path, "rb") as handle:
            compiled = handle.read(len(_COMPILED_MAGIC)) == _COMPILED_MAGIC
    except OSError as exc:
        raise StoqPluginException(f"{option}: {path}: cannot read: {exc.strerror}") from None
    if compiled:
        try:
            return yara.load(filepath=path)
        except yara.Error as exc:
            raise StoqPluginException(
                f"{option}: {path}: not a compiled rules file this yara can load: {exc}"
            ) from None
    namespace = os.path.splitext(os.path.basename(path))[0]
    return _compile(option, {namespace: path}, externals)


def _namespaces(option: str, directory: str) -> dict[str, str]:
    namespaces: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        file = os.path.join(directory, name)
        if not name.lower().endswith(RULE_SUFFIXES) or not os.path.isfile(file):
            continue
        namespace = os.path.splitext(name)[0]
        if namespace in namespaces:
            raise StoqPluginException(
                f"{option}: {namespaces[namespace]} and {file} would share the namespace "
                f"{namespace!r}; rename one of them"
            )
        namespaces[namespace] = file
    if not namespaces:
        raise StoqPluginException(
            f"{option}: {directory}: the directory holds no {' or '.join(RULE_SUFFIXES)} files"
        )
    return namespaces


def _compile(option: str, filepaths: dict[str, str], externals: Optional[Externals]) -> yara.Rules:
    try:
        return yara.compile(filepaths=filepaths, externals=externals or {})
    except yara.SyntaxError as exc:
        message = str(exc)
        # yara names the file in "path(line): reason" form; say which files were meant if not.
        if not any(file in message for file in filepaths.values()):
            message = f"{', '.join(filepaths.values())}: {message}"
        raise StoqPluginException(f"{option}: YARA syntax error in {message}") from None
    except yara.Error as exc:
        raise StoqPluginException(
            f"{option}: {', '.join(filepaths.values())}: cannot compile: {exc}"
        ) from None


def _int_option(config: StoqConfigParser, option: str, default: int) -> int:
    try:
        value = config.getint("options", option, fallback=default)
    except ValueError:
        raw = config.get("options", option)
        raise StoqPluginException(f"{option} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise StoqPluginException(f"{option} must be 0 or more, not {value}")
    return value


def _timeout_option(config: StoqConfigParser) -> float:
    try:
        value = config.getfloat("options", "timeout", fallback=60.0)
    except ValueError:
        raw = config.get("options", "timeout")
        raise StoqPluginException(f"timeout must be a number of seconds, not {raw!r}") from None
    if value < 0:
        raise StoqPluginException(f"timeout must be 0 or more seconds, not {value:g}")
    return value


def _externals_option(config: StoqConfigParser) -> Externals:
    example = 'a JSON object such as {"filename": "a.exe", "size_limit": 100}'
    try:
        externals = config.getjson("options", "externals", fallback={})
    except ValueError as exc:
        raise StoqPluginException(f"externals must be {example}; it is not JSON: {exc}") from None
    if not isinstance(externals, dict):
        raise StoqPluginException(f"externals must be {example}, not {externals!r}")
    for name, value in externals.items():
        if not isinstance(value, (str, int, float, bool)):
            raise StoqPluginException(
                f"externals: {name!r} must be a string, number or boolean, not {value!r}"
            )
    return externals
