"""Must not type-check: using a follower's states as another type than the entity's state."""

from __future__ import annotations

from ecosystems import LocalDisk
from pachyderm import Entity, Follower, Outbox, ShellFollower


class Log(Entity[str, list[str]]):
    def init(self) -> list[str]:
        return []

    def activate(self, message: str, state: list[str]) -> tuple[Outbox, list[str]]:
        return [], [*state, message]


log = Log("events")


def shell_followers() -> None:
    # The annotation is the context: mypy blames the address, whose state is list[str].
    wrong: ShellFollower[int] = LocalDisk.follow(log)  # E: arg-type
    trio_one: Follower[list[str]] = LocalDisk.follow(log)  # E: assignment
    with LocalDisk.follow(log) as updates:
        count: int = updates.state  # E: assignment
        for _, state in updates:
            state.add("x")  # E: attr-defined
        _, latest = updates.get()
        first: int = latest[0]  # E: assignment
        for address, _ in updates.flush():
            other: Entity[str, int] = address  # E: assignment
        updates.get(timeout="soon")  # E: arg-type
        print(wrong, trio_one, count, first, other)
    LocalDisk.follow("events")  # E: arg-type


async def trio_followers() -> None:
    async with LocalDisk.open("data/") as eco, eco.follow(log) as updates:
        count: int = updates.state  # E: assignment
        async for _, state in updates:
            total: int = state  # E: assignment
            print(count, total)
        # A trio follower is iterated with async for.
        for _ in updates:  # E: attr-defined
            pass
        updates.get()  # E: attr-defined
