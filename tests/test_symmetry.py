"""Symmetry reduction: one world per renaming class, counted against a brute-force oracle.

The oracle explores without symmetry, collects every concrete world, and
groups them by renaming, done here on decoded Python values (independently of
the simulation's renaming of encoded worlds): the classes it counts must be
exactly the worlds the reduced search visits.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pachyderm import Entity, InvalidArgumentError
from simulation import Simulation, World, _symmetry
from simulation._symmetry import Symmetry
from tests.entities import Counter, Fragile, Recorder, Voter


def renamed(value: Any, renaming: dict[Any, Any]) -> Any:
    if isinstance(value, Entity):
        return renaming.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(renamed(item, renaming) for item in value)
    return value


def shape(world: World, renaming: dict[Any, Any]) -> str:
    """A world as plain text after renaming: states by address, messages and dead letters
    as multisets, and the fault budgets left."""
    states = sorted(
        (repr(renamed(address, renaming)), repr(renamed(state, renaming)))
        for address, state in world.entities.items()
    )
    flying = sorted(repr(renamed(item, renaming)) for item in world.in_flight)
    dead = sorted(
        repr((renamed(letter.address, renaming), renamed(letter.message, renaming), letter.error))
        for letter in world.dead_letters
    )
    return repr((states, flying, dead, world.drops_left, world.duplicates_left))


def classes(worlds: list[World], group: list[Any]) -> set[str]:
    """Worlds grouped by renaming within ``group``: the smallest shape of each."""
    renamings = [dict(zip(group, order, strict=True)) for order in itertools.permutations(group)]
    return {min(shape(world, renaming) for renaming in renamings) for world in worlds}


def every_world(envelopes: list[tuple[Any, Any]], **options: Any) -> list[World]:
    """Every concrete world reachable, through a full search without symmetry."""
    seen: list[World] = []

    def collect(world: World) -> bool:
        seen.append(world)
        return True

    result = Simulation.explore(envelopes, invariants=[collect], search="breadth", **options)
    assert result.complete
    return seen


@pytest.mark.parametrize(("replicas", "messages"), [(2, 2), (3, 2), (3, 3), (4, 2)])
def test_counters_are_explored_once_per_class(replicas: int, messages: int) -> None:
    """K interchangeable counters sent M messages each: C(M+K, K) classes of (M+1)^K worlds."""
    group = [Counter(n) for n in range(replicas)]
    envelopes = [(counter, "inc") for counter in group for _ in range(messages)]
    plain = Simulation.explore(envelopes)
    reduced = Simulation.explore(envelopes, symmetric=[group])
    assert plain.unique_states == (messages + 1) ** replicas
    expected = len(classes(every_world(envelopes), group))
    assert expected == len(
        list(itertools.combinations_with_replacement(range(messages + 1), replicas))
    )
    assert reduced.unique_states == expected
    assert reduced.complete
    assert [w.entities for w in reduced.final_worlds] == [w.entities for w in plain.final_worlds]


@pytest.mark.parametrize(("voters", "network"), [(2, "unordered"), (3, "unordered"), (3, "fifo")])
def test_addresses_inside_states_and_messages_are_renamed(voters: int, network: str) -> None:
    """Voters that send their own address to a ballot box: the box's list is renamed too,
    so the reduced search visits exactly the oracle's classes, and finals per class."""
    group = [Voter(n) for n in range(voters)]
    envelopes: list[tuple[Any, Any]] = [(voter, "vote") for voter in group]
    plain_finals = Simulation.explore(envelopes, network=network).final_worlds  # type: ignore[arg-type]
    reduced = Simulation.explore(envelopes, network=network, symmetric=[group])  # type: ignore[arg-type]
    worlds = every_world(envelopes, network=network)
    assert reduced.unique_states == len(classes(worlds, group))
    assert reduced.unique_states < len({w.fingerprint for w in worlds})
    assert len(plain_finals) == len(list(itertools.permutations(group)))  # every ballot order
    assert len(reduced.final_worlds) == len(classes(plain_finals, group)) == 1


@pytest.mark.parametrize("case", ["duplicates", "dead letters", "drops"])
def test_copies_losses_and_dead_letters_are_explored_once_per_class(case: str) -> None:
    """Messages delivered twice or lost (the budgets left are part of a world) and dead
    letters are renamed like the rest: the reduced search visits exactly the oracle's
    classes, however many worlds share the renamed parts it keeps."""
    group: list[Any]
    if case == "dead letters":
        group = [Fragile(n) for n in range(3)]
        envelopes: list[tuple[Any, Any]] = [(f, m) for f in group for m in ("one", "boom")]
        options: dict[str, Any] = {}
    else:
        group = [Voter(n) for n in range(3)]
        envelopes = [(voter, "vote") for voter in group]
        options = {"duplicates": 1} if case == "duplicates" else {"drops": 1}
    reduced = Simulation.explore(envelopes, symmetric=[group], **options)
    worlds = every_world(envelopes, **options)
    assert reduced.unique_states == len(classes(worlds, group))
    assert reduced.unique_states < len({w.fingerprint for w in worlds})


def test_renamed_parts_kept_are_bounded_in_all_and_forgetting_them_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parts each renaming keeps are bounded across all renamings together (8
    replicas: 40,319 renamings of every world), and a search that forgets them at every
    turn counts the same classes."""
    group = [Counter(n) for n in range(8)]
    symmetry = Symmetry([tuple(group)], "unordered")
    world = Simulation.replay([(counter, "inc") for counter in group], ())
    symmetry.fingerprint(world)
    parts = len(world.envelopes) + len(world.states)
    assert sum(map(len, symmetry.renamed)) <= _symmetry._CACHED_PARTS + parts
    envelopes = [(voter, "vote") for voter in [Voter(n) for n in range(3)]]
    kept = Simulation.explore(envelopes, symmetric=[[Voter(n) for n in range(3)]], drops=1)
    monkeypatch.setattr(_symmetry, "_CACHED_PARTS", 0)
    forgotten = Simulation.explore(envelopes, symmetric=[[Voter(n) for n in range(3)]], drops=1)
    assert forgotten.unique_states == kept.unique_states
    assert len(forgotten.final_worlds) == len(kept.final_worlds)


def test_traces_replay_and_violations_are_still_found() -> None:
    """Under symmetry each final world's trace replays to it, and a violation is found."""
    group = [Voter(n) for n in range(3)]
    envelopes: list[tuple[Any, Any]] = [(voter, "vote") for voter in group]
    result = Simulation.explore(envelopes, symmetric=[group])
    for final, trace in result.traces.items():
        assert Simulation.replay(envelopes, trace).outcome() == final

    def fewer_than_three_votes(world: World) -> bool:
        return len(world.state_of(Recorder("ballot box"))) < 3

    failing = Simulation.explore(envelopes, symmetric=[group], invariants=[fewer_than_three_votes])
    assert not failing.ok
    violation = failing.violations[0]
    assert len(violation.trace) == 6
    assert not fewer_than_three_votes(Simulation.replay(envelopes, violation.trace))


@pytest.mark.parametrize(
    "symmetric",
    [
        [[Counter(0)]],
        [[Counter(0), "Counter(1)"]],
        [[Counter(0), Recorder(1)]],
        [[Counter(0), Counter(1)], [Counter(1), Counter(2)]],
        [[Counter(n) for n in range(9)]],
        "Counter",
    ],
)
def test_bad_groups_are_refused(symmetric: Any) -> None:
    """Groups of one, non-addresses, mixed classes, overlaps and 9! renamings are refused."""
    with pytest.raises(InvalidArgumentError, match=r"symmetric|interchangeable|renamings"):
        Simulation.explore([(Counter(0), "inc")], symmetric=symmetric)


def test_symmetry_and_path_counts_are_refused_together() -> None:
    """count_paths counts orders of concrete worlds, which symmetry merges: refused."""
    with pytest.raises(InvalidArgumentError, match="count_paths"):
        Simulation.explore(
            [(Counter(0), "inc")], symmetric=[[Counter(0), Counter(1)]], count_paths=True
        )
