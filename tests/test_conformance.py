"""One semantics: generated systems end live exactly as in one of the simulation's worlds.

The same handlers run on a live ecosystem and in the Simulation (fifo, what
the live ones guarantee). Every entity's live state must equal, byte for byte
in its stored form (so with the same types and the same dict order), its
state in one of the simulation's final worlds. Timers are fired live with a
ManualClock moved to each one's due time, as the simulation's ``run`` does.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pachyderm import Entity, ManualClock, encode
from simulation import Simulation
from tests.conftest import OpenEcosystem
from tests.entities import Arrivals, Timed

ringing = st.tuples(st.integers(0, 3), st.just(()), st.just(()), st.just(()))
messages = st.recursive(
    ringing,
    lambda inner: st.tuples(
        st.integers(0, 3),
        st.lists(st.tuples(st.integers(0, 2), inner), max_size=2).map(tuple),
        st.lists(
            st.tuples(st.sampled_from([None, "a"]), st.integers(0, 3), st.integers(0, 2), inner),
            max_size=2,
        ).map(tuple),
        st.lists(st.just("a"), max_size=1).map(tuple),
    ),
    max_leaves=3,
)
systems = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 2).map(Timed), messages),
        st.tuples(st.integers(0, 1).map(Arrivals), st.sampled_from(["x", "y", "z"])),
    ),
    min_size=1,
    max_size=4,
)


async def run_live(eco: Any, clock: ManualClock, envelopes: list[tuple[Any, Any]]) -> None:
    """Send from one sender, in order; then fire timers one due time at a time."""
    for address, message in envelopes:
        await eco.send(address, message)
    await eco.settle()
    while (due := eco.runtime.timers.next_due()) is not None:
        clock.advance(due - clock.now())
        await eco.settle()


def stored(state: Any) -> bytes:
    return encode(state)


# It compares live runs with the simulated worlds; where exploration may skip timer
# orders (TimerOrderWarning) is another test's business.
@pytest.mark.filterwarnings("ignore::pachyderm.TimerOrderWarning")
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # each example resets the store
)
@given(envelopes=systems)
def test_live_states_are_exactly_those_of_a_simulated_world(
    open_ecosystem: OpenEcosystem, envelopes: list[tuple[Entity[Any, Any], Any]]
) -> None:
    """Every entity's live state equals, in stored bytes, its state in one fifo final world."""
    finals = Simulation.exhaust(envelopes, network="fifo")
    touched = {state.address for world in finals for state in world.states}

    async def live() -> dict[Entity[Any, Any], bytes]:
        clock = ManualClock()
        async with open_ecosystem(clock=clock) as eco:
            await run_live(eco, clock, envelopes)
            return {address: stored(await eco.state_of(address)) for address in touched}

    open_ecosystem.reset()
    outcome = trio.run(live)
    simulated = [
        {address: stored(world.state_of(address)) for address in touched} for world in finals
    ]
    assert outcome in simulated, (outcome, simulated)
