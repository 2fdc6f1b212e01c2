"""``InMemory``: ecosystems in this process's memory, with LocalDisk's semantics and no disk."""

from __future__ import annotations

from ecosystems._memory import MemoryStore
from pachyderm._kind import EcosystemKind
from pachyderm._store import Store
from pachyderm.errors import PachydermError, describe

__all__ = ["InMemory"]


def _open(location: str | None) -> tuple[Store, str]:
    if location is not None:
        raise PachydermError(
            f"InMemory keeps no files, so it takes no location; got {describe(location)}. "
            f"Use InMemory.open() for a fresh store, or LocalDisk to persist."
        )
    return MemoryStore(), "InMemory"


InMemory = EcosystemKind("InMemory", _open, lambda: None)
