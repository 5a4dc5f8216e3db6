"""The ``local`` result cache: one sqlite file that every stoQ process of a machine shares.

sqlite in WAL mode lets readers go on while one process writes, and serialises writers with a
short busy wait; a lock held longer than ``BUSY_TIMEOUT`` is a failed write (a miss next time),
never a stalled scan. The file is made on first use, in ``$STOQ_HOME/cache`` (``[core]
cache_url`` names another directory), readable by its owner only: it holds scan results.

Writes are kept in memory (where this process's lookups see them) and written together, up to
``FLUSH_EVERY`` entries or ``FLUSH_AFTER`` seconds at a time, and when the process exits: one
sqlite transaction costs about 50 us, more than the rest of a small payload's scan, so one per
scan would make a miss several times dearer. A process killed outright loses what it had not
written, which costs later scans only misses.

Expired entries are never returned; they, and the oldest entries when the file holds more than
``max_bytes``, are deleted every ``PURGE_EVERY`` writes of a process.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from stoq_core._cache import CacheBackend, CacheSettings

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "BUSY_TIMEOUT",
    "CLOSE_TIMEOUT",
    "FILE_NAME",
    "FLUSH_AFTER",
    "FLUSH_EVERY",
    "PURGE_EVERY",
    "SETUP_TIMEOUT",
    "LocalCache",
]

FILE_NAME = "results.sqlite3"
#: Seconds a write waits for another process's; one waiting longer is given up (a miss later).
BUSY_TIMEOUT = 0.5
#: Seconds the last write of a process (``close``, exit) waits for another's: nothing waits on
#: it, and what it fails to write is lost.
CLOSE_TIMEOUT = 5.0
#: Seconds a process opening the file retries its setup while others are setting it up too.
SETUP_TIMEOUT = 5.0
#: Writes between two purges of expired and (past ``max_bytes``) oldest entries.
PURGE_EVERY = 1000
#: Entries kept in memory before they are written, and seconds the oldest may wait.
FLUSH_EVERY = 100
FLUSH_AFTER = 1.0
_CHUNK = 500  # keys per SELECT: sqlite bounds the parameters of one statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    stored REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_stored ON results (stored);
"""


class LocalCache(CacheBackend):
    """Cached responses in ``results.sqlite3`` under ``settings.url`` or ``home/cache``."""

    def __init__(self, settings: CacheSettings) -> None:
        self.directory = settings.url or os.path.join(settings.home, "cache")
        self.path = os.path.join(self.directory, FILE_NAME)
        self._file = _File.of(self.path, settings.max_bytes)

    def get_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        return self._file.get_many(keys)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        self._file.set_many(items, ttl)

    def flush(self) -> None:
        """Write the entries kept in memory now."""
        self._file.flush()

    def close(self) -> None:
        # Only what is in memory: the connection is the process's, shared by every Stoq.
        self._file.flush(wait=CLOSE_TIMEOUT)


_FILES: dict[str, _File] = {}
_FILES_LOCK = threading.Lock()


class _File:
    """The sqlite file and the entries not yet written to it: one per file in a process, so
    that every ``Stoq`` of a process sees what the others keep, written or not."""

    @classmethod
    def of(cls, path: str, max_bytes: int) -> _File:
        with _FILES_LOCK:
            file = _FILES.get(path)
            if file is None:
                if not _FILES:
                    _flush_at_exit()
                file = _FILES[path] = cls(path, max_bytes)
            file.max_bytes = max(file.max_bytes, max_bytes)
            return file

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.connection: Optional[sqlite3.Connection] = None
        self.pid = 0
        self.writes = 0
        self.pending: dict[str, tuple[bytes, float, float]] = {}  # key -> value, stored, expires
        self.oldest = 0.0  # when the oldest pending entry was kept
        # One connection per process, used by whichever thread scans (a Stoq may be shared by
        # threads that each run an event loop).
        self.lock = threading.Lock()

    def connect(self) -> sqlite3.Connection:
        if self.connection is not None and self.pid == os.getpid():
            return self.connection
        # Imported on first use: a run with the cache off never pays for it. A forked child
        # opens its own connection (sqlite's must not cross a fork) and leaves its parent's
        # pending entries to the parent.
        import sqlite3

        self.pending.clear()
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Made owner-only before sqlite opens it (its -wal and -shm files take its mode):
        # the directory may be $STOQ_HOME/cache, which others may read.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            _set_up(connection)
        except BaseException:
            connection.close()
            raise
        self.connection, self.pid, self.writes = connection, os.getpid(), 0
        return connection

    def get_many(self, keys: Sequence[str]) -> list[Optional[bytes]]:
        now = time.time()
        found: dict[str, bytes] = {}
        with self.lock:
            connection = self.connect()
            pending = self.pending
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT key, value FROM results WHERE key IN ({marks}) AND expires > ?",
                    (*chunk, now),
                )
                found.update(rows)
            if pending:
                for key in keys:
                    kept = pending.get(key)
                    if kept is not None and kept[2] > now:
                        found[key] = kept[0]
        return [found.get(key) for key in keys]

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float) -> None:
        now = time.time()
        expires = now + ttl if ttl > 0 else float("inf")
        with self.lock:
            self.connect()
            if not self.pending:
                self.oldest = now
            for key, value in items:
                self.pending[key] = (value, now, expires)
            if len(self.pending) >= FLUSH_EVERY or now - self.oldest >= FLUSH_AFTER:
                self._write()

    def flush(self, wait: float = BUSY_TIMEOUT) -> None:
        """Write what is kept in memory, waiting up to ``wait`` seconds for another writer."""
        with self.lock:
            if not self.pending or self.pid != os.getpid():
                return
            if wait == BUSY_TIMEOUT:
                self._write()
                return
            connection = self.connect()
            connection.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            try:
                self._write()
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")

    def _write(self) -> None:
        connection = self.connect()
        rows = [(key, *kept) for key, kept in self.pending.items()]
        # Cleared first: entries a locked file refused are dropped, not retried forever.
        self.pending.clear()
        with connection:  # one transaction: BEGIN ... COMMIT, or ROLLBACK on a raise
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", rows)
        self.writes += len(rows)
        if self.writes >= PURGE_EVERY:
            self.writes = 0
            self._purge(connection, time.time())

    def _purge(self, connection: sqlite3.Connection, now: float) -> None:
        """Delete expired entries, then the oldest fifth while the file is over ``max_bytes``."""
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DELETE FROM results WHERE expires <= ?", (now,))
            for _ in range(8):  # bounded: each pass deletes a fifth of what is left
                if _bytes_used(connection) <= self.max_bytes:
                    break
                connection.execute(
                    "DELETE FROM results WHERE key IN (SELECT key FROM results ORDER BY stored "
                    "LIMIT max(1, (SELECT count(*) FROM results) / 5))"
                )


def _flush_at_exit() -> None:
    """Have ``_flush_all`` run when this process exits: at interpreter exit, and in a process
    multiprocessing started (``--jobs``), whose end skips ``atexit`` but runs its finalizers."""
    atexit.register(_flush_all)
    if "multiprocessing" in sys.modules:
        from multiprocessing import util

        util.Finalize(None, _flush_all, exitpriority=0)


def _flush_all() -> None:
    """At exit: write what every file still holds in memory. A failure costs later scans
    misses; it is not worth a traceback at exit."""
    for file in list(_FILES.values()):
        try:
            file.flush(wait=CLOSE_TIMEOUT)
        except Exception:  # nothing is left to tell it to
            pass


def _set_up(connection: sqlite3.Connection) -> None:
    """WAL mode and the table, retried while another process is doing the same.

    Switching a new file to WAL takes an exclusive lock, and sqlite refuses it at once (its busy
    wait does not apply) while another connection is opening the file: the workers of ``stoq
    scan --jobs`` all open a new cache file in the same milliseconds. Once set up, the file
    stays in WAL mode and the table exists, so later openings do not wait here.
    """
    import sqlite3

    deadline = time.monotonic() + SETUP_TIMEOUT
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            # A crash may lose the last writes (misses later), never corrupt the file.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _bytes_used(connection: sqlite3.Connection) -> int:
    """The bytes of the file's pages that hold data (free pages are reused, not counted)."""
    (pages,) = connection.execute("PRAGMA page_count").fetchone()
    (free,) = connection.execute("PRAGMA freelist_count").fetchone()
    (size,) = connection.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)
