"""Incremental fingerprints, and a search's memory of activations.

A world's fingerprint is the sum of its parts' digests, worked out from its
parent's in a step; these tests hold every such sum to the one made afresh
from the parts, and every shortcut to the world the step really makes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pachyderm import Entity, Outbox, after
from simulation import Simulation, World
from simulation._network import initial_world
from simulation._step import (
    Action,
    Activations,
    actions_after,
    enabled,
    make_planned,
    plan_delivery,
    step,
)
from simulation._world import envelope
from tests.entities import Fragile, Recorder, Scripted
from tests.oracle import brute_force_with_timers, systems, timed_systems


def afresh(world: World) -> World:
    """``world`` made again from its parts: every digest summed anew."""
    return World(
        world.states,
        world.envelopes,
        world.drops_left,
        world.duplicates_left,
        pending=world.pending,
        dead=world.dead,
        now=world.now,
        next_order=world.next_order,
        fifo=world.fifo,
    )


# It compares searches over one model of time; where that model skips timer orders
# (TimerOrderWarning) is another test's business.
@pytest.mark.filterwarnings("ignore::pachyderm.TimerOrderWarning")
@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    envelopes=st.one_of(systems, timed_systems),
    network=st.sampled_from(["unordered", "fifo"]),
    drops=st.integers(0, 1),
    duplicates=st.integers(0, 1),
    data=st.data(),
)
def test_every_step_fingerprints_its_world_as_summing_afresh_would(
    envelopes: list[tuple[Any, Any]], network: Any, drops: int, duplicates: int, data: Any
) -> None:
    """Along random paths (timers, drops, copies, both networks), each world's incremental
    fingerprint is the one summed afresh; the shortcuts (a child's fingerprint without the
    child, its actions from its parent's) and remembered activations agree with a step."""
    world = initial_world(envelopes, None, network, drops, duplicates)
    activations = Activations()
    known: dict[bytes, Action] = {}  # one Action per delivery for the whole path, as a search
    for _ in range(12):
        assert world.fingerprint == afresh(world).fingerprint
        actions = enabled(world, network, known)
        fresh = enabled(world, network)
        assert [action.key for action in actions] == [action.key for action in fresh]
        if not actions:
            break
        for action in actions:
            plain, _ = step(world, fresh[actions.index(action)], network)
            remembered, _ = step(world, action, network, activations=activations)
            assert remembered == plain
            assert remembered.fingerprint == plain.fingerprint == afresh(plain).fingerprint
            plan = plan_delivery(world, action, activations)
            if plan is not None:
                assert plan.fingerprint == plain.fingerprint
                made, planned_following = make_planned(world, action, plan, actions)
                assert made == plain
                assert planned_following == actions_after(world, actions, action, plain)
            following = actions_after(world, actions, action, plain)
            if following is not None:
                assert [a.key for a in following] == [a.key for a in enabled(plain, network)]
        world, _ = step(world, data.draw(st.sampled_from(actions)), network)


def test_fifo_fingerprints_tell_a_channels_orders_apart() -> None:
    """Two messages on one channel in either order: two FIFO worlds, one unordered world."""
    first, second = envelope(Recorder("r"), 1), envelope(Recorder("r"), 2)
    one_way = World((), (first, second), fifo=True)
    other_way = World((), (second, first), fifo=True)
    assert one_way.fingerprint != other_way.fingerprint
    assert one_way != other_way
    system = [(Recorder("r"), 1), (Recorder("r"), 2)]
    assert initial_world(system, None, "unordered", 0, 0) == initial_world(
        list(reversed(system)), None, "unordered", 0, 0
    )


runs: list[tuple[int, int]] = []


class Bit(Entity[int, int]):
    """Sets the bit it is sent, and notes each time its handler runs."""

    entity_name = "tests.fingerprints.Bit"

    def init(self) -> int:
        return 0

    def activate(self, message: int, state: int) -> tuple[Outbox, int]:
        runs.append((state, message))
        return [], state | message


@pytest.mark.parametrize("workers", [1, 2])
def test_a_search_runs_each_activation_once(workers: int) -> None:
    """3 entities x 3 bits: 512 worlds, and each entity's 12 (state, message) pairs run once
    (once in each worker process)."""
    runs.clear()
    system = [(Bit(e), 1 << m) for e in range(3) for m in range(3)]
    result = Simulation.explore(system, workers=workers)
    assert result.unique_states == 512
    if workers == 1:
        # Per entity: each of its 3 bits, sent in each of the 4 states the other two make.
        assert result.handler_calls == len(runs) == 3 * 12
        assert len(set(runs)) == 12
    else:  # the workers remember for themselves, in their own processes
        assert 3 * 12 <= result.handler_calls <= workers * 3 * 12


def test_remembered_activations_are_bounded_and_counted() -> None:
    """Past its limit the memory forgets everything at once; calls count the handler's runs."""
    activations = Activations(limit=4)
    address = Bit("b")
    key = World().fingerprint  # any bytes serve as the entity's key here
    for bit in range(10):
        activations.outcome(address, key, None, envelope(address, 1 << bit).blob, 1 << 20)
    assert activations.calls == 10
    assert len(activations.known) <= 4
    activations.outcome(address, key, None, envelope(address, 1 << 9).blob, 1 << 20)
    assert activations.calls == 10  # the last one is still remembered


def test_a_remembered_failure_is_a_dead_letter_in_every_world_it_happens_in() -> None:
    """The same failing activation, met on many paths, is a dead letter on each."""
    result = Simulation.explore([(Fragile("f"), "boom"), (Recorder("r"), 1), (Recorder("r"), 2)])
    assert result.final_worlds
    for world in result.final_worlds:
        assert [letter.address for letter in world.dead_letters] == [Fragile("f")]


def test_a_delivery_found_in_another_world_takes_the_head_of_its_fifo_channel() -> None:
    """A search hands one Action to every world with that message; where a copy of it also
    waits further down the channel, the delivery still takes the channel's head."""
    message, other = envelope(Recorder("r"), 1), envelope(Recorder("r"), 2)
    world = World((), (message, other, message), fifo=True)
    found_elsewhere = Action("deliver", message, index=2)  # its place in some other world
    child, _ = step(world, found_elsewhere, "fifo")
    assert child.in_flight == [(Recorder("r"), 2), (Recorder("r"), 1)]
    assert child.state_of(Recorder("r")) == [1]


def test_a_plan_places_a_send_behind_its_own_channel_under_fifo() -> None:
    """An entity that sends to itself while a message of its own to itself is delivered: the
    planned fingerprint puts the new message where the step does, behind the one waiting."""
    # Scripted(0) sends itself A (which sends it C when delivered) and B: channel 0 -> 0.
    a = (1, ((0, (3, ())),))
    start = (0, ((0, a), (0, (2, ()))))
    world = initial_world([(Scripted(0), start)], None, "fifo", 0, 0)
    activations = Activations()
    checked = 0
    frontier = [world]
    while frontier:
        world = frontier.pop()
        for action in enabled(world, "fifo"):
            child, _ = step(world, action, "fifo")
            plan = plan_delivery(world, action, activations)
            assert plan is not None
            assert plan.fingerprint == child.fingerprint == afresh(child).fingerprint
            checked += 1
            frontier.append(child)
    assert checked == 4  # start, A, then B and C in the order they were sent


class Setter(Entity[Any, Any]):
    """Sets a timer on "x" and on "y", ending in the same state whichever came first; a
    ringing timer notes which rang, and what had arrived by then."""

    entity_name = "tests.fingerprints.Setter"

    def init(self) -> Any:
        return (frozenset(), ())

    def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
        seen, log = state
        if message in ("x", "y"):
            return [after(1, self, ("rang", message))], (seen | {message}, log)
        _, which = message
        return [], (seen, (*log, (which, tuple(sorted(seen)))))


@pytest.mark.parametrize("search", ["depth", "breadth"])
def test_timers_due_at_once_in_either_order_are_two_worlds(search: str) -> None:
    """One entity's two timers due at the same time fire in the order they were set: pending
    in either order, the worlds differ, and the search finds the brute force's 15 and 4."""
    system = [(Setter("s"), "x"), (Setter("s"), "y")]
    finals, reached = brute_force_with_timers(system, "unordered")
    result = Simulation.explore(system, search=search)  # type: ignore[arg-type]
    assert (result.unique_states, len(result.final_worlds)) == (len(reached), len(finals))
    assert (len(reached), len(finals)) == (15, 4)
    assert {world.canonical for world in result.final_worlds} == finals
