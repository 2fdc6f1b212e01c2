"""The LevelDB store behind ``LocalDisk``: the only module that imports plyvel."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import weakref
from collections.abc import Iterator, Sequence

import plyvel

from ecosystems._directory import (
    REPAIR_MARKER,
    access_error,
    advice,
    claim,
    directory_path,
    fsync_directory,
    holds_leveldb_files,
    make_directory,
    release,
    should_create,
)
from pachyderm._kv import restore_after_repair
from pachyderm._store import Operation
from pachyderm.errors import (
    EcosystemClosedError,
    ForkedProcessError,
    InvalidArgumentError,
    StoreAccessError,
    StoreCorruptedError,
    StoreLockedError,
)

__all__ = ["CACHE_BYTES", "REPAIR_LOSES", "LevelDBStore", "repair"]

CACHE_BYTES = 64 << 20

REPAIR_LOSES = (
    "Repair keeps every record LevelDB can still read; records in damaged blocks or "
    "torn log entries are lost, so entities stored there come back at an older state "
    "or at init(), and messages stored there are gone."
)

# Messages in LevelDB's IO errors, and the errno they stand for.
_IO_ERRORS = (
    ("Permission denied", errno.EACCES),
    ("Read-only file system", errno.EROFS),
    ("No space left on device", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("No such file or directory", errno.ENOENT),
)

_stores: weakref.WeakSet[LevelDBStore] = weakref.WeakSet()  # open here, for fork handling
_inherited: list[plyvel.DB] = []  # handles a forked child must never close


class LevelDBStore:
    """A LevelDB directory; one process (and one open store in it) owns it at a time."""

    blocking = True  # writes fsync: the runtime runs them in a worker thread
    volatile = False

    def __init__(self, path: object, *, repairing: bool = False) -> None:
        self.path = directory_path(path)
        self._forked_from: int | None = None
        make_directory(self.path)
        # repair() holds the claim, and the directory its marker, while it opens the store.
        self._real = None if repairing else claim(self.path)
        try:
            create = False if repairing else should_create(self.path)
            self._db: plyvel.DB | None = _open_leveldb(self.path, create=create)
            try:
                # Held open to see, after each synced write, that the directory was not deleted.
                self._directory = os.open(self.path, os.O_RDONLY)
                # A file system that counts no links for directories cannot show this.
                self._deletion_visible = os.fstat(self._directory).st_nlink > 0
            except OSError as error:
                self._db.close()
                raise access_error(self.path, error) from None
        except BaseException:
            if self._real is not None:
                release(self._real)
            raise
        _stores.add(self)

    def __repr__(self) -> str:
        return f"LevelDBStore({self.path!r})"

    def _open_db(self) -> plyvel.DB:
        if self._db is None:
            if self._forked_from is not None:
                raise ForkedProcessError(
                    f"the LocalDisk store {self.path!r} belongs to process "
                    f"{self._forked_from}, which this process was forked from; only that "
                    f"process may use it"
                )
            raise EcosystemClosedError(f"the LocalDisk store {self.path!r} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        try:
            # Checked: a damaged block otherwise reads as a missing key, and the
            # entity silently back at init(). (Only blocks read from disk are checked.)
            value: bytes | None = self._open_db().get(key, verify_checksums=True)
        except plyvel.Error as error:
            raise self._failed(error, "reading") from None
        return value

    def scan(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        if start is None:
            items = self._open_db().iterator(prefix=prefix, verify_checksums=True)
        else:
            items = self._open_db().iterator(
                start=max(start, prefix), stop=_end_of(prefix), verify_checksums=True
            )
        try:
            with items:
                yield from items
        except plyvel.Error as error:
            raise self._failed(error, "reading") from None

    def write(self, operations: Sequence[Operation], *, sync: bool) -> None:
        batch = self._open_db().write_batch(sync=sync)
        put, delete = batch.put, batch.delete  # one lookup per batch, not per operation
        for key, value in operations:
            if value is None:
                delete(key)
            else:
                put(key, value)
        try:
            batch.write()
        except plyvel.Error as error:
            raise self._failed(error, "writing") from None
        # A deleted directory takes its files with it, though writes to the open ones
        # go on succeeding: a synced write there is not durable, so it is not acknowledged.
        if sync and os.fstat(self._directory).st_nlink == 0 and self._deletion_visible:
            raise StoreAccessError(
                f"the LocalDisk directory {self.path!r} was deleted while the store was "
                f"open: what was written since is gone with it. Stop whatever deletes it; "
                f"open the store again (a new, empty one if nothing is left)."
            )

    def _failed(self, error: plyvel.Error, doing: str) -> Exception:
        """The error to raise for a LevelDB error while reading or writing."""
        if isinstance(error, plyvel.CorruptionError):
            return StoreCorruptedError(
                f"the LocalDisk directory {self.path!r} is damaged ({doing} failed: "
                f"{_text(error)}). Close it, copy it aside, then run "
                f"ecosystems.LocalDisk.repair({self.path!r}). {REPAIR_LOSES}"
            )
        code = _errno_of(error)
        if code is not None:
            return StoreAccessError(
                f"{doing} the LocalDisk directory {self.path!r} failed: {_text(error)}. "
                f"{advice(code)}"
            )
        return StoreCorruptedError(
            f"{doing} the LocalDisk directory {self.path!r} failed: {_text(error)}. If it "
            f"persists, copy the directory aside and run "
            f"ecosystems.LocalDisk.repair({self.path!r}). {REPAIR_LOSES}"
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            os.close(self._directory)
            if self._real is not None:
                release(self._real)

    def _forsake(self, parent: int) -> None:
        """In a forked child: let go of the parent's handle without closing it.

        Closing it would run LevelDB's shutdown in the child (waiting on threads
        and locks the child does not have) over the parent's open files; so the
        handle is kept alive, untouched, until the child exits.
        """
        if self._db is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._db))  # never freed, not even at exit
            _inherited.append(self._db)
            self._db = None
            self._forked_from = parent


def _after_fork_in_child() -> None:
    parent = os.getppid()
    for store in list(_stores):
        store._forsake(parent)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _text(error: plyvel.Error) -> str:
    message = error.args[0] if error.args else error
    return os.fsdecode(message) if isinstance(message, bytes) else str(message)


def _errno_of(error: plyvel.Error) -> int | None:
    text = _text(error)
    for message, code in _IO_ERRORS:
        if message in text:
            return code
    return None


def _open_leveldb(path: str, *, create: bool) -> plyvel.DB:
    """Open LevelDB at ``path`` (creating it only if ``create``), translating its errors."""
    try:
        return plyvel.DB(
            path,
            create_if_missing=create,
            paranoid_checks=True,
            # Entities outnumber what stays resident: most state reads hit
            # LevelDB. A larger block cache and bloom filters halve a read's
            # cost with a million entities (13 -> 5 us measured here).
            lru_cache_size=CACHE_BYTES,
            bloom_filter_bits=10,
        )
    except plyvel.IOError as error:
        text = _text(error)
        code = _errno_of(error)
        if code is not None and code != errno.ENOENT:
            raise StoreAccessError(
                f"cannot open the LocalDisk directory {path!r}: {text}. {advice(code)}"
            ) from None
        if "lock" in text.lower():
            raise StoreLockedError(
                f"the LocalDisk directory {path!r} is already open, by another "
                f"process or elsewhere in this one; one process owns a directory at a "
                f"time. Stop the other user, or use another directory ({text})"
            ) from None
        raise StoreCorruptedError(
            f"cannot open the LocalDisk directory {path!r}: {text}. Copy it aside, then "
            f"try ecosystems.LocalDisk.repair({path!r}). {REPAIR_LOSES}"
        ) from None
    except plyvel.Error as error:
        raise StoreCorruptedError(
            f"the LocalDisk directory {path!r} is damaged: {_text(error)}. Copy it "
            f"aside, then run ecosystems.LocalDisk.repair({path!r}), which keeps what "
            f"LevelDB can still read. {REPAIR_LOSES}"
        ) from None


def _end_of(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def repair(path: object) -> None:
    """Rebuild a damaged LocalDisk store from the files LevelDB can still read.

    Safe to interrupt: until it finishes, the directory carries a marker that
    makes opening it refuse and say to run repair again, which starts over.

    Raises:
        InvalidArgumentError: ``path`` is not a directory holding a LevelDB store.
        StoreLockedError: the store is open, in this process or another.
    """
    path = directory_path(path)
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        raise InvalidArgumentError(
            f"there is no directory {path!r} to repair; give the directory of a LocalDisk store"
        ) from None
    except OSError as error:
        raise access_error(path, error) from None
    if REPAIR_MARKER not in names and not holds_leveldb_files(names):
        raise InvalidArgumentError(
            f"the directory {path!r} holds no LevelDB files, so there is nothing to "
            f"repair; give the directory of a LocalDisk store"
        )
    real = claim(path)
    try:
        lock = _lock_against_other_processes(path)
        try:
            marker = os.path.join(path, REPAIR_MARKER)
            with open(marker, "wb") as file:
                os.fsync(file.fileno())
            fsync_directory(path)
            try:
                plyvel.repair_db(path, paranoid_checks=True)
            except plyvel.Error as error:
                raise StoreCorruptedError(
                    f"LevelDB could not repair {path!r}: {_text(error)}"
                ) from None
            _fsync_files(path)  # LevelDB's repair leaves some of what it wrote unsynced
            store = LevelDBStore(path, repairing=True)
            try:
                restore_after_repair(store)
            finally:
                store.close()
            os.remove(marker)
            fsync_directory(path)
        finally:
            os.close(lock)
    except OSError as error:
        raise access_error(path, error) from None
    finally:
        release(real)


def _lock_against_other_processes(path: str) -> int:
    """Take LevelDB's own lock on the directory: no process may open it meanwhile."""
    descriptor = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise StoreLockedError(
            f"the LocalDisk directory {path!r} is open in another process; close it "
            f"there before repairing it"
        ) from None
    return descriptor


def _fsync_files(path: str) -> None:
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            descriptor = os.open(full, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    fsync_directory(path)
