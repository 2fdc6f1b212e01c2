"""Generated systems, and the brute-force oracle that searches are checked against.

The oracle enumerates every order naively (no fingerprints, no sleep sets):
what it reaches is what a search must reach.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from simulation import World
from simulation._network import arrange, deliverable
from simulation._step import Action, Activations, _state_at, enabled, step
from simulation._world import envelope
from tests.entities import Mixer, Scripted, Timed

__all__ = [
    "brute_force",
    "brute_force_with_timers",
    "every_world",
    "mixed_systems",
    "still_asleep",
    "systems",
    "timed_systems",
]


def brute_force(
    envelopes: list[tuple[Any, Any]], network: str, drops: int = 0, duplicates: int = 0
) -> tuple[set[bytes], set[bytes]]:
    """(final worlds, reachable worlds) as canonical bytes, branching on every choice."""
    net: Any = network
    start = World((), arrange(net, [envelope(*e) for e in envelopes]), drops, duplicates)
    finals: set[bytes] = set()
    reached: set[bytes] = set()

    def walk(world: World) -> None:
        reached.add(world.canonical)
        if world.quiescent:
            finals.add(world.outcome().canonical)
            return
        heads = [world.envelopes[i] for i in deliverable(net, world.envelopes)]
        choices = [Action("deliver", h) for h in heads]
        choices += [Action("drop", h) for h in heads] if world.drops_left else []
        choices += [Action("duplicate", h) for h in heads] if world.duplicates_left else []
        for action in choices:
            child, failure = step(world, action, net)
            assert failure is None, "generated systems do not fail"
            walk(child)

    walk(start)
    return finals, reached


def brute_force_with_timers(
    envelopes: list[tuple[Any, Any]], network: str
) -> tuple[set[bytes], set[bytes]]:
    """The same oracle, taking every enabled action (timers firing included), unreduced."""
    net: Any = network
    start = World((), arrange(net, [envelope(*e) for e in envelopes]))
    finals: set[bytes] = set()
    reached: set[bytes] = set()

    def walk(world: World) -> None:
        if world.canonical in reached:
            return
        reached.add(world.canonical)
        if world.quiescent:
            finals.add(world.outcome().canonical)
            return
        for action in enabled(world, net):
            child, failure = step(world, action, net)
            assert failure is None, "generated systems do not fail"
            walk(child)

    walk(start)
    return finals, reached


def every_world(
    envelopes: list[tuple[Any, Any]], network: str, drops: int = 0, duplicates: int = 0
) -> tuple[set[bytes], set[bytes]]:
    """(final worlds, reachable worlds) as canonical bytes: every enabled action taken
    from every world (faults too), unreduced, each world once; failures are dead letters."""
    net: Any = network
    start = World((), arrange(net, [envelope(*e) for e in envelopes]), drops, duplicates)
    finals: set[bytes] = set()
    reached: set[bytes] = set()
    todo = [start]
    while todo:
        world = todo.pop()
        if world.canonical in reached:
            continue
        reached.add(world.canonical)
        if world.quiescent:
            finals.add(world.outcome().canonical)
        todo.extend(step(world, action, net)[0] for action in enabled(world, net))
    return finals, reached


scripts = st.recursive(
    st.just(()),
    lambda inner: st.lists(
        st.tuples(st.integers(0, 2), st.tuples(st.integers(0, 3), inner)), max_size=2
    ).map(tuple),
    max_leaves=2,
)
systems = st.lists(
    st.tuples(st.integers(0, 2), st.tuples(st.integers(0, 3), scripts)), min_size=1, max_size=3
).map(lambda items: [(Scripted(target), message) for target, message in items])


timed_message = st.recursive(
    st.tuples(st.integers(0, 3), st.just(()), st.just(()), st.just(())),
    lambda inner: st.tuples(
        st.integers(0, 3),
        st.lists(st.tuples(st.integers(0, 2), inner), max_size=2).map(tuple),
        st.lists(
            st.tuples(
                st.sampled_from([None, "a", "b"]), st.integers(0, 3), st.integers(0, 2), inner
            ),
            max_size=2,
        ).map(tuple),
        st.lists(st.sampled_from(["a", "b"]), max_size=1).map(tuple),
    ),
    max_leaves=3,
)
timed_systems = st.lists(st.tuples(st.integers(0, 2), timed_message), min_size=1, max_size=2).map(
    lambda items: [(Timed(target), message) for target, message in items]
)


_ops = st.sampled_from(["add", "max", "set", "cap", "fail"])
mixed_message = st.recursive(
    st.tuples(_ops, st.integers(0, 3), st.just(())),
    lambda inner: st.tuples(
        _ops,
        st.integers(0, 3),
        st.lists(st.tuples(st.integers(0, 1), inner), max_size=2).map(tuple),
    ),
    max_leaves=2,
)
mixed_systems = st.lists(st.tuples(st.integers(0, 1), mixed_message), min_size=1, max_size=4).map(
    lambda items: [(Mixer(target), message) for target, message in items]
)
"""Systems of :class:`Mixer` entities: deliveries that commute only in some worlds."""


def still_asleep(
    sleepers: dict[bytes, Action],
    action: Action,
    world: World | None = None,
    activations: Activations | None = None,
) -> dict[bytes, Action]:
    """The sleepers independent of ``action`` in ``world``, which stay asleep after it:
    the rules of ``simulation._step.SleepMasks`` stated plainly, over dicts of
    actions by key (deliveries to one entity commute only given ``world`` and
    the search's ``activations``)."""
    target = action.lane
    if target is None or not sleepers:
        return {}
    if action.kind == "deliver":
        kept = {
            key: sleeper
            for key, sleeper in sleepers.items()
            if sleeper.lane is not None and sleeper.lane != target and sleeper.copier != target
        }
        if activations is None or world is None or world.fifo or len(kept) == len(sleepers):
            return kept
        same = [sleeper for sleeper in sleepers.values() if sleeper.lane == target]
        if not same:
            return kept
        state = _state_at(world.states, target)[1]
        record = None if state is None else state.record
        delivered = action.envelope
        assert delivered is not None
        for sleeper in same:
            waiting = sleeper.envelope
            assert waiting is not None
            if sleeper.kind == "deliver" and activations.commute(
                delivered.recipient, target, record, delivered.blob, waiting.blob
            ):
                kept[sleeper.key] = sleeper
        return kept
    sender = action.copier
    return {
        key: sleeper
        for key, sleeper in sleepers.items()
        if sleeper.kind == "deliver" and sleeper.lane != target and sleeper.lane != sender
    }
