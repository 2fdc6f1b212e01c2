"""The store behind ``InMemory``: the same ordered key-value semantics, in dicts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pachyderm._store import Operation
from pachyderm.errors import EcosystemClosedError

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keys and values in one dict per table tag (a key's first byte).

    A scan sorts the matching keys of its table only: scans are rare (opening,
    dead letters, loading timers), and the table of entity states, the largest,
    is never scanned.
    """

    blocking = False  # nothing to wait for: writes are applied in the caller's thread
    volatile = True  # a message in the runtime's memory is as durable as one in these dicts

    def __init__(self) -> None:
        self._tables: dict[int, dict[bytes, bytes]] | None = {}

    def _open_tables(self) -> dict[int, dict[bytes, bytes]]:
        if self._tables is None:
            raise EcosystemClosedError("this InMemory store is closed; its data is gone")
        return self._tables

    def get(self, key: bytes) -> bytes | None:
        table = self._open_tables().get(key[0])
        return None if table is None else table.get(key)

    def scan(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        tables = self._open_tables()
        chosen = tables.values() if not prefix else [tables.get(prefix[0], {})]
        keys = sorted(
            key
            for table in chosen
            for key in table
            if key.startswith(prefix) and (start is None or key >= start)
        )
        for key in keys:
            value = self.get(key)
            if value is not None:
                yield key, value

    def write(self, operations: Sequence[Operation], *, sync: bool) -> None:
        tables = self._open_tables()
        for key, value in operations:
            table = tables.get(key[0])
            if table is None:
                table = tables[key[0]] = {}
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    def close(self) -> None:
        self._tables = None
