"""An ecosystem kind of your own: SQLite as the store, through ``pachyderm.hosting``.

    from examples.sqlite_kind import SQLite
    SQLite.send_sync(counter, "increment")            # data in $PACHYDERM_HOME/sqlite.db
    async with SQLite.open("shop.db") as eco: ...     # the trio face, same verbs

The whole job is an ordered key-value store with atomic batches: one table of
keys and values. Writes go through one connection, in a transaction each;
reads through another, which in WAL mode sees the last committed batch and
never one half-written. The test suite runs its behaviour tests on this kind
beside InMemory and LocalDisk: the guarantees hold for a store written
outside the core.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from pachyderm.errors import (
    EcosystemClosedError,
    InvalidArgumentError,
    StoreLockedError,
    describe,
)
from pachyderm.hosting import EcosystemKind, KeyValueStorage, Operation, Storage

__all__ = ["SQLite", "SQLiteStore"]


class SQLiteStore:
    """Keys and values in one SQLite table (a ``hosting.Store``)."""

    blocking = True  # a commit waits for the disk
    volatile = False

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        # One owner at a time, as with LocalDisk: a lock file, held while open.
        self._owner = open(self.path + ".lock", "wb")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise StoreLockedError(
                f"the SQLite store {self.path!r} is already open, by another process or "
                f"elsewhere in this one; one owner at a time"
            ) from None
        self._writer = self._connect()
        self._writer.execute(
            "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID"
        )
        self._reader = self._connect()
        self._lock = threading.Lock()  # one read at a time on the reading connection
        self._synchronous = ""
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise EcosystemClosedError(f"the SQLite store {self.path!r} is closed")
        return self._reader

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            row = self._open().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def scan(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        low = prefix if start is None else max(prefix, start)
        high = _end_of(prefix)
        query = "SELECT key, value FROM kv WHERE key >= ?"
        arguments: tuple[bytes, ...] = (low,)
        if high is not None:
            query += " AND key < ?"
            arguments += (high,)
        with self._lock:
            rows = self._open().execute(query + " ORDER BY key", arguments).fetchall()
        for key, value in rows:
            yield bytes(key), bytes(value)

    def write(self, operations: Sequence[Operation], *, sync: bool) -> None:
        self._open()
        writer = self._writer
        synchronous = "FULL" if sync else "NORMAL"  # FULL: the commit survives power loss
        if synchronous != self._synchronous:
            writer.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        writer.execute("BEGIN")
        try:
            for key, value in operations:
                if value is None:
                    writer.execute("DELETE FROM kv WHERE key = ?", (key,))
                else:
                    writer.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
        except BaseException:
            writer.execute("ROLLBACK")
            raise
        writer.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._reader.close()
                self._writer.close()
                self._owner.close()  # releases the lock file


def _end_of(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _default_location() -> str:
    home = os.path.abspath(os.environ.get("PACHYDERM_HOME") or "pachyderm-data")
    os.makedirs(home, exist_ok=True)
    return os.path.join(home, "sqlite.db")


def _checked(location: object) -> str:
    """``location`` as a file path, or a clear error: what a kind owes its users."""
    if not isinstance(location, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"a SQLite location is a file path (str or pathlib.Path), got {describe(location)}"
        )
    path = os.fsdecode(os.fspath(location))
    if "\x00" in path:
        raise InvalidArgumentError(
            f"the SQLite location {describe(location)} holds a NUL ('\\x00'), which no file "
            f"name can; give a path of plain text"
        )
    return path


def _open_storage(location: str | None) -> Storage:
    store = SQLiteStore(_checked(location) if location is not None else _default_location())
    return KeyValueStorage(store, f"SQLite({store.path!r})")


SQLite = EcosystemKind("SQLite", _open_storage, _default_location)
"""Ecosystems in a SQLite file, with LocalDisk's verbs and guarantees."""
