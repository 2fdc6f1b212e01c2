"""``LocalDisk``: ecosystems persisted in a LevelDB directory, one process per directory."""

from __future__ import annotations

import os

from ecosystems._leveldb import LevelDBStore, repair
from pachyderm._kind import EcosystemKind
from pachyderm._kv import KeyValueStorage
from pachyderm._storage import Storage

__all__ = ["LocalDisk", "LocalDiskKind", "default_directory"]


def default_directory() -> str:
    """``$PACHYDERM_HOME`` if set, else ``./pachyderm-data``, as an absolute path."""
    return os.path.abspath(os.environ.get("PACHYDERM_HOME") or "pachyderm-data")


def _open(location: str | None) -> Storage:
    store = LevelDBStore(location if location is not None else default_directory())
    return KeyValueStorage(store, f"LocalDisk({store.path!r})")


class LocalDiskKind(EcosystemKind):
    """LevelDB-backed ecosystems; the shell face's default is :func:`default_directory`."""

    @staticmethod
    def repair(path: str) -> None:
        """Rebuild a damaged store from what LevelDB can still read. Copy it aside first.

        What is lost: records in damaged table blocks or torn log entries (their
        entities come back at an older state or at ``init()``; their messages
        are gone); LevelDB moves the files it could not use to ``lost/``.
        Interrupting it (even with kill -9) is safe: the store then refuses to
        open until ``repair`` is run again, which starts over.

        Raises:
            InvalidArgumentError: ``path`` holds no LevelDB store.
            StoreLockedError: the store is open, in this process or another.
        """
        repair(path)


LocalDisk = LocalDiskKind("LocalDisk", _open, default_directory)
