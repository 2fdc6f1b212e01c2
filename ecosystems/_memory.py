"""The store behind ``InMemory``: the same ordered key-value semantics, in a dict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pachyderm._store import Operation
from pachyderm.errors import EcosystemClosedError

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keys and values in a dict; a scan sorts the matching keys (scans are rare)."""

    blocking = False  # nothing to wait for: writes are applied in the runtime's thread

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] | None = {}

    def _open_data(self) -> dict[bytes, bytes]:
        if self._data is None:
            raise EcosystemClosedError("this InMemory store is closed; its data is gone")
        return self._data

    def get(self, key: bytes) -> bytes | None:
        return self._open_data().get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        data = self._open_data()
        keys = sorted(k for k in data if k.startswith(prefix))
        for key in keys:
            value = data.get(key)
            if value is not None:
                yield key, value

    def write(self, operations: Sequence[Operation], *, sync: bool) -> None:
        data = self._open_data()
        for key, value in operations:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def close(self) -> None:
        self._data = None
