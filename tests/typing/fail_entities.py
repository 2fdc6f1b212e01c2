"""Must not type-check: handlers that do not match their entity's message and state types."""

from __future__ import annotations

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
