"""The ``filedir`` plugin: files in, results and payloads out, all on the local file system.

One class plays four roles, each chosen by where the user names it:

- provider (``-P filedir``): reads the files of ``source_dir`` and queues each as a payload, once
  or, with ``watch``, as new files arrive (v3's ``dirmon``);
- connector (``-C filedir``): writes each response as JSON to ``results_dir``;
- destination archiver (``-A filedir``): saves payloads' bytes under ``archive_dir``;
- source archiver (``-S filedir``): loads them back from there.

Every write goes to a temporary file in the target directory, is flushed to disk and renamed over
the final name, so a crash never leaves half a file. Where bytes are written is decided by this
plugin's options and the payload's digest or id, never by a payload's file name or metadata.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import errno
import os
import secrets
import stat
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Optional, Union

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from stoq_core import (
    ArchiverResponse,
    Error,
    Option,
    Payload,
    PayloadMeta,
    Request,
    StoqConfigParser,
    StoqPluginException,
    StoqResponse,
)
from stoq_core.helpers import dumps
from stoq_core.plugins import ArchiverPlugin, ConnectorPlugin, ProviderPlugin

__all__ = ["FileDirPlugin"]

# How many ingested file versions a watch remembers, so that each is queued once.
_REMEMBERED_FILES = 100_000

# The core's default [core] max_payload_size; the provider cannot see the core's settings.
_MAX_PAYLOAD_SIZE = 256 << 20

# The provider reads up to this many files, or until it has this many bytes, per trip to a thread.
_READ_BATCH_FILES = 64
_READ_BATCH_BYTES = 8 << 20

# The sha1 fan-out of v3's archive: a/b/c/d/e/<sha1>.
_FAN_OUT = 5


class _Skip(Exception):
    """A file the provider passes over; the message says why."""


class _Link(Exception):
    """A symbolic link met on a walk that follows none; the message is its path."""


#: One version of a file: device, inode, size and modification time. A rename keeps it.
_Version = tuple[int, int, int, int]


class _File(NamedTuple):
    """What reading one file gave."""

    content: Optional[bytes]  #: ``None``: over ``max_payload_size``, not read
    size: Optional[int]  #: ``None``: only known to be over the limit (it grew while read)
    version: _Version


class FileDirPlugin(ProviderPlugin, ConnectorPlugin, ArchiverPlugin):
    """Ingest a directory, save results as JSON files, archive payloads by sha1.

    Options and defaults (relative paths are taken from the current directory when the plugin
    is loaded):

    - provider: ``source_dir`` (required), ``recursive`` (false), ``follow_symlinks`` (false),
      ``watch`` (false), ``watch_limit`` (0: no limit), ``watch_settle`` (1.0 seconds),
      ``watch_polling`` (false), ``max_payload_size`` (256 MiB, the core's default; ``get``
      keeps to it too);
    - connector: ``results_dir`` (``results``), ``date_mode`` (false), ``date_format``
      (``%Y/%m/%d``), ``compactly`` (true);
    - archiver: ``archive_dir`` (``archive``), ``use_sha`` (true);
    - both: ``fsync`` (true): flush each file and its directory to disk before it counts as
      written. ``false`` keeps writes atomic (never half a file) but a power loss may lose the
      latest ones; it is several times faster where each fsync costs a millisecond.
    """

    options = (
        Option("source_dir", str, None, "provider: the directory whose files are scanned"),
        Option("recursive", bool, False, "provider: also read the subdirectories"),
        Option("follow_symlinks", bool, False, "provider: follow symbolic links"),
        Option("watch", bool, False, "provider: keep running, queueing files as they arrive"),
        Option("watch_limit", int, 0, "provider: stop after this many files (0: no limit)"),
        Option("watch_settle", float, 1.0, "provider: seconds a new file must stay unchanged"),
        Option("watch_polling", bool, False, "provider: poll instead of file system events"),
        Option(
            "max_payload_size",
            int,
            _MAX_PAYLOAD_SIZE,
            "bytes one file may have; a larger one is an error, not read",
        ),
        Option("results_dir", str, "results", "connector: where responses are written"),
        Option("date_mode", bool, False, "connector: file responses under date_format folders"),
        Option("date_format", str, "%Y/%m/%d", "connector: strftime folders for date_mode"),
        Option("compactly", bool, True, "connector: one-line JSON rather than indented"),
        Option("archive_dir", str, "archive", "archiver: where payloads are kept"),
        Option("use_sha", bool, True, "archiver: name payloads by sha1 (else by payload id)"),
        Option("fsync", bool, True, "flush each written file to disk before it counts"),
    )

    def __init__(self, config: StoqConfigParser) -> None:
        super().__init__(config)
        source_dir = config.get("options", "source_dir", fallback="").strip()
        #: The directory the provider reads; ``None`` until the option is given.
        self.source_dir: Optional[str] = (
            _directory("source_dir", source_dir) if source_dir else None
        )
        self.recursive = _boolean(config, "recursive", False)
        self.follow_symlinks = _boolean(config, "follow_symlinks", False)
        self.watch = _boolean(config, "watch", False)
        self.watch_limit: int = _number(config, "watch_limit", 0, int)
        self.watch_settle: float = _number(config, "watch_settle", 1.0, float)
        self.watch_polling = _boolean(config, "watch_polling", False)
        #: Bytes one file may have; a larger one is not read but reported as an ``Error``.
        self.max_payload_size: int = _number(config, "max_payload_size", _MAX_PAYLOAD_SIZE, int)
        if self.max_payload_size < 1:
            raise StoqPluginException("max_payload_size must be 1 or more, not 0")

        self.results_dir = _path(config, "results_dir", "results")
        self.date_mode = _boolean(config, "date_mode", False)
        self.date_format: str = config.get("options", "date_format", fallback="%Y/%m/%d")
        self.compactly = _boolean(config, "compactly", True)

        self.archive_dir = _path(config, "archive_dir", "archive")
        self.use_sha = _boolean(config, "use_sha", True)
        self.fsync = _boolean(config, "fsync", True)

    # -- provider --------------------------------------------------------------------------

    async def ingest(self, queue: asyncio.Queue[Any]) -> None:
        """Queue every file of ``source_dir`` as a payload; with ``watch``, keep queueing new ones.

        Each payload's ``extra_data`` holds ``filename`` (the base name) and ``source_dir`` (the
        file's directory). Files that vanish, cannot be read or are not regular files (FIFOs,
        sockets, devices) are logged and skipped; so are symbolic links unless ``follow_symlinks``
        (met anywhere below ``source_dir``: each path is opened one name at a time, following
        none). A file over ``max_payload_size`` is not read: it is queued as a ``Request`` whose
        one payload (not scanned, not archived, empty) carries its ``extra_data`` and an ``Error``
        naming the limit.

        :raises StoqPluginException: ``source_dir`` is not set, missing or not a directory.
        """
        if self.source_dir is None:
            raise StoqPluginException(
                "source_dir is not set: name the directory to ingest, "
                "e.g. --plugin-opts filedir:source_dir=/path/to/files"
            )
        source = _directory("source_dir", self.source_dir)
        if self.watch:
            await _Watch(self, source, queue).run()
            return
        async with contextlib.aclosing(self._files(source)) as files:
            batch: list[str] = []
            async for path in files:
                batch.append(path)
                if len(batch) == _READ_BATCH_FILES:
                    await self._queue_files(source, batch, queue)
                    batch = []
            await self._queue_files(source, batch, queue)

    async def _queue_files(self, source: str, paths: list[str], queue: asyncio.Queue[Any]) -> None:
        """Read ``paths`` in a few trips to a thread, and queue each file as a payload.

        A trip to a thread costs more than reading a small file (100-300 us against tens
        here), so one trip reads files until they add up to ``_READ_BATCH_BYTES``.
        """
        while paths:
            read, paths = await asyncio.to_thread(self._read_files, source, paths)
            for path, file in read:
                if isinstance(file, _Skip):
                    self.log.warning("skipping %s: %s", path, file)
                else:
                    await queue.put(self._item(path, file))

    def _read_files(
        self, source: str, paths: list[str]
    ) -> tuple[list[tuple[str, _File | _Skip]], list[str]]:
        """Read ``paths`` in order until ``_READ_BATCH_BYTES`` have been read (at least one file).

        Runs in a worker thread. :returns: each path read with what it gave (or why it was
        skipped), and the paths left.
        """
        read: list[tuple[str, _File | _Skip]] = []
        total = 0
        with _SourceFiles(source, self.follow_symlinks) as files:
            for index, path in enumerate(paths):
                if total >= _READ_BATCH_BYTES:
                    return read, paths[index:]
                try:
                    file = files.read(path, self.max_payload_size)
                except _Skip as exc:
                    read.append((path, exc))
                    continue
                read.append((path, file))
                total += len(file.content or b"")
        return read, []

    def _item(self, path: str, file: _File) -> Union[Payload, Request]:
        """The queue item for a file read: its payload, or a request saying why it was not read."""
        meta = PayloadMeta(
            extra_data={"filename": os.path.basename(path), "source_dir": os.path.dirname(path)}
        )
        if file.content is not None:
            return Payload(file.content, meta)
        # Queued, not dropped: the response names the file, so no input vanishes unreported.
        meta.should_scan = meta.should_archive = False
        placeholder = Payload(b"", meta)
        size = f"{file.size} bytes" if file.size is not None else "larger"
        message = (
            f"max_payload_size ({self.max_payload_size} bytes) exceeded: {path} is {size}; not read"
        )
        error = Error(message, self.plugin_name, placeholder.results.payload_id)
        return Request([placeholder], errors=[error])

    async def _files(self, top: str) -> AsyncGenerator[str, None]:
        """The files under ``top`` in name order, descending into directories if ``recursive``."""
        excluded = self._own_directories(top)
        top_info = os.stat(top)
        seen_dirs = {(top_info.st_dev, top_info.st_ino)}
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                entries = await asyncio.to_thread(_list_directory, directory, self.follow_symlinks)
            except OSError as exc:
                self.log.warning("skipping directory %s: %s", directory, exc.strerror or exc)
                continue
            subdirectories = []
            for path, kind, identity in entries:
                if kind == "file":
                    yield path
                elif kind == "symlink":
                    self.log.info("skipping %s: a symbolic link (follow_symlinks is off)", path)
                elif kind == "dir" and self.recursive and path not in excluded:
                    # Followed symlinks can loop back to a directory already walked.
                    if identity not in seen_dirs:
                        seen_dirs.add(identity)
                        subdirectories.append(path)
            stack.extend(reversed(subdirectories))

    def _own_directories(self, top: str) -> set[str]:
        # results_dir or archive_dir inside the ingested tree would feed the plugin its own output.
        return {
            directory
            for directory in (self.results_dir, self.archive_dir)
            if directory != top and _within(top, directory)
        }

    async def _read(
        self, source: str, path: str
    ) -> Optional[tuple[Union[Payload, Request], _Version]]:
        """One file's queue item and the version read, or ``None`` (logged) if it was skipped."""

        def read() -> _File:
            with _SourceFiles(source, self.follow_symlinks) as files:
                return files.read(path, self.max_payload_size)

        try:
            file = await asyncio.to_thread(read)
        except _Skip as exc:
            self.log.warning("skipping %s: %s", path, exc)
            return None
        return self._item(path, file), file.version

    # -- connector -------------------------------------------------------------------------

    async def save(self, response: StoqResponse) -> None:
        """Write ``response`` as JSON to ``results_dir/<scan_id>`` (under a dated directory if
        ``date_mode``), replacing the file whole so a reader never sees half a result."""
        name = _file_name("scan_id", response.scan_id)
        folders: list[str] = []
        if self.date_mode:
            dated = _response_time(response).strftime(self.date_format)
            folders = [part for part in _split(dated) if part not in ("", ".")]
        text = dumps(response.to_dict(), compactly=self.compactly) + "\n"
        await asyncio.to_thread(
            _write_beneath, self.results_dir, [*folders, name], text.encode(), self.fsync
        )

    # -- archiver --------------------------------------------------------------------------

    async def archive(self, payload: Payload, request: Request) -> ArchiverResponse:
        """Save the payload's bytes: ``archive_dir/a/b/c/d/e/<sha1>`` with ``use_sha``, else
        ``archive_dir/<payload_id>``.

        :returns: ``{"path": ...}``, what ``get`` needs to load the payload again.
        """
        if self.use_sha:
            sha1 = payload.digest("sha1")
            parts = [*sha1[:_FAN_OUT], sha1]
        else:
            parts = [_file_name("payload_id", payload.results.payload_id)]
        await asyncio.to_thread(
            _write_beneath,
            self.archive_dir,
            parts,
            bytes(payload.content),
            self.fsync,
            self.use_sha,  # a file named by its sha1 already holds these bytes
        )
        return ArchiverResponse({"path": os.path.join(self.archive_dir, *parts)})

    async def get(self, task: ArchiverResponse) -> Payload:
        """Load the payload ``archive`` saved, from ``task.results["path"]``.

        A relative path is taken from ``archive_dir``. The file is opened one name at a time
        from ``archive_dir``, each relative to the directory opened before and following no
        symbolic link: checking the path first and opening it after would let a directory
        swapped for a link in between lead outside (#12).

        :raises StoqPluginException: the task has no path, the path leads outside
            ``archive_dir`` (through ``..``) or through a symbolic link, the file is over
            ``max_payload_size``, or it cannot be read.
        """
        results = task.results
        path = results.get("path") if isinstance(results, Mapping) else None
        if not isinstance(path, str) or not path:
            raise StoqPluginException(
                f'a filedir task must be {{"path": ...}} as archive returns it, not {results!r}'
            )
        parts = _parts_within(self.archive_dir, path)
        if parts is None:
            raise StoqPluginException(
                f"refusing to read {path!r}: it is outside archive_dir {self.archive_dir}"
            )
        file = await asyncio.to_thread(self._read_archived, path, parts)
        if file.content is None:
            size = f"{file.size} bytes" if file.size is not None else "larger"
            raise StoqPluginException(
                f"cannot load {path!r} from the archive: max_payload_size "
                f"({self.max_payload_size} bytes) exceeded: it is {size}"
            )
        full = os.path.join(self.archive_dir, *parts)
        return Payload(file.content, PayloadMeta(extra_data={"path": full}))

    def _read_archived(self, path: str, parts: list[str]) -> _File:
        """Read ``archive_dir/parts...`` following no link; runs in a worker thread."""
        if not _CAN_WALK:
            raise StoqPluginException(
                "get needs to open files relative to a directory without following links "
                "(openat and O_NOFOLLOW), which this system cannot"
            )
        try:
            root = os.open(self.archive_dir, _DIRECTORY_FLAGS)
        except OSError as exc:
            raise StoqPluginException(
                f"cannot load {path!r} from the archive: archive_dir {self.archive_dir}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            fd = _open_beneath(root, parts)
            try:
                return _read_open_file(fd, self.max_payload_size)
            finally:
                os.close(fd)
        except _Link as link:
            raise StoqPluginException(
                f"refusing to read {path!r}: {str(link)!r} is a symbolic link, and get follows "
                f"none (one could lead outside archive_dir {self.archive_dir})"
            ) from None
        except _Skip as exc:
            raise StoqPluginException(f"cannot load {path!r} from the archive: {exc}") from None
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoqPluginException(f"cannot load {path!r} from the archive: {why}") from None
        finally:
            os.close(root)


class _Watch:
    """One ``ingest`` with ``watch``: the files already there, then each new one when complete.

    watchdog reports from its own thread; ``call_soon_threadsafe`` hands each event to the event
    loop, where everything else happens. A file is complete when its writer closes it (inotify
    on Linux reports that), when it is renamed into the directory, or, for events that say
    neither, when its size and modification time stay the same for ``watch_settle`` seconds.

    Events wait in ``pending``, each ``(kind, path)`` once: while ``queue.put`` waits for the
    scans, a writer alternating between two files made a FIFO of events grow by one per
    ``write()`` (100,000 entries for 100,000 writes), bounded by nothing. Held once, they are
    bounded by the files that exist: a deletion drops what was held for its path.
    """

    def __init__(self, plugin: FileDirPlugin, source: str, queue: asyncio.Queue[Any]) -> None:
        self.plugin = plugin
        self.source = source
        self.queue = queue
        self.log = plugin.log
        #: ``(kind, path)`` events not yet handled, oldest first: an ordered set. An
        #: OrderedDict, whose ``popitem(last=False)`` is O(1): taking a dict's first key
        #: passes over every key deleted before it (300,000 events took minutes).
        self.pending: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.arrived = asyncio.Event()
        self.settling: dict[str, asyncio.Task[None]] = {}
        # Versions, not paths: a file renamed after it was queued is the same version (#12).
        self.ingested: collections.OrderedDict[_Version, None] = collections.OrderedDict()
        self.count = 0
        self.excluded = plugin._own_directories(source)

    @property
    def done(self) -> bool:
        return 0 < self.plugin.watch_limit <= self.count

    async def run(self) -> None:
        plugin = self.plugin
        if plugin.watch_polling:
            # Poll often enough that a file is seen changing within its settle time.
            observer: Any = PollingObserver(timeout=max(0.05, plugin.watch_settle / 2))
        else:
            observer = Observer()
        close_events = not plugin.watch_polling and _reports_closes(observer)
        bridge = _EventBridge(asyncio.get_running_loop(), self.post)
        try:
            observer.schedule(bridge, self.source, recursive=plugin.recursive)
            observer.start()
        except OSError as exc:
            raise StoqPluginException(
                f"cannot watch {self.source}: {exc.strerror or exc}; "
                "watch_polling = true watches by listing the directory instead"
            ) from None
        try:
            # Watching starts first, so a file created during this walk is not missed.
            async with contextlib.aclosing(plugin._files(self.source)) as existing:
                async for path in existing:
                    if self.done:
                        return
                    await self._ingest(path)
            while not self.done:
                if not self.pending:
                    self.arrived.clear()
                    await self.arrived.wait()
                    continue
                (kind, path), _ = self.pending.popitem(last=False)
                await self._handle(kind, path, close_events)
        finally:
            for task in self.settling.values():
                task.cancel()
            observer.stop()
            await asyncio.to_thread(observer.join, 10)

    def post(self, kind: str, path: str) -> None:
        """Hold an event for the watch to handle; runs on the event loop, even while the watch
        waits for room in the queue."""
        if kind == "deleted":
            # Whatever was held for the path would find it gone; settling it is moot.
            for held in _FILE_EVENTS:
                self.pending.pop((held, path), None)
            self._stop_settling(path)
            return
        self.pending[kind, path] = None  # one already held keeps its place
        self.arrived.set()

    async def _handle(self, kind: str, path: str, close_events: bool) -> None:
        if kind == "ready":
            self.settling.pop(path, None)
            await self._ingest(path)
        elif kind == "closed" or (kind == "moved" and close_events):
            self._stop_settling(path)
            await self._ingest(path)
        elif kind == "modified" and close_events:
            # A writer is at work; its close event will follow.
            self._stop_settling(path)
        elif kind in ("created", "moved", "modified"):
            self._stop_settling(path)
            self.settling[path] = asyncio.ensure_future(self._settle(path))
        elif kind == "directory moved" and self.plugin.recursive:
            await self._walk(path)
        elif kind == "lost":
            # The kernel's queue overflowed: files may have come with no event. Walk the whole
            # tree again; each version already queued is passed over.
            self.log.warning(
                "file system events under %s were lost; listing it again to catch up", path
            )
            await self._walk(self.source)

    async def _walk(self, top: str) -> None:
        async with contextlib.aclosing(self.plugin._files(top)) as files:
            async for path in files:
                if self.done:
                    return
                await self._ingest(path)

    def _stop_settling(self, path: str) -> None:
        task = self.settling.pop(path, None)
        if task is not None:
            task.cancel()

    async def _settle(self, path: str) -> None:
        before = _version(path, self.plugin.follow_symlinks)
        while True:
            await asyncio.sleep(self.plugin.watch_settle)
            now = _version(path, self.plugin.follow_symlinks)
            if now is None:
                return
            if now == before:
                break
            before = now
        self.post("ready", path)

    async def _ingest(self, path: str) -> None:
        if self.done or not self._wanted(path):
            return
        version = _version(path, self.plugin.follow_symlinks)
        if version is None:
            self.log.info("skipping %s: it vanished before it could be read", path)
            return
        if version in self.ingested:
            # Queued already: seen by the walk and an event, or since renamed or moved.
            self.ingested.move_to_end(version)
            return
        read = await self.plugin._read(self.source, path)
        if read is None:
            return
        item, version = read  # the version read, which may be newer than the one checked
        if version in self.ingested:
            return
        self.ingested[version] = None
        self.ingested.move_to_end(version)
        if len(self.ingested) > _REMEMBERED_FILES:
            self.ingested.popitem(last=False)
        self.count += 1
        await self.queue.put(item)

    def _wanted(self, path: str) -> bool:
        directory = os.path.dirname(path)
        if not self.plugin.recursive and directory != self.source:
            return False
        if any(_within(own, path) for own in self.excluded):
            return False
        if not self.plugin.follow_symlinks and os.path.islink(path):
            self.log.info("skipping %s: a symbolic link (follow_symlinks is off)", path)
            return False
        return True


# The file events the watch acts on; watchdog's others (opened, closed without writing: each
# read of ours makes both) are dropped where they arrive.
_FILE_EVENTS = ("created", "modified", "closed", "moved", "deleted", "ready")


class _EventBridge(FileSystemEventHandler):
    """Runs in watchdog's thread: hands ``(kind, path)`` to ``post`` on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, post: Callable[[str, str], None]) -> None:
        self.loop = loop
        self.post = post

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if event.is_directory:
            if kind == "moved":
                self._post("directory moved", event.dest_path)
            return
        if kind == "moved":
            self._post("deleted", event.src_path)
            self._post("moved", event.dest_path)
        elif kind in _FILE_EVENTS:
            self._post(kind, event.src_path)

    def on_events_lost(self, event: FileSystemEvent) -> None:
        """The kernel dropped events (inotify's queue overflowed). watchdog reports this here
        only, never to ``on_any_event``; versions without ``EventsLostEvent`` never call it."""
        self._post("lost", event.src_path)

    def _post(self, kind: str, path: bytes | str) -> None:
        try:
            self.loop.call_soon_threadsafe(self.post, kind, os.fsdecode(path))
        except RuntimeError:
            pass  # the event loop has closed: the watch is over


def _reports_closes(observer: Any) -> bool:
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError:  # not Linux
        return False
    return bool(isinstance(observer, InotifyObserver))


# -- file system helpers, run in worker threads --------------------------------------------


def _list_directory(
    directory: str, follow_symlinks: bool
) -> list[tuple[str, str, tuple[int, int]]]:
    """``(path, kind, (st_dev, st_ino))`` per entry, by name; kind is file, dir, symlink or other."""
    entries = []
    with os.scandir(directory) as scan:
        for entry in sorted(scan, key=lambda e: e.name):
            try:
                if entry.is_symlink() and not follow_symlinks:
                    kind = "symlink"
                elif entry.is_dir():
                    kind = "dir"
                else:
                    # Regular files, and anything else _SourceFiles.read refuses with a reason.
                    kind = "file"
                identity = (0, 0)
                if kind == "dir":
                    info = entry.stat()
                    identity = (info.st_dev, info.st_ino)
            except OSError:
                kind, identity = "file", (0, 0)  # vanished; _SourceFiles.read says so
            entries.append((entry.path, kind, identity))
    return entries


# Opening a FIFO must not wait for a writer (O_NONBLOCK); fstat then tells what was opened.
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
# Opening one name relative to an open directory (openat) is what makes a walk race-free.
_CAN_WALK = bool(_NOFOLLOW) and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd


class _SourceFiles:
    """Reads files under ``source`` in a worker thread, ``source`` held open meanwhile.

    Without ``follow_symlinks``, each file is opened one name at a time from ``source``,
    following no link: a directory swapped for a link after it was listed is not entered.
    """

    def __init__(self, source: str, follow_symlinks: bool) -> None:
        self.source = source
        self.prefix = source if source.endswith(os.sep) else source + os.sep
        self.follow_symlinks = follow_symlinks
        self.root: Optional[int] = None
        self.root_error: Optional[str] = None

    def __enter__(self) -> _SourceFiles:
        if not self.follow_symlinks and _CAN_WALK:
            try:
                self.root = os.open(self.source, _DIRECTORY_FLAGS)
            except OSError as exc:
                self.root_error = f"source_dir {self.source}: {exc.strerror or exc}"
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self.root is not None:
            os.close(self.root)
            self.root = None

    def read(self, path: str, limit: int) -> _File:
        """The file at ``path``, read up to ``limit`` bytes.

        :raises _Skip: it vanished, cannot be read, is a symbolic link (unless
            ``follow_symlinks``) or is not a regular file.
        """
        try:
            fd = self._open(path)
        except _Link as link:
            where = "" if str(link) == path else f"{link} is "
            raise _Skip(f"{where}a symbolic link (follow_symlinks is off)") from None
        except OSError as exc:
            raise _Skip(exc.strerror or str(exc)) from None
        try:
            return _read_open_file(fd, limit)
        finally:
            os.close(fd)

    def _open(self, path: str) -> int:
        if self.follow_symlinks:
            _refuse_special(os.stat(path))
            return os.open(path, _FILE_FLAGS)
        if self.root_error is not None:
            raise _Skip(self.root_error)
        if self.root is None:  # no openat here: refuse a link at the last step only
            try:
                _refuse_special(os.stat(path, follow_symlinks=False))
                return os.open(path, _FILE_FLAGS | _NOFOLLOW)
            except OSError:
                if os.path.islink(path):
                    raise _Link(path) from None
                raise
        # Every path here was made by joining names to source: no "." or ".." to resolve.
        if not path.startswith(self.prefix):
            raise _Skip(f"not inside source_dir {self.source}")
        parts = path[len(self.prefix) :].split(os.sep)
        try:
            return _open_beneath(self.root, parts)
        except _Link as link:
            raise _Link(os.path.join(self.source, str(link))) from None


def _parts_within(root: str, path: str) -> Optional[list[str]]:
    """The names leading from ``root`` to ``path`` (relative paths start at ``root``), or
    ``None`` if ``path`` is not below ``root``. ``..`` is resolved by name, as no link is
    followed afterwards."""
    full = os.path.normpath(os.path.join(root, path))
    relative = None
    # root itself may be reached through links (it is configuration, trusted): its resolved
    # spelling counts too.
    for spelling in dict.fromkeys((os.path.normpath(root), os.path.realpath(root))):
        if _within(spelling, full) and full != spelling:
            relative = os.path.relpath(full, spelling)
            break
    if relative is None:
        return None
    return relative.split(os.sep)


def _open_beneath(root: int, parts: Sequence[str]) -> int:
    """Open the file ``parts`` names below the open directory ``root``, following no link.

    Each name is opened relative to the directory opened before it (openat) with
    ``O_NOFOLLOW``, so nothing changed between a check and an open can redirect it (#12).

    :returns: the file's descriptor, for the caller to close.
    :raises _Link: a name on the way is a symbolic link; the message is the path up to it.
    :raises OSError: as ``os.open``.
    """
    fd = root
    try:
        for depth, name in enumerate(parts):
            last = depth == len(parts) - 1
            flags = (_FILE_FLAGS if last else _DIRECTORY_FLAGS) | _NOFOLLOW
            try:
                if last:
                    _refuse_special(os.stat(name, dir_fd=fd, follow_symlinks=False))
                opened = os.open(name, flags, dir_fd=fd)
            except OSError as exc:
                # Linux says ELOOP for a link at the last step, ENOTDIR before it (O_DIRECTORY).
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and _is_link(name, fd):
                    raise _Link(os.path.join(*parts[: depth + 1])) from None
                raise
            if fd != root:
                os.close(fd)
            fd = opened
    except BaseException:
        if fd != root:
            os.close(fd)
        raise
    return fd


def _refuse_special(info: os.stat_result) -> None:
    """Refuse what ``info`` describes unless it is a regular file or a symbolic link (which the
    open refuses or follows), before anything opens it.

    Opening is not harmless: it completes a writer's wait on a FIFO (whose next write then
    fails with EPIPE) and starts some devices (a tape rewinds when closed, a hardware
    watchdog arms). ``fstat`` after the open stays the check that counts; this one keeps
    the open from happening for what is already known to be special.

    :raises _Skip: it is not a regular file.
    """
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        raise _Skip(f"not a regular file ({_kind(info.st_mode)})")


def _is_link(name: str, directory: int) -> bool:
    # Only chooses the words of an error: the open has already refused.
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=directory).st_mode)
    except OSError:
        return False


def _read_open_file(fd: int, limit: int) -> _File:
    """Read the open file ``fd``, stopping past ``limit`` bytes: a larger file is not read.

    :raises _Skip: it is not a regular file, or reading fails.
    """
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Skip(f"not a regular file ({_kind(info.st_mode)})")
        version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if info.st_size > limit:
            return _File(None, info.st_size, version)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            # One byte more than fstat says: a file that grew since shows it.
            content = handle.read(info.st_size + 1)
            if len(content) > info.st_size:
                content += handle.read(limit + 1 - len(content))
    except OSError as exc:
        raise _Skip(exc.strerror or str(exc)) from None
    if len(content) > limit:
        return _File(None, None, version)
    return _File(content, len(content), version)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def _version(path: str, follow_symlinks: bool) -> Optional[_Version]:
    """The version of the file at ``path`` now, or ``None`` if it is gone."""
    try:
        info = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


# Making directories, writing and renaming relative to an open directory (mkdirat, openat,
# renameat) is what keeps writes inside results_dir and archive_dir.
_CAN_WRITE_BENEATH = _CAN_WALK and all(
    call in os.supports_dir_fd for call in (os.mkdir, os.stat, os.rename, os.unlink)
)


def _write_beneath(
    root: str, parts: Sequence[str], data: bytes, fsync: bool, keep_existing: bool = False
) -> None:
    """Write ``data`` to ``root/parts...`` as ``_write_atomically`` does, following no symbolic
    link below ``root`` (``root`` itself is configuration, trusted).

    A link planted below ``root`` (``archive/a/b/c/d/e`` to ``/etc/cron.d``: whoever can write
    in ``source_dir`` can when ``archive_dir`` lies inside it, and knows the sha1 of what they
    send) once led the write wherever it pointed. Each directory is now made and opened one
    name at a time, each relative to the one before, refusing links.

    :param keep_existing: a regular file already at the name is left as it is.
    :raises StoqPluginException: a name on the way is a symbolic link.
    :raises OSError: as the writing does.
    """
    if not _CAN_WRITE_BENEATH:
        path = os.path.join(root, *parts)
        if not (keep_existing and os.path.isfile(path)):
            _write_atomically(path, data, fsync)
        return
    os.makedirs(root, exist_ok=True)
    fd = os.open(root, _DIRECTORY_FLAGS)
    try:
        for depth, name in enumerate(parts[:-1]):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            try:
                opened = os.open(name, _DIRECTORY_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and _is_link(name, fd):
                    link = os.path.join(root, *parts[: depth + 1])
                    raise StoqPluginException(
                        f"refusing to write below {link}: it is a symbolic link, and filedir "
                        f"follows none below {root}"
                    ) from None
                raise
            os.close(fd)
            fd = opened
        name = parts[-1]
        if keep_existing:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    return
        _write_in(fd, name, data, fsync)
    finally:
        os.close(fd)


def _write_in(directory: int, name: str, data: bytes, fsync: bool) -> None:
    """Write ``data`` to ``name`` in the open ``directory`` through a temporary file renamed
    over it; renaming replaces a link at ``name`` rather than writing through it."""
    _replace(name, data, fsync, directory)
    if fsync:
        with contextlib.suppress(OSError):
            os.fsync(directory)  # makes the rename itself durable


def _replace(name: str, data: bytes, fsync: bool, directory: Optional[int] = None) -> None:
    """Write ``data`` to a temporary file beside ``name`` and rename it over ``name``;
    ``name`` is relative to the open ``directory``, or a path when there is none."""
    head, tail = os.path.split(name)
    temporary = os.path.join(head, f".{tail}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never write through a file or symlink someone placed at the temporary name.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666, dir_fd=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
        raise


def _split(path: str) -> list[str]:
    for separator in os.altsep or "":
        path = path.replace(separator, os.sep)
    return path.split(os.sep)


def _write_atomically(path: str, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it (synced if ``fsync``);
    where ``_write_beneath`` cannot work."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    _replace(path, data, fsync)
    if fsync:
        _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- options -------------------------------------------------------------------------------


def _file_name(what: str, value: Any) -> str:
    """``value`` as a single file name, refusing anything that could leave its directory."""
    name = str(value)
    separators = {"/", "\\", "\0", os.sep, *(os.altsep or "")}
    if name in ("", ".", "..") or any(s in name for s in separators):
        raise StoqPluginException(f"{what} {name!r} cannot be used as a file name")
    return name


def _within(directory: str, path: str) -> bool:
    try:
        return os.path.commonpath([directory, path]) == directory
    except ValueError:  # different drives
        return False


def _response_time(response: StoqResponse) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(response.time)
    except (TypeError, ValueError):
        return datetime.datetime.now()


def _directory(option: str, path: str) -> str:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise StoqPluginException(f"{option} {full}: no such directory")
    if not os.path.isdir(full):
        raise StoqPluginException(f"{option} {full}: not a directory")
    return full


def _path(config: StoqConfigParser, option: str, default: str) -> str:
    value = config.get("options", option, fallback=default).strip() or default
    return os.path.abspath(os.path.expanduser(value))


def _boolean(config: StoqConfigParser, option: str, default: bool) -> bool:
    try:
        return config.getboolean("options", option, fallback=default)
    except ValueError:
        raw = config.get("options", option)
        raise StoqPluginException(f"{option} must be true or false, not {raw!r}") from None


def _number(config: StoqConfigParser, option: str, default: Any, kind: type) -> Any:
    getter = config.getint if kind is int else config.getfloat
    try:
        value = getter("options", option, fallback=default)
    except ValueError:
        raw = config.get("options", option)
        what = "a whole number" if kind is int else "a number"
        raise StoqPluginException(f"{option} must be {what}, not {raw!r}") from None
    if value < 0:
        raise StoqPluginException(f"{option} must be 0 or more, not {value}")
    return value
