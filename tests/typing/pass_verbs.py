"""Must type-check: the verbs carry an entity's message and state types to the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import trio

from ecosystems import InMemory, LocalDisk
from pachyderm import DeadLetter, Ecosystem, Entity, Outbox, ShellEcosystem


class Counter(Entity[Literal["inc", "dec"], int]):
    def init(self) -> int:
        return 0

    def activate(self, message: Literal["inc", "dec"], state: int) -> tuple[Outbox, int]:
        return [], state + 1 if message == "inc" else state - 1


@dataclass(frozen=True)
class Deposit:
    amount: int


@dataclass(frozen=True)
class Withdraw:
    amount: int


@dataclass(frozen=True)
class Balance:
    total: int
    history: tuple[int, ...] = ()


class Account(Entity[Deposit | Withdraw, Balance]):
    def init(self) -> Balance:
        return Balance(0)

    def activate(self, message: Deposit | Withdraw, state: Balance) -> tuple[Outbox, Balance]:
        change = message.amount if isinstance(message, Deposit) else -message.amount
        return [], Balance(state.total + change, (*state.history, change))


class Ping(Entity[str, None]):
    """No init(): the state is None until activate returns another."""

    def activate(self, message: str, state: None) -> tuple[Outbox, None]:
        return [], None


counter = Counter("c")
account = Account(("alice", 1))


def shell_face() -> None:
    """The blocking verbs return the entity's state type."""
    count: int = LocalDisk.send_sync(counter, "inc")
    balance: Balance = InMemory.send_sync(account, Deposit(10))
    total: int = LocalDisk.send_sync(account, Withdraw(3)).total
    nothing: None = LocalDisk.send_sync(Ping("p"), "hello")
    LocalDisk.send(counter, "dec")
    current: int = LocalDisk.state_of(counter)
    history: tuple[int, ...] = InMemory.state_of(account).history
    LocalDisk.settle()
    letters: list[DeadLetter] = LocalDisk.dead_letters()
    LocalDisk.redeliver(letters[0])
    LocalDisk.discard(letters[-1].id)
    print(count, balance, total, nothing, current, history)


class Log(Entity[str, list[str]]):
    def activate(self, message: str, state: list[str]) -> tuple[Outbox, list[str]]:
        return [], [*state, message]


def states_in_wider_contexts() -> None:
    """A state is usable where a supertype of it is expected, straight from the verb."""
    ordered: list[str] = sorted(LocalDisk.send_sync(Log("l"), "entry"))
    entries: tuple[str, ...] = tuple(InMemory.state_of(Log("l")))
    print(ordered, entries)


def shell_ecosystems() -> None:
    """A participating ecosystem has the same verbs, with the same types."""
    eco: ShellEcosystem = LocalDisk.participate("tests")
    count: int = eco.send_sync(counter, "inc")
    eco.send(account, Deposit(1))
    balance: Balance = eco.state_of(account)
    also: int = LocalDisk.send_sync(counter, "dec", eco)
    again: int = LocalDisk.connect("data/").send_sync(counter, "inc")
    print(count, balance, also, again)


def shell_followers() -> None:
    """A shell follower yields ``(address, state)`` with the followed entity's state type."""
    with LocalDisk.follow(account) as updates:
        now: Balance = updates.state
        followed: Entity[Any, Balance] = updates.address
        for address, state in updates.flush():
            print(address, state.total)
        address, latest = updates.get(timeout=1.0)
        history: tuple[int, ...] = latest.history
        for _, state in updates:
            total: int = state.total
            print(now, followed, address, history, total)


async def trio_face(location: str) -> None:
    """The trio face's verbs are awaited and return the same types."""
    async with LocalDisk.open(location) as eco:
        count: int = await eco.send_sync(counter, "inc")
        await eco.send(account, Deposit(5))
        balance: Balance = await eco.state_of(account)
        other: Ecosystem = eco.participate("other")
        total: int = (await other.send_sync(account, Withdraw(1))).total
        async with eco.follow(counter) as updates:
            now: int = updates.state
            async for address, state in updates:
                later: int = state
                print(address, now, later)
        await eco.settle()
        for letter in await eco.dead_letters():
            await eco.redeliver(letter)
        print(count, balance, total)


async def in_a_nursery() -> None:
    """Sends can be started as tasks; trio checks their arguments too."""
    async with InMemory.open() as eco, trio.open_nursery() as nursery:
        nursery.start_soon(eco.send, counter, "inc")
        nursery.start_soon(eco.send_sync, account, Deposit(1))
