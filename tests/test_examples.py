"""The example apps do what their docstrings claim, under every delivery order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from examples import paxos
from examples.bank import Transfer
from examples.calm import SetUnion, Tally, finals
from examples.orders import PAYMENT_WINDOW, Order, Paid
from examples.rock_paper_scissors import Game, Lobby, Player
from examples.transfer import ALICE, BOB, DEPOSIT, HastyTransfer, check, scenario
from examples.two_phase_commit import TransactionManager, consistent, envelopes, spec_states
from pachyderm import ManualClock
from simulation import Simulation
from tests.conftest import OpenEcosystem

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("rock-alice", "scissors-bob", "rock-alice wins"),
        ("paper-alice", "scissors-bob", "scissors-bob wins"),
        ("paper-alice", "paper-bob", "draw"),
    ],
)
def test_rock_paper_scissors_is_deterministic(first: str, second: str, outcome: str) -> None:
    """Under every delivery order the game ends one way: the right winner."""
    alice, bob = Player(first), Player(second)
    result = Simulation.explore([(Lobby("lobby"), ("start_game", alice, bob))])
    assert result.deterministic
    [world] = result.final_worlds
    assert world.state_of(Game(("lobby", 0)))["outcome"] == outcome
    assert world.state_of(alice) == {"games": 1, "last": outcome}


def test_hasty_transfer_bug_is_found_with_a_shortest_trace() -> None:
    """Exploration finds the order that creates money, in five steps, and it replays."""
    result = check(HastyTransfer("t"))
    [violation] = result.violations
    assert violation.property_name == "money_is_conserved"
    assert len(violation.trace) == 5
    replayed = Simulation.replay(scenario(HastyTransfer("t")), violation.trace)
    assert replayed.entities == violation.world.entities
    created = violation.world.state_of(ALICE) + violation.world.state_of(BOB)
    assert created == 2 * DEPOSIT  # the refused debit's credit went out anyway


def test_careful_transfer_conserves_money_in_every_order() -> None:
    """The transfer that waits for the debit passes in every reachable final world."""
    result = check(Transfer("t"))
    assert result.ok
    assert len(result.final_worlds) == 2  # the deposit arrives in time, or it does not


def test_set_union_is_confluent_and_a_counter_is_not() -> None:
    """Reordered and duplicated, a set union ends one way; a counter ends three ways."""
    parts = [frozenset({"hello"}), frozenset({"world"}), frozenset({"!"})]
    [union] = finals(SetUnion("s"), parts, duplicates=2)
    assert union.state_of(SetUnion("s")) == frozenset({"hello", "world", "!"})
    counts = sorted(w.state_of(Tally("t")) for w in finals(Tally("t"), parts, duplicates=2))
    assert counts == [3, 4, 5]


async def test_an_order_expires_unless_paid_in_time(open_ecosystem: OpenEcosystem) -> None:
    """Paid within the window, an order is paid; paid after it expired, a refund is due."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as shop:
        for order in (Order("prompt"), Order("late"), Order("never")):
            await shop.send_sync(order, ("place", 30))
        await shop.send_sync(Order("prompt"), Paid(30))
        clock.advance(PAYMENT_WINDOW - 1)
        await shop.settle()
        assert (await shop.state_of(Order("late"))).stage == "awaiting payment"
        clock.advance(1)
        await shop.settle()
        await shop.send_sync(Order("late"), Paid(30))
        stages = [(await shop.state_of(Order(n))).stage for n in ("prompt", "late", "never")]
        assert stages == ["paid", "refund due", "expired"]
        assert shop.runtime.statistics["timers_fired"] == 2  # the paid order's was cancelled


def test_a_payment_racing_the_expiry_ends_one_of_two_ways() -> None:
    """Explored, a payment sent right after the order meets the timer in both orders."""
    envelopes = [(Order("o"), ("place", 30)), (Order("o"), Paid(30))]
    result = Simulation.explore(envelopes, network="fifo")
    outcomes = sorted(world.state_of(Order("o")).stage for world in result.final_worlds)
    assert outcomes == ["paid", "refund due"]
    assert result.unique_states == 5


def two_phase_spec(rms: int) -> set[tuple[Any, ...]]:
    """Every reachable state of Gray and Lamport's TwoPhase spec, by brute force.

    Written from the spec's next-state relation, independently of the entities:
    (rmState, tmState, tmPrepared, msgs) with msgs a set that only grows.
    """
    start: tuple[tuple[str, ...], str, frozenset[int], frozenset[Any]]
    start = (("working",) * rms, "init", frozenset(), frozenset())
    seen = {start}
    todo = [start]
    while todo:
        rm_state, tm_state, prepared, msgs = todo.pop()
        after = []
        if tm_state == "init" and len(prepared) == rms:
            after.append((rm_state, "committed", prepared, msgs | {"Commit"}))
        if tm_state == "init":
            after.append((rm_state, "aborted", prepared, msgs | {"Abort"}))
        for rm in range(rms):

            def now(phase: str, rm: int = rm, rms: tuple[str, ...] = rm_state) -> tuple[str, ...]:
                return (*rms[:rm], phase, *rms[rm + 1 :])

            if tm_state == "init" and ("Prepared", rm) in msgs:
                after.append((rm_state, tm_state, prepared | {rm}, msgs))
            if rm_state[rm] == "working":
                after.append((now("prepared"), tm_state, prepared, msgs | {("Prepared", rm)}))
                after.append((now("aborted"), tm_state, prepared, msgs))
            if "Commit" in msgs:
                after.append((now("committed"), tm_state, prepared, msgs))
            if "Abort" in msgs:
                after.append((now("aborted"), tm_state, prepared, msgs))
        for state in after:
            if state not in seen:
                seen.add(state)
                todo.append(state)
    return seen


@pytest.mark.parametrize(("rms", "published"), [(1, None), (2, None), (3, 288)])
def test_two_phase_commit_visits_exactly_the_states_of_the_spec(
    rms: int, published: int | None
) -> None:
    """Entities exploring every order reach exactly the spec's states (288 for 3 RMs, the
    count TLC and Stateright publish), and no world has one RM committed, one aborted."""
    states, result = spec_states(rms)
    assert result.complete
    assert result.ok
    assert states == two_phase_spec(rms)
    if published is not None:
        assert len(states) == published


def test_two_phase_commit_finds_a_manager_that_commits_too_early() -> None:
    """A TM that commits on the first Prepared is caught, with a replayable trace."""

    class HastyManager(TransactionManager):
        entity_name = "tests.examples.HastyManager"

        def activate(self, message: Any, state: Any) -> Any:
            if isinstance(message, tuple) and state[0] == "init":
                state = (state[0], state[1] | {message[1]} | set(range(self.participants)))
            return super().activate(message, state)

    choices = envelopes(3, HastyManager)
    result = Simulation.explore(choices, invariants=[consistent], search="breadth")
    assert not result.ok
    violation = result.violations[0]
    assert not consistent(Simulation.replay(choices, violation.trace))
    decisions = [str(action) for action in violation.trace if "HastyManager" in str(action)]
    assert any(text.endswith("'commit'") for text in decisions), violation


@pytest.mark.parametrize(
    "module", ["rock_paper_scissors", "transfer", "calm", "orders", "two_phase_commit", "paxos"]
)
def test_examples_run_as_scripts(module: str) -> None:
    """python -m examples.<name> runs to the end."""
    result = subprocess.run(
        [sys.executable, "-m", f"examples.{module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout


def test_paxos_register_agrees_in_every_order() -> None:
    """Single-decree Paxos, 3 servers, 2 clients: in every reachable world at most one value
    is decided and clients read only it; in some final worlds a client has read it (only
    the client whose proposal was chosen is told its put succeeded, and then reads)."""
    result = paxos.check()
    assert result.complete
    assert result.ok, result
    read_in = [
        world
        for world in result.final_worlds
        if any(world.state_of(paxos.Client(n))["phase"] == "done" for n in range(2))
    ]
    assert read_in
    for world in read_in:
        reads = {world.state_of(paxos.Client(n))["read"] for n in range(2)} - {None}
        assert reads == paxos.decided_values(world)


def test_paxos_with_a_leader_that_forgets_its_own_acceptance_is_caught() -> None:
    """A leader going on after one peer (as if it counted itself, but forgetting the value it
    had itself accepted) decides a second value: found in 12 steps, and the trace replays."""

    class Hasty(paxos.Server):
        entity_name = "tests.examples.HastyPaxos"
        quorum = 1

    result = paxos.check(server=Hasty, search="breadth")
    assert not result.ok
    violation = result.violations[0]
    assert len(violation.trace) == 12
    world = Simulation.replay(paxos.start(server=Hasty), violation.trace)
    assert len(paxos.decided_values(world)) == 2
