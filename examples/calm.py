"""CALM in practice: a monotone set union is confluent; a counter is not.

Consistency As Logical Monotonicity: a program whose state only grows by
union ends in the same state whatever order its messages arrive in, and even
if some arrive twice. A counter, which is not monotone in that sense, counts
a duplicated message twice.
"""

from __future__ import annotations

from typing import Any

from pachyderm import Entity, Outbox
from simulation import Simulation, World


class SetUnion(Entity[frozenset[Any], frozenset[Any]]):
    """Its state is the union of every set it was sent."""

    entity_name = "examples.calm.SetUnion"

    def init(self) -> frozenset[Any]:
        return frozenset()

    def activate(
        self, message: frozenset[Any], state: frozenset[Any]
    ) -> tuple[Outbox, frozenset[Any]]:
        return [], state | message


class Tally(Entity[Any, int]):
    """Counts the messages it receives."""

    entity_name = "examples.calm.Tally"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [], state + 1


def finals(entity: Entity[Any, Any], messages: list[Any], duplicates: int) -> list[World]:
    """The distinct final worlds over every order, with up to ``duplicates`` redeliveries."""
    return Simulation.exhaust([(entity, m) for m in messages], duplicates=duplicates)


if __name__ == "__main__":
    parts = [frozenset({"hello"}), frozenset({"world"}), frozenset({"!"})]
    print(
        "set union, reordered and duplicated:", len(finals(SetUnion("s"), parts, 2)), "final world"
    )
    print("counter, reordered and duplicated:", len(finals(Tally("t"), parts, 2)), "final worlds")
