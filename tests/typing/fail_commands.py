"""Must not type-check: timers and outboxes that do not fit their entities."""

from __future__ import annotations

from datetime import timedelta

from pachyderm import After, Entity, Outbox, after, cancel


class Order(Entity[str, str]):
    def init(self) -> str:
        return "open"

    def activate(self, message: str, state: str) -> tuple[Outbox, str]:
        match message:
            case "place":
                return [after(timedelta(hours=1), self, "expire", name="expiry")], "placed"
            case "pay":
                return [cancel("expiry")], "paid"
            case "wrong message":
                return [after(60, self, 3600)], state  # E: misc
            case "wrong address":
                return [after(60, Clock("c"), "expire")], state  # E: misc
            case "bad delay":
                return [after("1h", self, "expire")], state  # E: arg-type
            case "bad name":
                return [after(60, self, "expire", name=1)], state  # E: arg-type
            case "cancel by timer":
                return [cancel(after(60, self, "expire"))], state  # E: arg-type
            case "not a command":
                return ["expire"], state  # E: list-item
            case "address not an entity":
                return [("o-1", "expire")], state  # E: list-item
        return [], state


class Clock(Entity[int, int]):
    def activate(self, message: int, state: int) -> tuple[Outbox, int]:
        return [], message


order = Order("o-1")


def timers() -> None:
    after(1.0, order, 3600)  # E: misc
    after(1.0, "o-1", "expire")  # E: arg-type
    after(1.0, Order, "expire")  # E: arg-type
    ticks: After[int] = after(1.0, order, "expire")  # E: arg-type, arg-type
    timer: After[str] = after(1.0, Clock("c"), 1)  # E: arg-type, arg-type
    cancel()  # E: call-arg
    cancel(None)  # E: arg-type
    print(ticks, timer)
