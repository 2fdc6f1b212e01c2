"""Must not type-check: handlers that do not match their entity's message and state types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pachyderm import Entity, Outbox


class Counter(Entity[str, int]):
    def init(self) -> str:  # E: override
        return "zero"

    def activate(self, message: int, state: int) -> tuple[Outbox, int]:  # E: override
        return [], state + 1


class Greeter(Entity[str, list[str]]):
    def init(self) -> list[str]:
        return []

    def activate(self, message: str, state: list[str]) -> tuple[Outbox, list[str]]:
        if message == "reset":
            return [], None  # E: return-value
        if message == "count":
            return [], len(state)  # E: return-value
        if message == "forget":
            return []  # E: return-value
        return [], [*state, message]


class Sender(Entity[str, None]):
    def activate(self, message: str, state: None) -> Outbox:  # E: override
        return []


class Mismatched(Entity[str, int]):
    """activate() takes and returns the state type the entity declares."""

    def activate(self, message: str, state: str) -> tuple[Outbox, str]:  # E: override, override
        return [], state


class Inbox(Entity[str | None, int]):
    def activate(self, message: str | None, state: int) -> tuple[Outbox, int]:
        return [], state + 1


@dataclass(frozen=True)
class Reply:
    to: Entity[str, Any]


def addresses() -> None:
    """An address typed by its messages: Entity[M, S] is invariant in M."""
    Reply(to=Greeter("g"))
    wider: Entity[str | int, Any] = Greeter("g")  # E: assignment
    Reply(to=Sender)  # E: arg-type
    # Inbox could take a str too, but its message type is not exactly str. (A contravariant M
    # would allow this, and keep send_sync from inferring Literal message types.)
    Reply(to=Inbox("i"))  # E: arg-type
    print(wider)
