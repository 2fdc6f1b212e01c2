"""``InMemory``: ecosystems in this process's memory, with LocalDisk's semantics and no disk."""

from __future__ import annotations

from ecosystems._memory import MemoryStore
from pachyderm._kind import EcosystemKind
from pachyderm._kv import KeyValueStorage
from pachyderm._storage import Storage
from pachyderm.errors import InvalidArgumentError, describe

__all__ = ["InMemory"]


def _open(location: str | None) -> Storage:
    if location is not None:
        raise InvalidArgumentError(
            f"InMemory keeps no files, so it takes no location; got {describe(location)}. "
            f"Use InMemory.open() for a fresh store, or LocalDisk to persist."
        )
    return KeyValueStorage(MemoryStore(), "InMemory")


InMemory = EcosystemKind("InMemory", _open, lambda: None)
