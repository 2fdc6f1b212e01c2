"""A bank: accounts, and transfers that move money between them by messages.

Each transfer is an entity of its own, a small state machine: it asks the
source account to debit, and only once the debit is confirmed asks the target
to credit. Nothing is shared; every step is a message, and every message is
applied exactly once, so money is neither lost nor created, across crashes
and restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pachyderm import Entity, Outbox, register_value


@register_value(name="examples.bank.Debit")
@dataclass(frozen=True)
class Debit:
    """Ask an account to take ``amount`` out for ``transfer``."""

    amount: int
    transfer: Transfer


@register_value(name="examples.bank.Credit")
@dataclass(frozen=True)
class Credit:
    """Put ``amount`` into an account."""

    amount: int


@register_value(name="examples.bank.Outcome")
@dataclass(frozen=True)
class Outcome:
    """An account's answer to a debit."""

    ok: bool
    reason: str = ""


class Account(Entity[Debit | Credit, int]):
    """A balance that never goes below zero."""

    entity_name = "examples.bank.Account"

    def init(self) -> int:
        return 0

    def activate(self, message: Debit | Credit, state: int) -> tuple[Outbox, int]:
        match message:
            case Credit(amount):
                return [], state + amount
            case Debit(amount, transfer) if amount <= state:
                return [(transfer, Outcome(True))], state - amount
            case Debit(amount, transfer):
                return [(transfer, Outcome(False, f"balance {state} < {amount}"))], state
        raise ValueError(f"an account cannot handle {message!r}")


class Transfer(Entity[Any, dict[str, Any]]):
    """Moves money from one account to another: requested, then debited, then done."""

    entity_name = "examples.bank.Transfer"

    def init(self) -> dict[str, Any]:
        return {"status": "new"}

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        match message, state["status"]:
            case ("start", source, target, amount), "new":
                request = Debit(amount, self)
                status = {"status": "debiting", "target": target, "amount": amount}
                return [(source, request)], status
            case Outcome(True), "debiting":
                credit = Credit(state["amount"])
                return [(state["target"], credit)], {**state, "status": "done"}
            case Outcome(False, reason), "debiting":
                return [], {**state, "status": "refused", "reason": reason}
        raise ValueError(f"transfer in state {state['status']!r} cannot handle {message!r}")
