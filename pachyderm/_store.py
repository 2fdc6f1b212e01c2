"""The key-value boundary: an ordered key-value store with atomic batches.

LocalDisk (LevelDB) and InMemory (dicts) implement it;
:class:`~pachyderm._kv.KeyValueStorage` lays the runtime's data out in it, so
the semantics cannot drift apart between them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

__all__ = ["Operation", "Store"]

Operation = tuple[bytes, bytes | None]
"""One write: ``(key, value)`` puts, ``(key, None)`` deletes."""


class Store(Protocol):
    """What a key-value ecosystem needs from its storage."""

    #: True if ``write`` blocks on I/O and should run in a worker thread.
    blocking: bool
    #: True if the data lives in this process's memory and dies with it.
    volatile: bool

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""
        ...

    def scan(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order.

        With ``start``, only those from ``start`` on (keys ``>= start``).
        """
        ...

    def write(self, operations: Sequence[Operation], *, sync: bool) -> None:
        """Apply all operations atomically, in order; durably (fsync) if ``sync``."""
        ...

    def close(self) -> None:
        """Release the store; later calls are errors."""
        ...
