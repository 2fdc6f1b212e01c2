"""Two-phase commit, checked in every order: the model of Gray and Lamport's TwoPhase spec.

A transaction manager (TM) and resource managers (RMs). Each RM either
prepares (and tells the TM) or chooses to abort on its own; the TM commits
once every RM has prepared, or aborts at any time before that; RMs obey
the decision. No two RMs may end up one committed and one aborted.

The spec's choices become races between messages: each RM is sent both
``("prepare", tm)`` and ``"choose_abort"`` and acts on whichever arrives first;
the TM is sent ``"abort"`` and, once all have prepared, ``"commit"`` by
itself, so either may come first. Exploring every delivery order visits every
state of the spec. :func:`spec_states` projects each world onto the spec's
variables (rmState, tmState, tmPrepared, msgs) so the count can be compared
with TLC's and Stateright's: 288 for three RMs.

    python examples/two_phase_commit.py [RMS]
"""

from __future__ import annotations

import sys
from typing import Any, cast

from pachyderm import Entity, Outbox
from simulation import Exploration, Simulation, World

RmState = tuple[str, bool]  # ("working" | "prepared" | "committed" | "aborted", sent Prepared)
TmState = tuple[str, frozenset[int]]  # ("init" | "committed" | "aborted", RMs prepared)
_DECISIONS = {"commit": "committed", "abort": "aborted"}


class ResourceManager(Entity[Any, RmState]):
    """One participant: prepares or aborts on its own, then obeys the TM's decision."""

    entity_name = "examples.two_phase_commit.ResourceManager"

    @property
    def number(self) -> int:
        """Which participant this is: its id is (the transaction's id, number)."""
        _, number = cast(tuple[Any, int], self.id)
        return number

    def init(self) -> RmState:
        return ("working", False)

    def activate(self, message: Any, state: RmState) -> tuple[Outbox, RmState]:
        phase, sent = state
        if isinstance(message, tuple) and phase == "working":  # ("prepare", the TM's address)
            return [(message[1], ("prepared", self.number))], ("prepared", True)
        if message == "choose_abort" and phase == "working":
            return [], ("aborted", sent)
        if message in _DECISIONS:  # the TM's decision
            return [], (_DECISIONS[message], sent)
        return [], state  # a choice that came too late


class TransactionManager(Entity[Any, TmState]):
    """Collects Prepared messages; commits when all are in, or aborts before that."""

    entity_name = "examples.two_phase_commit.TransactionManager"

    @property
    def participants(self) -> int:
        """How many RMs take part: its id is ("tx", participants)."""
        _, rms = cast(tuple[str, int], self.id)
        return rms

    def init(self) -> TmState:
        return ("init", frozenset())

    def activate(self, message: Any, state: TmState) -> tuple[Outbox, TmState]:
        phase, prepared = state
        if phase != "init":
            return [], state  # decided: nothing changes it
        rms = self.participants
        if message == "abort":
            return [(ResourceManager((self.id, n)), "abort") for n in range(rms)], (
                "aborted",
                prepared,
            )
        if message == "commit":  # sent to itself once all had prepared
            return [(ResourceManager((self.id, n)), "commit") for n in range(rms)], (
                "committed",
                prepared,
            )
        _, number = message  # ("prepared", n)
        now = prepared | {number}
        outbox: Outbox = [(self, "commit")] if len(now) == rms else []
        return outbox, (phase, now)


def transaction(
    rms: int, manager: type[TransactionManager] = TransactionManager
) -> tuple[TransactionManager, list[ResourceManager]]:
    """The TM and RMs of one transaction with ``rms`` participants."""
    tm = manager(("tx", rms))
    return tm, [ResourceManager((tm.id, n)) for n in range(rms)]


def envelopes(
    rms: int, manager: type[TransactionManager] = TransactionManager
) -> list[tuple[Any, Any]]:
    """The choices, as messages: each RM may prepare or abort, the TM may abort."""
    tm, participants = transaction(rms, manager)
    choices: list[tuple[Any, Any]] = [(tm, "abort")]
    for rm in participants:
        choices += [(rm, ("prepare", tm)), (rm, "choose_abort")]
    return choices


def consistent(world: World) -> bool:
    """Never one RM committed and another aborted."""
    phases = {state[0] for address, state in world.entities.items() if _is_rm(address)}
    return not {"committed", "aborted"} <= phases


def spec_state(world: World, rms: int) -> tuple[Any, ...]:
    """The world as the spec's variables: rmState, tmState, tmPrepared, msgs."""
    tm, participants = transaction(rms)
    rm_states = [world.entities.get(rm, ("working", False)) for rm in participants]
    tm_phase, tm_prepared = world.entities.get(tm, ("init", frozenset()))
    msgs = frozenset(
        {("Prepared", n) for n, (_, sent) in enumerate(rm_states) if sent}
        | ({"Commit"} if tm_phase == "committed" else set())
        | ({"Abort"} if tm_phase == "aborted" else set())
    )
    return (tuple(phase for phase, _ in rm_states), tm_phase, tm_prepared, msgs)


def spec_states(rms: int) -> tuple[set[tuple[Any, ...]], Exploration]:
    """Every reachable state of the spec, from the worlds of a full exploration."""
    seen: set[tuple[Any, ...]] = set()

    def record(world: World) -> bool:
        seen.add(spec_state(world, rms))
        return consistent(world)

    result = Simulation.explore(envelopes(rms), invariants=[record])
    return seen, result


def _is_rm(address: Entity[Any, Any]) -> bool:
    return isinstance(address, ResourceManager)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    states, result = spec_states(count)
    print(f"two-phase commit, {count} RMs: {result!r}")
    print(f"  states of the spec's variables: {len(states):,}; consistent: {result.ok}")
