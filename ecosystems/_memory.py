"""The store behind ``InMemory``: the same ordered key-value semantics, in dicts."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from pachyderm._store import Operation
from pachyderm.errors import EcosystemClosedError

__all__ = ["MemoryStore"]

_STATES = ord("S")


class MemoryStore:
    """Keys and values in one dict per table tag (a key's first byte).

    Writes happen outside the runtime's lock, while others read: a lock of its
    own makes each batch atomic to scans, as LevelDB's are. The tables that
    are scanned (inboxes, timers, dead letters, meta) also keep their keys in
    order, so a scan is a bisection, not a sort; entity states, the largest
    table, are only ever read one key at a time.
    """

    blocking = False  # nothing to wait for: writes are applied in the caller's thread
    volatile = True  # a message in the runtime's memory is as durable as one in these dicts

    def __init__(self) -> None:
        self._tables: dict[int, dict[bytes, bytes]] = {}
        self._ordered: dict[int, list[bytes]] = {}  # each scanned table's keys, in order
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise EcosystemClosedError("this InMemory store is closed; its data is gone")

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        table = self._tables.get(key[0])
        return None if table is None else table.get(key)  # one dict lookup: atomic

    def scan(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        low = prefix if start is None else max(prefix, start)
        with self._lock:
            self._check_open()
            if prefix:
                found = self._range(prefix[0], prefix, low)
            else:
                tables = sorted(self._tables)
                found = [item for tag in tables for item in self._range(tag, b"", low)]
        yield from found

    def _range(self, tag: int, prefix: bytes, low: bytes) -> list[tuple[bytes, bytes]]:
        """The table's items whose key starts with ``prefix``, from ``low`` on (lock held)."""
        table = self._tables.get(tag)
        if not table:
            return []
        ordered = self._ordered.get(tag)
        if ordered is None:  # entity states: never scanned but to see if the store is empty
            keys = sorted(key for key in table if key >= low and key.startswith(prefix))
        else:
            keys = []
            for key in ordered[bisect.bisect_left(ordered, low) :]:
                if not key.startswith(prefix):
                    break
                keys.append(key)
        return [(key, table[key]) for key in keys]

    def write(self, operations: Sequence[Operation], *, sync: bool) -> None:
        tables = self._tables
        with self._lock:
            self._check_open()
            for key, value in operations:
                tag = key[0]
                table = tables.get(tag)
                if table is None:
                    table = tables[tag] = {}
                    if tag != _STATES:
                        self._ordered[tag] = []
                ordered = self._ordered.get(tag)
                if value is None:
                    if table.pop(key, None) is not None and ordered is not None:
                        del ordered[bisect.bisect_left(ordered, key)]
                else:
                    if ordered is not None and key not in table:
                        bisect.insort(ordered, key)
                    table[key] = value

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._tables = {}
            self._ordered = {}
