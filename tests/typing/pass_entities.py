"""Must type-check: handlers typed by Entity[M, S], outboxes of sends and timer commands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pachyderm import After, Cancel, Entity, EntityId, Outbox, after, cancel


@dataclass(frozen=True)
class Charge:
    amount: int


class Payments(Entity[Charge, list[int]]):
    entity_name = "shop.Payments"
    version = 2

    def init(self) -> list[int]:
        return []

    def activate(self, message: Charge, state: list[int]) -> tuple[Outbox, list[int]]:
        return [], [*state, message.amount]

    def upgrade(self, state: Any, from_version: int) -> list[int]:
        return [int(amount) for amount in state]


OrderMessage = Literal["place", "pay", "expire"]


class Order(Entity[OrderMessage, str]):
    def init(self) -> str:
        return "new"

    def activate(self, message: OrderMessage, state: str) -> tuple[Outbox, str]:
        if message == "place":
            # Timers and sends mix in one outbox.
            return [
                after(timedelta(minutes=30), self, "expire", name="expiry"),
                (Payments("shop"), Charge(100)),
            ], "placed"
        if message == "pay" and state == "placed":
            return [cancel("expiry")], "paid"
        if message == "expire" and state == "placed":
            return (), "expired"
        return [], state


class Batch(Entity[int, int]):
    """An outbox can be any iterable, such as a generator."""

    def activate(self, message: int, state: int) -> tuple[Outbox, int]:
        return self._sends(message), state + message

    def _sends(self, count: int) -> Iterator[tuple[Entity[Any, Any], Any] | After[Any]]:
        for number in range(count):
            yield Batch(number), 1
        yield after(1.5, self, 0)


class Forwarder(Entity[tuple[Entity[str, Any], str], int]):
    """A message may carry an address; the handler sends to it."""

    def activate(self, message: tuple[Entity[str, Any], str], state: int) -> tuple[Outbox, int]:
        target, text = message
        return [(target, text), after(0, target, text)], state + 1


order = Order("o-1")
# Ids are str, int, bytes or tuples of those; an address's id reads back as EntityId.
payments = Payments(("shop", 1, b"eu"))
key: EntityId = payments.id
timer: After[OrderMessage] = after(60, order, "expire", name="expiry")
stop: Cancel = cancel("expiry")
outbox: Outbox = [timer, stop, (order, "pay"), (payments, Charge(5))]
