"""A LocalDisk directory before LevelDB sees it: which path, whose, and what is in it.

LevelDB creates a database wherever it is asked to, even over the files of a
copy that lost its ``CURRENT`` file (then it deletes them as obsolete), and it
locks a directory by the spelling of its path, so a symlink opens it twice in
one process. This module checks what the directory holds before it is
opened, and claims it by its real path.
"""

from __future__ import annotations

import errno
import os
import re
import threading

from pachyderm.errors import (
    InvalidArgumentError,
    StoreAccessError,
    StoreCorruptedError,
    StoreLockedError,
    describe,
)

__all__ = [
    "REPAIR_MARKER",
    "access_error",
    "advice",
    "claim",
    "directory_path",
    "fsync_directory",
    "holds_leveldb_files",
    "make_directory",
    "release",
    "should_create",
]

REPAIR_MARKER = "PACHYDERM-REPAIRING"
"""Present while ``LocalDisk.repair`` works on a directory: a half-repaired store."""

# Files LevelDB writes before a database exists: a directory holding only these is empty.
_BEFORE_CREATION = frozenset({"LOCK", "LOG", "LOG.old"})

_claims: dict[str, tuple[str, int]] = {}  # real path -> (the path it was opened by, pid)
_claims_lock = threading.Lock()


def directory_path(path: object) -> str:
    """The absolute path of a store directory, refusing what cannot be one.

    Raises:
        InvalidArgumentError: ``path`` is not a str or path, or names a file.
    """
    if not isinstance(path, str | os.PathLike):
        raise InvalidArgumentError(
            f"a LocalDisk location is a directory path (str or pathlib.Path), got {describe(path)}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    absolute = os.path.abspath(text)
    try:
        os.fsencode(absolute)
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"the LocalDisk location {absolute!r} cannot be a file name here: it holds a lone "
            f"surrogate that the file system encoding cannot encode; give a path of plain text"
        ) from None
    if "\x00" in absolute:  # (os functions would raise ValueError: embedded null byte)
        raise InvalidArgumentError(
            f"the LocalDisk location {describe(path)} holds a NUL ('\\x00'), which no file "
            f"name can; give a path of plain text"
        )
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise InvalidArgumentError(
            f"the LocalDisk location {absolute!r} is a file, not a directory; LocalDisk "
            f"keeps its data in a directory: give a directory path (created if missing)"
        )
    return absolute


def make_directory(path: str) -> None:
    """Create the directory (and its parents) if missing, saying clearly why not.

    Raises:
        InvalidArgumentError: a component of the path is a file.
        StoreAccessError: permission denied, read-only file system, and the like.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except NotADirectoryError:
        raise InvalidArgumentError(
            f"cannot create the LocalDisk directory {path!r}: a component of that path "
            f"is a file, not a directory. Give a path under a directory."
        ) from None
    except FileExistsError:  # a broken symlink, say
        raise InvalidArgumentError(
            f"cannot create the LocalDisk directory {path!r}: something that is not a "
            f"directory is in the way (a broken symbolic link?). Give a directory path."
        ) from None
    except OSError as error:
        raise access_error(path, error) from None


def access_error(path: str, error: OSError) -> StoreAccessError:
    """The error for an ``OSError`` on a store's directory, saying what to do."""
    return StoreAccessError(
        f"cannot use the LocalDisk directory {path!r}: {error.strerror or error} "
        f"({errno.errorcode.get(error.errno or 0, 'error')}). " + advice(error.errno or 0)
    )


def advice(code: int) -> str:
    """What to do about an operating system error on a store's directory."""
    if code in (errno.EACCES, errno.EPERM):
        return (
            "This process may not write there: give it write permission on the "
            "directory and its files, or use another directory."
        )
    if code == errno.EROFS:
        return "The file system is read-only: remount it read-write, or use another directory."
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "The disk is full: free space, then open the store again."
    return "Check the directory, then open the store again."


def claim(path: str) -> str:
    """Claim a directory for this process by its real path; returns that real path.

    Raises:
        StoreLockedError: this process already has it open, by this or another
            spelling of its path, or inherited it from the parent it forked from.
    """
    real = os.path.realpath(path)
    with _claims_lock:
        held = _claims.get(real)
        if held is not None:
            spelling, pid = held
            if pid != os.getpid():
                raise StoreLockedError(
                    f"the LocalDisk directory {path!r} is open in process {pid}, which "
                    f"this process was forked from: both cannot use it, and a forked "
                    f"child cannot open it even after the parent closes it (LevelDB keeps "
                    f"it locked in the child's copy of the parent). Give the child a "
                    f"directory of its own, or start it with "
                    f"multiprocessing.get_context('spawn')."
                )
            also = "" if spelling == path else f" (as {spelling!r}, the same directory)"
            raise StoreLockedError(
                f"the LocalDisk directory {path!r} is already open in this process{also}; "
                f"one process owns a directory at a time, and opens it once. Use the "
                f"ecosystem already open, or close it first."
            )
        _claims[real] = (path, os.getpid())
    return real


def release(real: str) -> None:
    """Give up this process's claim on a directory."""
    with _claims_lock:
        held = _claims.get(real)
        if held is not None and held[1] == os.getpid():
            del _claims[real]


def _after_fork_in_child() -> None:
    # The lock may have been held by a thread that the child does not have.
    global _claims_lock
    _claims_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def holds_leveldb_files(names: list[str]) -> bool:
    """True if a directory listing includes files only LevelDB writes."""
    return any(
        name.endswith((".ldb", ".sst", ".log")) or name.startswith("MANIFEST-") for name in names
    )


# The first line of LevelDB's info log (LOG, LOG.old): "2026/11/30-07:50:00.123456 7f3a..."
_LEVELDB_LOG_LINE = re.compile(rb"\d{4}/\d\d/\d\d-\d\d:\d\d:\d\d\.\d+ ")


def _written_by_leveldb(path: str) -> bool:
    """Whether a file named like one LevelDB writes before a store exists is LevelDB's:
    an empty LOCK, an info log in LevelDB's format (not a user's file named LOG)."""
    try:
        with open(path, "rb") as file:
            start = file.read(64)
    except OSError:
        return False
    if os.path.basename(path) == "LOCK":
        return not start
    return not start or _LEVELDB_LOG_LINE.match(start) is not None


def should_create(path: str) -> bool:
    """Whether opening ``path`` may create a store: only in an empty directory.

    Returns False for an existing store (it has ``CURRENT``).

    Raises:
        StoreCorruptedError: a repair was interrupted; LevelDB files are there
            but ``CURRENT`` is not (an interrupted copy); or the directory holds
            files that are not a store's. Nothing is changed.
    """
    try:
        names = os.listdir(path)
    except OSError as error:
        raise access_error(path, error) from None
    if REPAIR_MARKER in names:
        raise StoreCorruptedError(
            f"a repair of the LocalDisk directory {path!r} was interrupted, so its "
            f"store may be half repaired. Run ecosystems.LocalDisk.repair({path!r}) "
            f"again: it starts over safely."
        )
    if "CURRENT" in names:
        return False
    if holds_leveldb_files(names):
        raise StoreCorruptedError(
            f"the LocalDisk directory {path!r} holds LevelDB files but no CURRENT file "
            f"(an interrupted copy?), so it cannot be opened as it is, and it is left "
            f"untouched. Copy it aside, then run ecosystems.LocalDisk.repair({path!r}), "
            f"which rebuilds the store from those files."
        )
    others = sorted(
        name
        for name in names
        if name not in _BEFORE_CREATION or not _written_by_leveldb(os.path.join(path, name))
    )
    if others:
        shown = ", ".join(repr(name) for name in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        raise StoreCorruptedError(
            f"the directory {path!r} is not a LocalDisk store and is not empty: it holds "
            f"{shown}{more}. LocalDisk creates a store only in an empty or new directory: "
            f"give one of those."
        )
    return True


def fsync_directory(path: str) -> None:
    """Make the directory's entries (files created, renamed, removed) durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
