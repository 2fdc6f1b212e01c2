"""Must not type-check: a simulated world's states used as another type."""

from __future__ import annotations

from pachyderm import Entity, Outbox
from simulation import Simulation


class Counter(Entity[str, int]):
    def init(self) -> int:
        return 0

    def activate(self, message: str, state: int) -> tuple[Outbox, int]:
        return [], state + 1


def runs() -> None:
    world = Simulation.run([(Counter("c"), "inc")])
    text: str = world.state_of(Counter("c"))  # E: assignment
    world.state_of(Counter("c")).upper()  # E: attr-defined
    world.state_of("c")  # E: arg-type
    print(text)


def misspelt() -> None:
    Simulation.explore([(Counter("c"), "inc")], max_world=3)  # E: arg-type
    Simulation.run([(Counter("c"), "inc")], max_step=3)  # E: arg-type
