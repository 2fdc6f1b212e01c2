"""An order that expires unless it is paid in time: a durable timer racing a payment.

Placing an order sets a named timer, ``expiry``; paying cancels it. If the
timer fires first, the order expires, and a payment that arrives after that is
owed back. The timer is stored with the activation that set it, so an order
placed before a crash still expires after the restart.

    python -m examples.orders
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pachyderm import Entity, Outbox, after, cancel, register_value

PAYMENT_WINDOW = 15 * 60
"""Seconds an order waits for its payment."""


@register_value(name="examples.orders.Paid")
@dataclass(frozen=True)
class Paid:
    """A payment for an order."""

    amount: int


@register_value(name="examples.orders.Status")
@dataclass(frozen=True)
class Status:
    """Where an order stands."""

    stage: str  # "new", "awaiting payment", "paid", "expired" or "refund due"
    amount: int = 0


class Order(Entity[Any, Status]):
    """Placed, then paid within PAYMENT_WINDOW seconds, or expired."""

    entity_name = "examples.orders.Order"

    def init(self) -> Status:
        return Status("new")

    def activate(self, message: Any, state: Status) -> tuple[Outbox, Status]:
        match message, state.stage:
            case ("place", int(amount)), "new":
                expiry = after(PAYMENT_WINDOW, self, "expire", name="expiry")
                return [expiry], Status("awaiting payment", amount)
            case Paid(amount), "awaiting payment" if amount == state.amount:
                return [cancel("expiry")], Status("paid", amount)
            case "expire", "awaiting payment":
                return [], Status("expired", state.amount)
            case Paid(amount), "expired":
                return [], Status("refund due", amount)
        raise ValueError(f"an order that is {state.stage!r} cannot handle {message!r}")


def main() -> None:
    import trio

    from ecosystems import InMemory
    from pachyderm import ManualClock
    from simulation import Simulation

    async def live() -> None:
        clock = ManualClock()
        async with InMemory.open(clock=clock) as shop:
            for order in (Order("prompt"), Order("late")):
                await shop.send_sync(order, ("place", 30))
            await shop.send_sync(Order("prompt"), Paid(30))
            clock.advance(PAYMENT_WINDOW)  # a quarter of an hour passes at once
            await shop.settle()
            await shop.send_sync(Order("late"), Paid(30))
            for order in (Order("prompt"), Order("late")):
                print(f"live: {order!r} is {(await shop.state_of(order)).stage}")

    trio.run(live)
    race = Simulation.explore([(Order("o"), ("place", 30)), (Order("o"), Paid(30))], network="fifo")
    outcomes = sorted(world.state_of(Order("o")).stage for world in race.final_worlds)
    print(f"simulated: payment racing the expiry ends {' or '.join(outcomes)}")


if __name__ == "__main__":
    main()
