"""Must type-check: a simulated world's state_of returns the entity's state type."""

from __future__ import annotations

from pachyderm import Entity, Outbox
from simulation import Simulation, World


class Counter(Entity[str, int]):
    def init(self) -> int:
        return 0

    def activate(self, message: str, state: int) -> tuple[Outbox, int]:
        return [], state + 1


counter = Counter("c")


def runs() -> None:
    world: World = Simulation.run([(counter, "inc"), (counter, "inc")])
    count: int = world.state_of(counter)
    finals: list[int] = [w.state_of(counter) for w in Simulation.exhaust([(counter, "a")])]
    print(count, finals)


def counted_twice(world: World) -> bool:
    """An invariant or final check takes a world and returns a bool."""
    return world.state_of(counter) <= 2


exploration = Simulation.explore([(counter, "inc")], final=[counted_twice])
