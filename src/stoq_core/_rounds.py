"""The rounds of one request: which workers each payload gets, and what they extract.

The flow is stoQ v3's (see ``spec/v3-behaviour.md``): in each round every scannable payload gets
the always-dispatch workers and whatever the dispatchers pick; the workers of a round run
concurrently; extracted payloads join the request and are scanned in the next round, until no
work is left or ``max_recursion`` rounds have run. ``Rounds`` works with its ``Stoq``'s loaded
plugins and call machinery; it is the engine's own part, not an API.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from stoq_core import _budget, _cache, _logging
from stoq_core._calls import (
    FAILED,
    DroppedErrors,
    PluginCalls,
    Waiting,
    cut,
    dropped_text,
    text_of,
)
from stoq_core._manager import LoadedPlugin
from stoq_core.data_classes import (
    DispatcherResponse,
    Error,
    ExtractedPayload,
    Payload,
    PayloadMeta,
    PayloadResults,
    Request,
    WorkerResponse,
)
from stoq_core.exceptions import StoqException, StoqPluginException
from stoq_core.helpers import check_results

if TYPE_CHECKING:
    from stoq_core.engine import Stoq

__all__ = ["Rounds", "cap_errors"]


class _DependencyError(Exception):
    """A worker's ``required_workers`` cannot be satisfied (cycle, depth, or not loadable)."""


class Rounds:
    """The rounds of one ``scan_request``.

    Every payload takes this path, so it is written for the common request (no dispatchers,
    always-dispatch workers that require no others, nothing extracted): that case costs one
    round with no helper calls, and everything else takes the general methods below.
    """

    __slots__ = (
        "cache",
        "calls",
        "dispatchers",
        "dropped",
        "expirations",
        "extracted_bytes",
        "given_up",
        "in_flight",
        "pending",
        "reported",
        "request",
        "routing",
        "seen",
        "simple_workers",
        "stoq",
        "until",
    )

    def __init__(
        self,
        stoq: Stoq,
        calls: PluginCalls,
        dispatchers: dict[str, LoadedPlugin],
        simple_workers: dict[str, LoadedPlugin],
        request: Request,
        start: Sequence[str],
    ) -> None:
        self.stoq = stoq  # its settings and plugin manager
        self.calls = calls
        self.dispatchers = dispatchers
        # Loaded workers known to require no others; this adds the ones it finds.
        self.simple_workers = simple_workers
        self.request = request
        # Workers owed to a payload next round: start dispatch, dispatch_to, deferred dependants.
        self.pending: dict[Payload, list[str]] = {}
        if start:
            for payload in request.payloads:
                if payload.results.payload_meta.should_scan:
                    self.pending[payload] = list(start)
        self.until = (
            asyncio.get_running_loop().time() + stoq.deadline if stoq.deadline > 0 else None
        )
        self.extracted_bytes = 0  # the payloads kept
        self.in_flight = 0  # what this round's workers charged while producing it
        self.expirations = 0  # the watchdog's count when the round began
        # Made when first needed (most requests need none of them):
        self.seen: Optional[dict[str, Payload]] = None  # sha256 -> payload
        self.given_up: Optional[set[tuple[int, str]]] = None  # (id(payload), plugin) not to retry
        # Errors reported once per request: dispatcher errors, and workers that cannot load.
        self.reported: Optional[set[tuple[Optional[str], ...]]] = None
        # One Error per extraction limit, and how many payloads it dropped.
        self.dropped: Optional[dict[str, tuple[Error, int]]] = None
        # Why each payload gets its workers, kept only for the debug log (one flag read here).
        self.routing = _logging.Routing() if _logging.debugging else None
        self.cache = calls.cache  # None when the result cache is off

    async def run(self) -> None:
        stoq = self.stoq
        calls = self.calls
        request = self.request
        payloads = request.payloads
        always = stoq.always_dispatch
        simple = self.simple_workers
        # Found there by charge_extracted_bytes; cleared after, or the request and this scan
        # would hold each other (and every payload) until the garbage collector ran.
        request._extraction = self
        try:
            for round_number in range(1, stoq.max_recursion + 1):
                owed, self.pending = self.pending, {}
                work: dict[tuple[Payload, str], LoadedPlugin] = {}
                if self.dispatchers:
                    scannable = [p for p in payloads if p.results.payload_meta.should_scan]
                    picks = await self._dispatch(scannable)
                    for payload, picked in zip(scannable, picks):
                        for name in dict.fromkeys([*owed.get(payload, ()), *always, *picked]):
                            self._schedule(payload, name, work)
                else:
                    given_up = self.given_up
                    for payload in payloads:
                        results = payload.results
                        if not results.payload_meta.should_scan:
                            continue
                        extra = owed.get(payload)
                        names = always if extra is None else dict.fromkeys([*extra, *always])
                        ran = results.plugins_run["workers"]
                        for name in names:
                            worker = simple.get(name)
                            if worker is None or given_up:
                                self._schedule(payload, name, work)
                            elif name not in ran:
                                work[payload, name] = worker
                if self.routing is not None:
                    self.routing.log_round(round_number, payloads, work, owed, always)
                if not work:
                    return
                if self.until is not None and asyncio.get_running_loop().time() >= self.until:
                    request.errors.append(
                        Error(
                            f"request deadline ({stoq.deadline:g} s) reached before round "
                            f"{round_number}: {len(work)} worker runs not started"
                        )
                    )
                    return
                known = len(payloads)
                if self.cache is not None:
                    await self._run_cached(work, round_number)
                elif len(work) == 1:
                    # ``_call`` written out: most requests take this path, and most calls finish
                    # without waiting, so they are spared a coroutine.
                    (((payload, _), worker),) = work.items()
                    results = payload.results
                    self.expirations = calls.watchdog.expirations
                    outcome = calls.start(
                        worker, "scan", (payload, request), request.errors, results
                    )
                    if type(outcome) is Waiting:
                        outcome = await calls.finish(
                            outcome, worker, "scan", request.errors, results, self.until
                        )
                    if self.in_flight:
                        self._settle()
                    self._take_worker(payload, worker, outcome, round_number)
                else:
                    pairs = list(work.items())
                    self.expirations = calls.watchdog.expirations
                    outcomes = await calls.call_each(
                        [
                            (worker, "scan", (payload, request), request.errors, payload.results)
                            for (payload, _), worker in pairs
                        ],
                        self.until,
                    )
                    if self.in_flight:
                        self._settle()
                    for ((payload, _), worker), outcome in zip(pairs, outcomes):
                        self._take_worker(payload, worker, outcome, round_number)
                if not (self.pending or self.dispatchers or len(payloads) > known):
                    # Every payload has had every always-dispatch worker and nothing new arrived:
                    # another round would find no work, so skip building it.
                    return
            else:
                if self.pending and calls.on_limit_hit is not None:
                    self._count_unfinished(calls.on_limit_hit)
        finally:
            request._extraction = None

    def _count_unfinished(self, hit: Callable[[str, int], None]) -> None:
        """``max_recursion`` rounds have run with workers still owed to payloads (a
        ``dispatch_to``, a worker deferred until its required ones ran): v3 drops them without
        an error, so only the metrics tell, once per payload left with work undone."""
        left = 0
        for payload, names in self.pending.items():
            ran = payload.results.plugins_run["workers"]
            if any(name not in ran and not self._gave_up(payload, name) for name in names):
                left += 1
        if left:
            hit("max_recursion", left)

    async def _run_cached(
        self, work: dict[tuple[Payload, str], LoadedPlugin], round_number: int
    ) -> None:
        """A round with the result cache on: reuse what it holds, run the rest, keep what they
        return. Responses are filed in the round's order, reused or not, so a scan's response
        is laid out as it would be without the cache."""
        cache = self.cache
        assert cache is not None
        pairs = list(work.items())
        keys = [cache.key(payload, worker) for (payload, _), worker in pairs]
        entries = cache.get(keys)
        replayed: dict[int, WorkerResponse] = {}
        for index, entry in enumerate(entries):
            if entry is not None:
                response = cache.replay(entry, pairs[index][0][0], keys[index] or "")
                if response is None:
                    entries[index] = None  # not an entry this stoQ wrote: run the worker
                else:
                    replayed[index] = response
        runs = [index for index, entry in enumerate(entries) if entry is None]
        outcomes: dict[int, Any] = {}
        if runs:
            request = self.request
            self.expirations = self.calls.watchdog.expirations
            calls = []
            for index in runs:
                (payload, _), worker = pairs[index]
                calls.append((worker, "scan", (payload, request), request.errors, payload.results))
            outcomes = dict(zip(runs, await self.calls.call_each(calls, self.until)))
            if self.in_flight:
                self._settle()
        stored: list[tuple[str, bytes]] = []
        when = _cache.stored_now() if runs else ""
        for index, ((payload, _), worker) in enumerate(pairs):
            entry = entries[index]
            if entry is not None:
                self._take_worker(payload, worker, replayed[index], round_number)
                results = payload.results
                if results.cached is None:
                    results.cached = {}
                results.cached[worker.name] = entry["stored"]
                continue
            outcome = outcomes[index]
            key = keys[index]
            captured = cache.capture(payload, outcome) if key is not None else None
            self._take_worker(payload, worker, outcome, round_number)
            # Results refused when filed (too large, not JSON) are not kept for next time.
            if captured is not None and (
                outcome.results is None or worker.name in payload.results.workers
            ):
                assert key is not None
                stored.append((key, cache.encode(captured, when)))
        cache.put(stored)

    async def _dispatch(self, payloads: list[Payload]) -> list[list[str]]:
        """The workers the dispatchers pick for each of ``payloads`` this round.

        Dispatchers are asked every round (they may route on new results), so an error is
        recorded once per payload, and a dispatcher that raised is not asked about it again.
        """
        calls, request = self.calls, self.request
        asked = [
            (payload, dispatcher)
            for payload in payloads
            for dispatcher in self.dispatchers.values()
            if not self._gave_up(payload, dispatcher.name)
        ]
        errors: dict[Payload, list[Error]] = {payload: [] for payload in payloads}
        outcomes = await calls.call_each(
            [
                (dispatcher, "get_dispatches", (payload, request), errors[payload], payload.results)
                for payload, dispatcher in asked
            ]
        )
        picks: dict[Payload, list[str]] = {payload: [] for payload in payloads}
        for (payload, dispatcher), outcome in zip(asked, outcomes):
            if outcome is FAILED:
                self._give_up(payload, dispatcher.name)
            response = calls.take(
                outcome, DispatcherResponse, dispatcher, errors[payload], payload.results, {}
            )
            if response is not None:
                first = len(picks[payload])
                try:
                    picks[payload].extend(
                        _names(
                            response.plugin_names,
                            "plugin_names",
                            dispatcher.name,
                            payload.results,
                            errors[payload],
                        )
                    )
                except Exception as exc:  # a generator that raised part way
                    errors[payload].append(
                        Error(
                            cut(
                                "returned plugin_names that could not be read: "
                                f"{type(exc).__name__}: {text_of(exc)}",
                                self.stoq.max_error_length,
                            ),
                            dispatcher.name,
                            payload.results.payload_id,
                        )
                    )
                payload.dispatch_meta[dispatcher.name] = response.meta
                if self.routing is not None:
                    for name in picks[payload][first:]:
                        self.routing.because(payload, name, f"dispatcher {dispatcher.name}")
        for payload in payloads:
            for error in errors[payload]:
                if self._first_report((error.error, error.plugin_name, error.payload_id)):
                    request.errors.append(error)
        return [picks[payload] for payload in payloads]

    def _give_up(self, payload: Payload, plugin: str) -> None:
        """Never ask ``plugin`` about ``payload`` again in this request."""
        if self.given_up is None:
            self.given_up = set()
        self.given_up.add((id(payload), plugin))

    def _gave_up(self, payload: Payload, plugin: str) -> bool:
        return self.given_up is not None and (id(payload), plugin) in self.given_up

    def _first_report(self, key: tuple[Optional[str], ...]) -> bool:
        """True the first time ``key`` is reported in this request."""
        if self.reported is None:
            self.reported = set()
        if key in self.reported:
            return False
        self.reported.add(key)
        return True

    def _schedule(
        self, payload: Payload, name: str, work: dict[tuple[Payload, str], LoadedPlugin]
    ) -> None:
        """Add ``name`` (or, first, the required workers it still lacks) to this round's work."""
        if name in payload.results.plugins_run["workers"] or self._gave_up(payload, name):
            return
        worker = self.simple_workers.get(name)
        if worker is not None:  # the common case: a loaded worker that requires no other
            work.setdefault((payload, name), worker)
            return
        try:
            runnable = self._resolve(payload, name, (), 0)
        except _DependencyError as exc:
            self._give_up(payload, name)
            self.request.errors.append(Error(str(exc), name, payload.results.payload_id))
            return
        except StoqException as exc:  # not installed, failed to load, or not a worker
            self._give_up(payload, name)
            if self._first_report((name,)):
                self.request.errors.append(Error(str(exc), name, payload.results.payload_id))
            return
        if self.routing is not None:
            for required in runnable[:-1] if runnable[-1].name == name else runnable:
                self.routing.because(payload, required.name, f"required_workers of {name}")
            if runnable[-1].name != name:
                self.routing.defer(payload, name)
        if runnable[-1].name != name:
            # Its required workers go first; it comes back next round.
            self.pending.setdefault(payload, []).append(name)
        for worker in runnable:
            work.setdefault((payload, worker.name), worker)

    def _resolve(
        self, payload: Payload, name: str, chain: tuple[str, ...], depth: int
    ) -> list[LoadedPlugin]:
        """The workers to run now for ``name``: itself if its requirements have run, else theirs."""
        stoq = self.stoq
        if name in chain:
            raise _DependencyError(
                f"Circular required_workers dependency: {' -> '.join((*chain, name))}"
            )
        if depth > stoq.max_required_worker_depth:
            raise _DependencyError(
                f"Max required plugin depth ({stoq.max_required_worker_depth}) reached at {name!r} "
                f"({' -> '.join(chain)})"
            )
        worker = stoq.plugins.load(name)
        if "scan" not in worker.hooks:
            raise StoqPluginException(
                f"plugin {name!r} is not a worker: it does not implement 'scan'"
            )
        requires = worker.requirements() if worker.late else worker.required_workers
        if not requires:
            if not worker.late:  # a v3 plugin's required_workers may change: ask it each time
                self.simple_workers[name] = worker
            return [worker]
        ran = payload.results.plugins_run["workers"]
        missing = [r for r in sorted(requires) if r not in ran]
        if not missing:
            return [worker]
        runnable: list[LoadedPlugin] = []
        for required in missing:
            try:
                runnable.extend(self._resolve(payload, required, (*chain, name), depth + 1))
            except StoqException as exc:
                raise _DependencyError(
                    f"required worker {required!r} of {name!r} is unavailable: {exc}"
                ) from exc
        return runnable

    def _take_worker(
        self, payload: Payload, worker: LoadedPlugin, outcome: Any, round_number: int
    ) -> None:
        results = payload.results
        results.plugins_run["workers"].append(worker.name)
        response = self.calls.take(
            outcome,
            WorkerResponse,
            worker,
            self.request.errors,
            results,
            results.workers,
        )
        if response is None:
            return
        errors = self.request.errors
        try:
            if response.dispatch_to:
                names = _names(response.dispatch_to, "dispatch_to", worker.name, results, errors)
                self.pending.setdefault(payload, []).extend(names)
            extracted = response.extracted
            if type(extracted) is not list:
                # An iterator may never end: read no more than a request may hold, plus one.
                limit = self.stoq.max_payloads
                extracted = list(itertools.islice(extracted, limit + 1))
                if len(extracted) > limit:
                    del extracted[limit:]
                    if self.calls.on_limit_hit is not None:
                        # Once per cut: how many the iterator had left is never known.
                        self.calls.on_limit_hit("max_payloads", 1)
                    errors.append(
                        Error(
                            f"extracted more than max_payloads ({limit}) payloads; the rest "
                            "were not read",
                            worker.name,
                            results.payload_id,
                        )
                    )
            for child in extracted:
                self._add_extracted(payload, worker.name, child, round_number)
        except Exception as exc:
            # Whatever else a malformed response holds, it costs this worker's part, not the
            # request (a bad object once lost the whole response).
            errors.append(
                Error(
                    cut(
                        f"returned a malformed WorkerResponse: {type(exc).__name__}: {text_of(exc)}",
                        self.stoq.max_error_length,
                    ),
                    worker.name,
                    results.payload_id,
                )
            )

    def _add_extracted(
        self, parent: Payload, worker: str, extracted: Any, round_number: int
    ) -> None:
        request = self.request
        problem = _malformed(extracted)
        if problem is not None:
            request.errors.append(Error(problem, worker, parent.results.payload_id))
            return
        meta = extracted.payload_meta
        if meta.extra_data:
            # extra_data goes into the JSON as results do, so it is held to the same limit.
            too_big = check_results(meta.extra_data, self.stoq.max_result_size)
            if too_big is not None:
                meta.extra_data = {}
                request.errors.append(
                    Error(
                        f"an extracted payload's extra_data: {too_big}; extra_data dropped",
                        worker,
                        parent.results.payload_id,
                    )
                )
        child = Payload(extracted.content, meta, [worker], [parent.results.payload_id])
        if self.seen is None:
            self.seen = {}
            for payload in request.payloads:
                self.seen.setdefault(payload.digest(), payload)
        digest = child.digest()
        twin = self.seen.get(digest)
        if twin is not None:
            # Once per worker and parent: the same member a million times (or one
            # ExtractedPayload returned a million times) once grew these lists by a million.
            if self._first_report((digest, worker, parent.results.payload_id)):
                twin.results.extracted_by.append(worker)
                twin.results.extracted_from.append(parent.results.payload_id)
            return
        limit = self._over_budget(child)
        if limit is not None:
            self._drop(limit, parent, worker)
            return
        with _budget.LOCK:  # an abandoned call's thread may be charging in flight meanwhile
            held = self.extracted_bytes + self.in_flight + child.results.size
            if held <= self.stoq.max_extracted_bytes:
                self.extracted_bytes += child.results.size
        if held > self.stoq.max_extracted_bytes:
            self._drop(
                f"max_extracted_bytes ({self.stoq.max_extracted_bytes} bytes)", parent, worker
            )
            return
        self.seen[digest] = child
        self._first_report((digest, worker, parent.results.payload_id))  # for its twins
        request.payloads.append(child)
        if round_number >= self.stoq.max_recursion:
            if self.calls.on_limit_hit is not None:
                self.calls.on_limit_hit("max_recursion", 1)
            request.errors.append(
                Error(
                    f"Final worker round ({round_number}) reached, unable to process payload",
                    None,
                    child.results.payload_id,
                )
            )
        elif meta.should_scan and meta.dispatch_to:
            names = _names(meta.dispatch_to, "dispatch_to", worker, child.results, request.errors)
            meta.dispatch_to = names  # what the JSON shows, an iterator read once
            self.pending.setdefault(child, []).extend(names)
            return
        if meta.dispatch_to:
            # Not scheduled, but in the JSON all the same: held to the same limits.
            meta.dispatch_to = _names(
                meta.dispatch_to, "dispatch_to", worker, child.results, request.errors
            )

    def charge_in_flight(self, nbytes: int) -> None:
        """A worker is producing ``nbytes`` for this request (``charge_extracted_bytes``)."""
        limit = self.stoq.max_extracted_bytes
        with _budget.LOCK:
            held = self.extracted_bytes + self.in_flight
            if held + nbytes > limit:
                raise _budget.exceeded(limit, held, nbytes)
            self.in_flight += nbytes

    def budget_state(self) -> tuple[int, int]:
        """``max_extracted_bytes``, and what the request's extractions hold now."""
        return self.stoq.max_extracted_bytes, self.extracted_bytes + self.in_flight

    def _settle(self) -> None:
        """The round's calls have returned: give back what they charged while producing, as
        the payloads they extracted are charged when kept. Not if the watchdog abandoned a
        call meanwhile: its thread may still hold what it charged."""
        if self.calls.watchdog.expirations == self.expirations:
            with _budget.LOCK:
                self.in_flight = 0

    def _over_budget(self, child: Payload) -> Optional[str]:
        """The extraction limit ``child`` would break, described, or None."""
        stoq, size = self.stoq, child.results.size
        if size > stoq.max_payload_size:
            return f"max_payload_size ({stoq.max_payload_size} bytes)"
        if len(self.request.payloads) >= stoq.max_payloads:
            return f"max_payloads ({stoq.max_payloads})"
        return None

    def _drop(self, limit: str, parent: Payload, worker: str) -> None:
        # One Error per limit, its count kept current, so a bomb of a million members does
        # not bury the response under a million identical errors.
        if self.dropped is None:
            self.dropped = {}
        error, count = self.dropped.get(limit, (None, 0))
        if error is None:
            error = Error("", worker, parent.results.payload_id)
            self.request.errors.append(error)
        self.dropped[limit] = (error, count + 1)
        error.error = f"{limit} exceeded: {count + 1} extracted payload(s) dropped"


_MAX_NAMES = 1000  # worker names one response may ask for
_MAX_NAME_LENGTH = 200  # characters of one; a longer one is no plugin's (errors quote it)


def _names(
    names: Any, field: str, plugin: str, about: PayloadResults, errors: list[Error]
) -> list[str]:
    """The plugin names in ``names`` (a response's ``dispatch_to`` or ``plugin_names``); anything
    that is not one is reported as ``plugin``'s error, not passed on to crash the request."""
    if type(names) is not list:
        names = list(itertools.islice(names, _MAX_NAMES + 1))
    good = [name for name in names[:_MAX_NAMES] if _is_name(name)]
    if len(good) < len(names):
        bad = [name for name in names[:_MAX_NAMES] if not _is_name(name)]
        if bad:
            what = f"{len(bad)} item(s) that are not plugin names, e.g. {text_of(bad[0])[:80]!r}"
        else:  # (bad[0] was once read here: more than 1000 good names raised IndexError)
            what = f"more than {_MAX_NAMES} names"
        errors.append(Error(f"{field} holds {what}; they were ignored", plugin, about.payload_id))
    return good


def _is_name(name: Any) -> bool:
    return type(name) is str and 0 < len(name) <= _MAX_NAME_LENGTH


def _malformed(extracted: Any) -> Optional[str]:
    """What is wrong with an item of a worker's ``extracted``, or None if it can be scanned."""
    if type(extracted) is not ExtractedPayload and not isinstance(extracted, ExtractedPayload):
        return f"extracted a {type(extracted).__name__}, expected ExtractedPayload"
    content = extracted.content
    if type(content) is not bytes:
        try:
            memoryview(content)
        except TypeError:
            return (
                f"extracted a payload whose content is a {type(content).__name__}, expected bytes"
            )
    meta = extracted.payload_meta
    if type(meta) is not PayloadMeta and not isinstance(meta, PayloadMeta):
        return f"extracted a payload whose payload_meta is a {type(meta).__name__}, expected PayloadMeta"
    if not isinstance(meta.extra_data, dict):
        return (
            f"extracted a payload whose extra_data is a {type(meta.extra_data).__name__}, "
            "expected dict"
        )
    return None


def cap_errors(errors: list[Error], limit: int) -> None:
    """Keep the first ``limit`` errors and one saying how many more there were.

    One request's plugins once filled a response with a million errors (192 MB of JSON).
    """
    dropped = 0
    for error in errors[limit:]:  # those trim_errors dropped while the request ran, counted
        dropped += error.count if type(error) is DroppedErrors else 1
    del errors[limit:]
    errors.append(Error(dropped_text(dropped, limit)))
