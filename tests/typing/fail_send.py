"""Must not type-check: sending what an entity does not take, using a state as another type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ecosystems import InMemory, LocalDisk
from pachyderm import Entity, Outbox


@dataclass(frozen=True)
class Deposit:
    amount: int


@dataclass(frozen=True)
class Withdraw:
    amount: int


class Account(Entity[Deposit, int]):
    def init(self) -> int:
        return 0

    def activate(self, message: Deposit, state: int) -> tuple[Outbox, int]:
        return [], state + message.amount


class Switch(Entity[Literal["on", "off"], bool]):
    def init(self) -> bool:
        return False

    def activate(self, message: Literal["on", "off"], state: bool) -> tuple[Outbox, bool]:
        return [], message == "on"


account = Account("alice")


def shell_face() -> None:
    # A message the entity does not take. mypy says: Cannot infer value of type
    # parameter "MessageT" [misc]: the address and the message disagree on it.
    LocalDisk.send_sync(account, Withdraw(1))  # E: misc
    LocalDisk.send(account, "deposit 1")  # E: misc
    InMemory.send_sync(account, None)  # E: misc
    LocalDisk.send_sync(Switch("s"), "of")  # E: misc
    # The state is an int, not a str.
    text: str = LocalDisk.send_sync(account, Deposit(1))  # E: assignment
    also: str = InMemory.state_of(account)  # E: assignment
    # Not an address: a str, or the class rather than an instance.
    LocalDisk.send_sync("alice", Deposit(1))  # E: arg-type
    LocalDisk.send(Account, Deposit(1))  # E: arg-type
    LocalDisk.state_of("alice")  # E: arg-type
    # The third argument is an ecosystem from participate(), not its id.
    LocalDisk.send_sync(account, Deposit(1), "tests")  # E: arg-type
    # An address is made from a valid id.
    Account(1.5)  # E: arg-type
    print(text, also)


async def trio_face() -> None:
    async with LocalDisk.open("data/") as eco:
        await eco.send_sync(account, Withdraw(1))  # E: misc
        await eco.send(account, 1)  # E: misc
        # Through await, the annotation is the context: mypy blames the address.
        text: str = await eco.send_sync(account, Deposit(1))  # E: arg-type
        also: str = await eco.state_of(account)  # E: arg-type
        await eco.state_of(Account)  # E: arg-type
        # Forgetting await: the message is never sent.
        eco.send(account, Deposit(1))  # E: unused-coroutine
        eco.send_sync(account, Deposit(1))  # E: unused-coroutine
        # The trio face takes no ecosystem argument: the ecosystem is eco itself.
        await eco.send_sync(account, Deposit(1), eco)  # E: call-arg
        print(text, also)
