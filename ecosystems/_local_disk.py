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
        """Recover what LevelDB can of a damaged directory. Copy the directory aside first."""
        repair(path)


LocalDisk = LocalDiskKind("LocalDisk", _open, default_directory)
