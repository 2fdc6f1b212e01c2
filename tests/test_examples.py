"""The example apps do what their docstrings claim, under every delivery order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples.bank import Transfer
from examples.calm import SetUnion, Tally, finals
from examples.orders import PAYMENT_WINDOW, Order, Paid
from examples.rock_paper_scissors import Game, Lobby, Player
from examples.transfer import ALICE, BOB, DEPOSIT, HastyTransfer, check, scenario
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


@pytest.mark.parametrize("module", ["rock_paper_scissors", "transfer", "calm", "orders"])
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
