"""The seven hooks a stoQ plugin can implement.

A plugin implements any of them, marked with ``stoq_core.hookimpl`` (or, for a class derived from
``stoq_core.plugins.WorkerPlugin`` and friends, simply by defining the method). Which role a plugin
plays in a scan is decided by where the user names it, not by the hooks alone.

Implementations may be ``async def`` (the normal case) or plain ``def``; the engine runs a plain
``def`` in a worker thread so it never blocks the event loop. The engine calls each plugin's
implementation itself and attributes its result or exception to that plugin: a raise or a return
of the wrong type becomes an ``Error`` in the response and the scan goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import pluggy

if TYPE_CHECKING:
    import asyncio

    from stoq_core.data_classes import (
        ArchiverResponse,
        DecoratorResponse,
        DispatcherResponse,
        Payload,
        Request,
        StoqResponse,
        WorkerResponse,
    )

__all__ = ["HOOK_NAMES", "PROJECT_NAME", "hookimpl"]

PROJECT_NAME = "stoq"

_hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Marks a plugin's function or method as the implementation of the hook of the same name.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@_hookspec
def scan(payload: Payload, request: Request) -> Optional[WorkerResponse]:
    """Analyse one payload: the worker role.

    Called once per payload for each worker that the start/always dispatch lists, a dispatcher,
    a ``dispatch_to`` or a ``required_workers`` entry names, at most once per payload.

    :param payload: the payload; ``payload.content`` is its bytes, ``payload.results`` what other
        workers found so far (``payload.results.workers['hash']``).
    :param request: the whole request, every payload scanned or extracted so far.
    :returns: a ``WorkerResponse`` whose ``results`` go to ``workers[<plugin name>]``, whose
        ``extracted`` payloads are scanned in the next round, whose ``dispatch_to`` names more
        workers for this payload; ``None`` records that the worker ran with nothing to say.
    """


@_hookspec
def get_dispatches(payload: Payload, request: Request) -> Optional[DispatcherResponse]:
    """Choose workers for a payload: the dispatcher role.

    Called for every scannable payload in every round, so a dispatcher sees the request as it grows.

    :param payload: the payload to route.
    :param request: the whole request so far.
    :returns: a ``DispatcherResponse`` whose ``plugin_names`` are run on the payload and whose
        ``meta`` is kept in ``payload.dispatch_meta[<plugin name>]``; ``None`` dispatches nothing.
    """


@_hookspec
def archive(payload: Payload, request: Request) -> Optional[ArchiverResponse]:
    """Save a payload's bytes: the destination archiver role.

    Called after the scan rounds, for every payload whose ``should_archive`` is true, when the
    request's ``archive_payloads`` is true.

    :param payload: the payload to save.
    :param request: the whole request.
    :returns: an ``ArchiverResponse`` whose ``results`` (enough to find the bytes again, e.g.
        ``{"path": ...}``) go to ``archivers[<plugin name>]``; ``None`` records nothing.
    """


@_hookspec
def get(task: ArchiverResponse) -> Optional[Payload]:
    """Load a payload from where an earlier ``archive`` put it: the source archiver role.

    Called by ``Stoq.run`` for each ``{archiver_name: task}`` item a provider queues.

    :param task: an ``ArchiverResponse`` whose ``results`` is what ``archive`` returned.
    :returns: the ``Payload`` to scan; ``None`` means there is nothing to scan.
    """


@_hookspec
def decorate(response: StoqResponse) -> Optional[DecoratorResponse]:
    """Look at a finished response as a whole: the decorator role.

    Called once per response, after the workers and archivers, before the connectors.

    :param response: the response so far.
    :returns: a ``DecoratorResponse`` whose ``results`` go to ``decorators[<plugin name>]``;
        ``None`` adds nothing.
    """


@_hookspec
def save(response: StoqResponse) -> None:
    """Store or forward a finished response: the connector role.

    Called once per response, after the decorators. A raise is recorded in the response's errors
    (the CLI then exits non-zero); the other connectors still save.

    :param response: the finished response.
    :returns: nothing.
    """


@_hookspec
def ingest(queue: asyncio.Queue[object]) -> None:
    """Feed ``Stoq.run``: the provider role.

    Called once when ``run`` starts; ``run`` ends when every provider has returned and the queue
    is drained.

    :param queue: a bounded queue; put a ``Payload``, a ``Request``, or ``{archiver_name: task}``
        for a source archiver to load (``await queue.put(...)``).
    :returns: nothing.
    :raises StoqException: before queueing anything, for a configuration error (a missing
        option): ``run`` then raises it and scans nothing. Any other failure is logged and
        counted, and the other providers go on.
    """


#: The hook names, in the order the roles appear in a scan.
HOOK_NAMES = ("ingest", "get", "get_dispatches", "scan", "archive", "decorate", "save")
