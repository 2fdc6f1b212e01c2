"""A bank transfer with an ordering bug that exploration finds, and the version that is right.

``HastyTransfer`` sends the debit and the credit at once. If the debit
arrives before the deposit that would cover it, the source refuses it, but
the credit has already gone out: money is created. Only some delivery orders
show it; ``Simulation.explore`` finds the shortest one. ``examples.bank.Transfer``
waits for the debit to be confirmed before crediting, and passes.
"""

from __future__ import annotations

from typing import Any

from examples.bank import Account, Credit, Debit, Outcome
from pachyderm import Entity, Outbox
from simulation import Exploration, Simulation, World


class HastyTransfer(Entity[Any, str]):
    """Debits and credits at the same time: the bug."""

    entity_name = "examples.transfer.HastyTransfer"

    def init(self) -> str:
        return "new"

    def activate(self, message: Any, state: str) -> tuple[Outbox, str]:
        match message:
            case ("start", Account() as source, Account() as target, int(amount)):
                return [(source, Debit(amount, self)), (target, Credit(amount))], "sent"  # type: ignore[arg-type]
            case Outcome(ok):
                return [], "done" if ok else "refused"
        raise ValueError(f"cannot handle {message!r}")


ALICE, BOB = Account("alice"), Account("bob")
DEPOSIT = 50


def money_is_conserved(world: World) -> bool:
    """Once all is delivered, the accounts hold exactly what was deposited."""
    return bool(world.state_of(ALICE) + world.state_of(BOB) == DEPOSIT)


def scenario(transfer: Entity[Any, Any]) -> list[tuple[Any, Any]]:
    """A deposit to alice, and at the same time a transfer of it to bob."""
    return [(ALICE, Credit(DEPOSIT)), (transfer, ("start", ALICE, BOB, DEPOSIT))]


def check(transfer: Entity[Any, Any]) -> Exploration:
    """Every delivery order, breadth-first so a violation comes with its shortest trace."""
    return Simulation.explore(scenario(transfer), final=[money_is_conserved], search="breadth")


if __name__ == "__main__":
    from examples.bank import Transfer

    hasty = check(HastyTransfer("t"))
    print(hasty.violations[0] if hasty.violations else "hasty: no violation")
    print(hasty.violations[0].diagram if hasty.violations else "")
    careful = check(Transfer("t"))
    print(f"careful: {len(careful.violations)} violations in {careful.unique_states} worlds")
