"""Entities the benchmarks drive (module-level so that child processes share their names)."""

from __future__ import annotations

from typing import Any

from pachyderm import Entity, Outbox


class Tally(Entity[Any, int]):
    """Counts its messages."""

    entity_name = "bench.Tally"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [], state + 1
