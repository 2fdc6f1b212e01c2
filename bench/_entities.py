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


class Busy(Tally):
    """Counts its messages after some work: about 0.2 ms of Python on this machine, what a
    handler that validates and reshapes its data may take."""

    entity_name = "bench.Busy"

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        total = 0
        for step in range(3_000):
            total += step
        return [], state + (total > 0)


class Bits(Entity[int, int]):
    """Sets the bit it is sent: order-insensitive, so n messages make 2**n worlds."""

    entity_name = "bench.Bits"

    def init(self) -> int:
        return 0

    def activate(self, message: int, state: int) -> tuple[Outbox, int]:
        return [], state | message


class Hop(Entity[tuple[int, int], int]):
    """Passes a token round a ring of four, ``hops`` more times: what is in flight stays put."""

    entity_name = "bench.Hop"

    def init(self) -> int:
        return 0

    def activate(self, message: tuple[int, int], state: int) -> tuple[Outbox, int]:
        token, hops = message
        position = self.id
        assert isinstance(position, int)
        onward = [(Hop((position + 1) % 4), (token, hops - 1))] if hops else []
        return onward, state + 1
