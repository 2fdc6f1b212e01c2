"""The Simulation ecosystem: exact numbers worked out by hand, and a brute-force oracle."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ecosystems import InMemory
from pachyderm import (
    Entity,
    ExplorationError,
    InvalidArgumentError,
    Outbox,
    PachydermError,
    TimerOrderWarning,
)
from simulation import Simulation, World, _explore, _step
from simulation._step import Action, SleepMasks, packed, unpacked
from tests.entities import (
    Arrivals,
    Client,
    Counter,
    Fragile,
    Keeper,
    Mixer,
    Recorder,
    Relay,
    Scripted,
    Server,
    Timed,
)
from tests.oracle import (
    brute_force,
    brute_force_with_timers,
    every_world,
    mixed_systems,
    still_asleep,
    systems,
    timed_systems,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("counters", "increments"), [(1, 5), (2, 3), (3, 3), (4, 2)])
def test_independent_counters(counters: int, increments: int) -> None:
    """K counters sent M increments: one final world, (M+1)^K worlds, calls <= worlds."""
    envelopes = [(Counter(k), "inc") for k in range(counters) for _ in range(increments)]
    result = Simulation.explore(envelopes)
    assert result.deterministic
    assert result.final_worlds[0].entities == {Counter(k): increments for k in range(counters)}
    assert result.unique_states == (increments + 1) ** counters
    assert result.handler_calls <= result.unique_states


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_order_sensitive_entity(count: int) -> None:
    """n distinct messages to a list-appender: n! finals unordered, 1 under fifo."""
    envelopes = [(Recorder("r"), n) for n in range(count)]
    assert len(Simulation.exhaust(envelopes)) == math.factorial(count)
    [final] = Simulation.exhaust(envelopes, network="fifo")
    assert final.entities == {Recorder("r"): list(range(count))}


def test_a_world_made_unordered_keeps_its_send_order_when_explored_as_fifo() -> None:
    """Messages sent "b" then "a" (an unordered world keeps them by key, "a" first):
    explored from it on a FIFO network, "b" still comes first, as when sent there."""
    log = Recorder("log")
    sent = [(log, "b"), (log, "a")]
    start = Simulation.replay(sent, [])
    assert [message for _, message in start.in_flight] == ["a", "b"]
    for search in ("depth", "breadth"):
        finals = Simulation.exhaust([], start, network="fifo", search=search)
        assert [world.state_of(log) for world in finals] == [["b", "a"]]
    assert Simulation.run([], start).state_of(log) == ["b", "a"]


def test_fifo_holds_through_an_outbox() -> None:
    """Under fifo, a relay's messages to one receiver keep their order; unordered they do not."""
    envelopes = [(Relay("relay"), (Recorder("end"), n)) for n in range(3)]
    fifo = Simulation.exhaust(envelopes, network="fifo")
    assert [w.state_of(Recorder("end")) for w in fifo] == [[0, 1, 2]]
    assert len(Simulation.exhaust(envelopes)) == 6


def test_run_delivers_in_send_order() -> None:
    """run delivers oldest first to quiescence and returns a plain world."""
    world = Simulation.run([(Relay("x"), (Recorder("r"), n)) for n in range(3)])
    assert world.quiescent
    assert world.entities == {Relay("x"): 3, Recorder("r"): [0, 1, 2]}
    again = Simulation.run([(Recorder("r"), 3)], world)
    assert again.state_of(Recorder("r")) == [0, 1, 2, 3]


def test_run_stops_a_system_that_never_goes_quiet() -> None:
    """A message loop is stopped at max_steps with an error saying so, showing its last ten
    steps, numbered as in the run, and the world it got to."""

    class Echo(Entity[Any, int]):
        def activate(self, message: Any, state: Any) -> tuple[Outbox, int]:
            return [(self, message)], (state or 0) + 1

    with pytest.raises(PachydermError, match=r"after 50 steps \(max_steps\)") as caught:
        Simulation.run([(Echo("e"), "ping")], max_steps=50)
    lines = str(caught.value).splitlines()
    echo = repr(Echo("e"))
    assert lines[1:11] == [f"{n}. deliver {echo} -> {echo}: 'ping'" for n in range(41, 51)]
    assert lines[11] == f"world now: World({{{echo}: 50}}, in_flight=[({echo}, 'ping')])"


def test_a_failing_activation_is_a_dead_letter_in_the_world() -> None:
    """As live: the entity keeps its state, the message joins the dead letters, it goes on."""
    envelopes = [(Fragile("f"), "one"), (Fragile("f"), "boom"), (Fragile("f"), "two")]
    world = Simulation.run(envelopes)
    assert world.state_of(Fragile("f")) == {"count": 2}
    [letter] = world.dead_letters
    assert (letter.address, letter.message, letter.error) == (
        Fragile("f"),
        "boom",
        "ValueError: boom",
    )
    finals = Simulation.exhaust(envelopes, network="fifo")
    assert [(w.state_of(Fragile("f")), len(w.dead_letters)) for w in finals] == [({"count": 2}, 1)]


class _Raises(Entity[Any, int]):
    """Raises what it is told to (by name) on message "raise"; counts the rest."""

    entity_name = "tests.Raises"
    what: type[BaseException] = KeyboardInterrupt

    def activate(self, message: Any, state: Any) -> tuple[Outbox, int]:
        if message == "raise":
            raise self.what()
        return [], (state or 0) + 1


class _Fatal(BaseException):
    """Not an Exception: what some libraries raise to unwind everything."""


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_in_a_handler_stops_the_search_and_other_base_exceptions_fail_as_live(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt raised in a handler is the caller's: the search stops with it,
    rather than counting it as the system's dead letter and going on. SystemExit and
    other BaseExceptions fail the activation as they do live: a dead letter."""
    monkeypatch.setattr(_Raises, "what", KeyboardInterrupt)
    envelopes = [(_Raises("a"), 1), (_Raises("a"), "raise"), (_Raises("b"), 2)]
    with pytest.raises(KeyboardInterrupt):
        Simulation.explore(envelopes, workers=workers)
    with pytest.raises(KeyboardInterrupt):
        Simulation.run(envelopes)
    for error in (SystemExit, _Fatal):
        monkeypatch.setattr(_Raises, "what", error)
        finals = Simulation.explore(envelopes, workers=workers).final_worlds
        assert {len(world.dead_letters) for world in finals} == {1}
        assert finals[0].dead_letters[0].error.startswith(error.__name__)


def test_a_real_ctrl_c_during_a_handler_stops_the_search() -> None:
    """SIGINT landing while a handler computes raises KeyboardInterrupt from explore."""
    code = """
import time
from typing import Any
from pachyderm import Entity
from simulation import Simulation

class Slow(Entity[Any, int]):
    entity_name = "tests.Slow"
    def init(self) -> int:
        return 0
    def activate(self, message: Any, state: int) -> Any:
        started = time.monotonic()
        while time.monotonic() - started < 0.05:
            pass
        return [], state + message

print("searching", flush=True)
result = Simulation.explore([(Slow(i % 2), i) for i in range(8)], timeout=60)
print("returned", result, flush=True)
"""
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "searching\n"
        time.sleep(0.5)  # nearly all of a search's time is in the handler
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "returned" not in out
    assert "KeyboardInterrupt" in err


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("search", ["depth", "breadth"])
def test_a_check_that_breaks_names_itself_the_world_and_the_steps_to_it(
    search: Any, workers: int
) -> None:
    """An invariant raising something other than AssertionError (a bug in the check, not a
    failure of the system) raises from explore with a note naming the check, the world and
    the numbered steps to it; so does a final check, and one that takes no argument."""
    counter = Counter("c")
    known: dict[str, int] = {}

    def lookup(world: World) -> bool:
        if world.state_of(counter) == 2:
            return bool(known["missing"])
        return True

    with pytest.raises(KeyError, match="missing") as caught:
        Simulation.explore(
            [(counter, "inc"), (counter, "inc")],
            invariants=[lookup],
            search=search,
            workers=workers,
        )
    assert (
        "raised by the check lookup on World({Counter('c'): 2}, in_flight=[]), reached by:\n"
        "1. deliver outside -> Counter('c'): 'inc'\n"
        "2. deliver outside -> Counter('c'): 'inc'"
    ) in caught.value.__notes__
    with pytest.raises(TypeError) as wrong:
        Simulation.explore([(counter, "inc")], final=[lambda: True], workers=workers)  # type: ignore[list-item, misc]
    assert any(
        note.startswith("raised by the check <lambda> on World({Counter('c'): 1}")
        for note in wrong.value.__notes__
    )
    with pytest.raises(TypeError) as first:
        Simulation.explore([(counter, "inc")], invariants=[lambda: True], workers=workers)  # type: ignore[list-item, misc]
    assert any(
        note.endswith("reached by:\n(none: the first world)") for note in first.value.__notes__
    )


def test_failures_as_violations_show_the_trace_and_received_messages() -> None:
    """With failures='violation', a failing activation is reported with its path."""
    envelopes = [(Fragile("f"), "one"), (Fragile("f"), "boom")]
    result = Simulation.explore(envelopes, network="fifo", failures="violation")
    [violation] = result.violations
    assert violation.property_name == "activation failed"
    assert [a.message for a in violation.trace] == ["one", "boom"]
    assert "ValueError: boom" in violation.detail
    assert "received on this path, in order:\n  'one'\n  'boom'" in violation.detail
    with pytest.raises(ExplorationError) as caught:
        Simulation.run(envelopes, failures="violation")
    error = caught.value
    assert error.address == Fragile("f")
    assert isinstance(error.cause, ValueError)
    assert error.received == ["one", "boom"]
    assert len(error.trace) == 2
    assert "received on this path" in str(error)


def test_invariant_violation_has_a_shortest_replayable_trace() -> None:
    """Breadth-first search reports the shortest path to a violation, and it replays."""
    envelopes = [(Recorder("r"), n) for n in range(4)]

    def never_three_first(world: World) -> bool:
        return world.state_of(Recorder("r"))[:1] != [3]

    result = Simulation.explore(envelopes, invariants=[never_three_first], search="breadth")
    [violation] = result.violations
    assert violation.property_name == "never_three_first"
    assert [str(a) for a in violation.trace] == ["deliver outside -> Recorder('r'): 3"]
    assert Simulation.replay(envelopes, violation.trace) == violation.world


def test_traces_of_final_worlds_replay() -> None:
    """Each final world's trace, replayed from the start, gives that world."""
    envelopes = [(Relay("a"), (Recorder("r"), 1)), (Recorder("r"), 2), (Counter("c"), 0)]
    result = Simulation.explore(envelopes)
    assert len(result.final_worlds) == 2
    for world in result.final_worlds:
        assert Simulation.replay(envelopes, result.traces[world]) == world


def test_max_depth_truncates() -> None:
    """Paths stop at max_depth; the worlds cut short are counted, and none is final."""
    envelopes = [(Counter("c"), "inc") for _ in range(5)]
    result = Simulation.explore(envelopes, max_depth=2)
    assert result.final_worlds == []
    assert result.truncated == 1
    assert result.unique_states == 3


def test_drops_and_duplicates() -> None:
    """A lost message or a delivered-twice one is explored within its budget."""
    envelopes = [(Counter("c"), "inc"), (Counter("c"), "inc")]
    counts = sorted(w.state_of(Counter("c")) for w in Simulation.exhaust(envelopes, drops=1))
    assert counts == [1, 2]
    counts = sorted(w.state_of(Counter("c")) for w in Simulation.exhaust(envelopes, duplicates=1))
    assert counts == [2, 3]


def test_worlds_are_values_with_stable_fingerprints() -> None:
    """Equal worlds are equal and hash alike; fingerprints agree across processes."""
    first = Simulation.run([(Counter("a"), 1), (Recorder("b"), frozenset({1, 2}))])
    second = Simulation.run([(Recorder("b"), frozenset({2, 1})), (Counter("a"), 1)])
    assert first == second
    assert hash(first) == hash(second)
    code = (
        "from simulation import Simulation; from tests.entities import Counter, Recorder; "
        "print(Simulation.run([(Counter('a'), 1), (Recorder('b'), frozenset({1, 2}))])"
        ".fingerprint.hex())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == first.fingerprint.hex()


# -- against the oracle (tests/oracle.py): every order, enumerated naively ----------------


@settings(max_examples=60, deadline=None, derandomize=True)
@given(systems, st.sampled_from(["unordered", "fifo"]), st.sampled_from([(0, 0), (1, 0), (0, 1)]))
def test_search_agrees_with_brute_force(
    envelopes: list[tuple[Any, Any]], network: str, faults: tuple[int, int]
) -> None:
    """Depth- and breadth-first find the brute force's final and reachable worlds exactly."""
    drops, duplicates = faults
    finals, reached = brute_force(envelopes, network, drops, duplicates)
    options: dict[str, Any] = {"network": network, "drops": drops, "duplicates": duplicates}
    for search in ("depth", "breadth"):
        result = Simulation.explore(envelopes, search=search, **options)
        assert {w.canonical for w in result.final_worlds} == finals
        assert result.unique_states == len(reached)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(mixed_systems, st.sampled_from([(0, 0), (1, 0), (0, 1)]))
def test_deliveries_that_commute_only_in_some_worlds_agree_with_brute_force(
    envelopes: list[tuple[Any, Any]], faults: tuple[int, int]
) -> None:
    """Deliveries to one entity that commute in some worlds and not in others (sums,
    maxima, caps, sets, sends and failures that depend on the state) are taken once
    where they commute: the depth-first search still finds every world the brute
    force reaches, and no other."""
    drops, duplicates = faults
    finals, reached = every_world(envelopes, "unordered", drops, duplicates)
    result = Simulation.explore(envelopes, drops=drops, duplicates=duplicates)
    assert {w.canonical for w in result.final_worlds} == finals
    assert result.unique_states == len(reached)


def test_deliveries_to_one_entity_that_commute_are_taken_in_one_order() -> None:
    """Four different sums to each of three entities: 16**3 = 4,096 worlds, each reached
    by exactly one transition. Taking every order of each entity's sums, as for
    deliveries that do not commute, takes 8,736."""
    sums = [(Mixer(e), ("add", 1 << m, ())) for e in range(3) for m in range(4)]
    result = Simulation.explore(sums)
    assert (result.unique_states, result.transitions) == (16**3, 16**3 - 1)


# It compares searches over one model of time; where that model skips timer orders
# (TimerOrderWarning) is another test's business.
@pytest.mark.filterwarnings("ignore::pachyderm.TimerOrderWarning")
@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.one_of(systems, mixed_systems, timed_systems),
    st.sampled_from(["unordered", "fifo"]),
    st.sampled_from([(0, 0), (1, 0), (0, 1), (1, 1)]),
)
def test_sleep_sets_as_bits_keep_what_the_sleep_set_rules_keep(
    envelopes: list[tuple[Any, Any]], network: Any, faults: tuple[int, int]
) -> None:
    """The depth-first search keeps sleep sets as ints (SleepMasks): at every step of
    generated searches (faults, timers, deliveries commuting in some worlds, either
    network) the sleepers it keeps are exactly those ``still_asleep`` keeps."""
    drops, duplicates = faults
    plain_after = SleepMasks.after

    def checking(masks: SleepMasks, sleep: int, action: Action, world: World, plan: Any) -> int:
        kept = plain_after(masks, sleep, action, world, plan)
        sleepers = {a.key: a for a in masks.by_number if a.bit & sleep}
        expected = still_asleep(sleepers, action, world, masks.activations)
        assert {a.key for a in masks.by_number if a.bit & kept} == expected.keys()
        return kept

    SleepMasks.after = checking  # type: ignore[method-assign,assignment]
    try:
        Simulation.explore(envelopes, network=network, drops=drops, duplicates=duplicates)
    finally:
        SleepMasks.after = plain_after  # type: ignore[method-assign]


def test_sleep_sets_with_high_bits_are_stored_as_positions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A search that has numbered thousands of actions stores a sleep set with a high bit
    as the positions of its bits; searches storing every sleep set so find the same
    worlds, finals and transitions as searches storing ints."""
    assert unpacked(packed(0)) == 0
    assert packed(5) == 5
    wide = (1 << 5000) | (1 << 70) | 1
    assert packed(wide) == (0, 70, 5000)
    assert unpacked(packed(wide)) == wide
    searches: list[list[tuple[Any, Any]]] = [
        [(Mixer(e), ("add", 1 << m, ())) for e in range(2) for m in range(3)],
        [(Scripted(e % 2), (e, ((1 - e % 2, (e, ())),))) for e in range(4)],
        [(Mixer(e % 2), (op, 2, ((1, ("cap", 1, ())),))) for e, op in enumerate(["max", "set"])],
    ]
    plain = [Simulation.explore(envelopes, duplicates=1) for envelopes in searches]
    monkeypatch.setattr(_step, "PACK_FROM", 2)
    monkeypatch.setattr(_explore, "PACK_FROM", 2)
    for envelopes, expected in zip(searches, plain, strict=True):
        result = Simulation.explore(envelopes, duplicates=1)
        assert (result.unique_states, result.transitions) == (
            expected.unique_states,
            expected.transitions,
        )
        assert {w.canonical for w in result.final_worlds} == {
            w.canonical for w in expected.final_worlds
        }


def test_a_duplicate_and_a_delivery_to_its_sender_do_not_commute_under_fifo() -> None:
    """Under fifo a copy joins its channel after what the channel's sender sends meanwhile,
    so both orders are explored: the oracle's 39 worlds and 6 finals."""
    envelopes = [(Scripted(1), (0, ((0, (0, ())),))), (Scripted(1), (0, ((0, (1, ())),)))]
    finals, reached = brute_force(envelopes, "fifo", 0, 1)
    assert (len(reached), len(finals)) == (39, 6)
    for search in ("depth", "breadth"):
        result = Simulation.explore(envelopes, network="fifo", duplicates=1, search=search)
        assert {w.canonical for w in result.final_worlds} == finals
        assert result.unique_states == len(reached)


# It compares searches over one model of time; where that model skips timer orders
# (TimerOrderWarning) is another test's business.
@pytest.mark.filterwarnings("ignore::pachyderm.TimerOrderWarning")
@settings(max_examples=60, deadline=None, derandomize=True)
@given(timed_systems, st.sampled_from(["unordered", "fifo"]))
def test_search_with_timers_agrees_with_brute_force(
    envelopes: list[tuple[Any, Any]], network: str
) -> None:
    """With timers set, replaced and cancelled, the searches find the oracle's worlds exactly."""
    finals, reached = brute_force_with_timers(envelopes, network)
    for search in ("depth", "breadth"):
        result = Simulation.explore(envelopes, search=search, network=network)  # type: ignore[arg-type]
        assert {w.canonical for w in result.final_worlds} == finals
        assert result.unique_states == len(reached)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(systems)
def test_live_run_ends_in_a_fifo_final_world(envelopes: list[tuple[Any, Any]]) -> None:
    """A live InMemory run of a generated system ends in one of exhaust(network='fifo')'s worlds."""
    finals = [w.entities for w in Simulation.exhaust(envelopes, network="fifo")]

    async def live() -> dict[Any, Any]:
        async with InMemory.open() as eco:
            for address, message in envelopes:
                await eco.send(address, message)
            await eco.settle()
            touched = {a for w in finals for a in w}
            return {a: await eco.state_of(a) for a in touched}

    outcome = trio.run(live)
    assert any(all(outcome[a] == w.get(a, a.init()) for a in outcome) for w in finals), outcome


def test_path_counts_over_the_state_graph() -> None:
    """3 entities x 3 order-sensitive messages: 216 finals, 1,680 orders each, 9! in all."""
    envelopes = [(Recorder(e), m) for e in range(3) for m in range(3)]
    result = Simulation.explore(envelopes, count_paths=True)
    assert result.unique_states == 4096
    assert result.path_counts is not None
    assert len(result.path_counts) == 216
    assert set(result.path_counts.values()) == {1680}
    assert sum(result.path_counts.values()) == math.factorial(9)


def test_path_counts_are_none_when_a_world_can_come_back() -> None:
    """A cycle in the state graph means infinitely many orders: no count is given."""

    class Ping(Entity[Any, None]):
        def activate(self, message: Any, state: None) -> tuple[Outbox, None]:
            return ([(self, "again")] if message == "again" else []), None

    result = Simulation.explore([(Ping("p"), "again")], count_paths=True, max_depth=5)
    assert result.path_counts is None


class Toggle(Entity[Any, int]):
    """Flips its state and sends itself the message again: a loop."""

    entity_name = "tests.simulation.Toggle"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [(self, "flip")], 1 - state


def test_path_counts_are_none_when_the_start_itself_comes_back() -> None:
    """A search from a world on a cycle (the toggle's loop comes back to it) has
    infinitely many orders too: no count, where the start was taken as a source."""
    toggle = Toggle("t")
    fresh = Simulation.replay([(toggle, "flip")], [])
    start = Simulation.replay([(toggle, "flip")], [Action("deliver", fresh.envelopes[0])])
    result = Simulation.explore([], start, drops=1, count_paths=True)
    assert result.complete
    assert result.path_counts is None


def test_counterexample_as_mermaid() -> None:
    """A violation's trace renders as a Mermaid sequence diagram naming each participant."""
    envelopes = [(Relay("relay"), (Recorder("r"), "hello"))]

    def never_hello(world: World) -> bool:
        return world.state_of(Recorder("r")) != ["hello"]

    [violation] = Simulation.explore(envelopes, invariants=[never_hello]).violations
    assert violation.diagram.splitlines() == [
        "sequenceDiagram",
        "    participant p0 as outside",
        "    participant p1 as Relay('relay')",
        "    participant p2 as Recorder('r')",
        "    p0->>p1: (Recorder('r'), 'hello')",
        "    p1->>p2: 'hello'",
    ]
    assert "never_hello fails after 2 steps" in str(violation)


def test_mermaid_shows_hashes_semicolons_and_line_breaks_as_written() -> None:
    """'#' and ';' in ids and messages (which Mermaid reads as an entity code and the end
    of a statement) are written so that the diagram shows them; a trace of no steps is a
    diagram that says so."""
    envelopes = [(Recorder("#1;a"), "issue #12; fixed\nnow")]
    [violation] = Simulation.explore(envelopes, final=[lambda world: False]).violations
    assert violation.diagram.splitlines() == [
        "sequenceDiagram",
        "    participant p0 as outside",
        "    participant p1 as Recorder('#35;1#59;a')",
        "    p0->>p1: 'issue #35;12#59; fixed\\nnow'",  # (repr: a backslash and an n)
    ]

    def never(world: World) -> bool:
        return False

    first = repr(Simulation.replay(envelopes, ()))

    [at_start] = Simulation.explore(envelopes, invariants=[never]).violations
    assert at_start.trace == ()
    assert str(at_start).splitlines()[:2] == [
        "never fails at the start",
        f"world: {first}",
    ]
    assert at_start.diagram.splitlines() == [
        "sequenceDiagram",
        "    participant p0 as outside",
        "    Note over p0: no steps: the first world",
    ]


def test_random_walk_replays_from_its_seed() -> None:
    """The same seed gives the same execution; its trace replays to the same world."""
    envelopes = [(Recorder("r"), n) for n in range(6)]
    first = Simulation.walk(envelopes, seed=7)
    assert Simulation.walk(envelopes, seed=7) == first
    assert first.world.quiescent
    assert sorted(first.world.state_of(Recorder("r"))) == list(range(6))
    assert Simulation.replay(envelopes, first.trace) == first.world
    walks = [Simulation.walk(envelopes, seed=seed) for seed in range(20)]
    orders = {tuple(walk.world.state_of(Recorder("r"))) for walk in walks}
    assert len(orders) > 1


def test_hypothesis_schedules_shrink_to_a_minimal_failure() -> None:
    """A failing execution shrinks to the fewest steps that still fail."""
    envelopes = [(Recorder("r"), n) for n in range(5)]
    found: list[Any] = []

    @settings(database=None, derandomize=True, max_examples=200)
    @given(Simulation.executions(envelopes))
    def check(execution: Any) -> None:
        received = execution.world.state_of(Recorder("r"))
        if received[:1] == [4]:
            found.append(execution)
            raise AssertionError("4 arrived first")

    with pytest.raises(AssertionError, match="4 arrived first"):
        check()
    smallest = found[-1]  # Hypothesis replays the shrunk example last
    assert smallest.world.state_of(Recorder("r"))[0] == 4
    # Shrinking prefers the earliest choice at every later step.
    assert smallest.world.state_of(Recorder("r")) == [4, 0, 1, 2, 3]


def test_final_checks_with_faults_report_their_trace() -> None:
    """A final check failing on a path with a lost message reports that path."""

    def got_both(world: World) -> bool:
        return world.state_of(Counter("c")) == 2

    result = Simulation.explore(
        [(Counter("c"), "a"), (Counter("c"), "b")], final=[got_both], drops=1, search="breadth"
    )
    [violation] = result.violations
    assert [action.kind for action in violation.trace] == ["deliver", "drop"]
    assert violation.world.entities == {Counter("c"): 1}


def test_handlers_get_values_as_stored() -> None:
    """A state's dict keeps its insertion order, as live; only fingerprints are canonical."""
    world = Simulation.run([(Arrivals("a"), "zebra"), (Arrivals("a"), "aardvark")])
    assert list(world.state_of(Arrivals("a"))) == ["zebra", "aardvark"]
    other = Simulation.run([(Arrivals("a"), "aardvark"), (Arrivals("a"), "zebra")])
    assert list(other.state_of(Arrivals("a"))) == ["aardvark", "zebra"]
    assert world != other  # the values differ: {"zebra": 0, ...} vs {"aardvark": 0, ...}


def test_run_fires_timers_in_virtual_time() -> None:
    """With nothing in flight, run moves virtual time to the next timer and fires it."""
    answered = Simulation.run([(Client("c"), ("ask", Server("s")))])
    assert answered.state_of(Client("c")) == "answered"  # the pong was sent before time passed
    assert (answered.timers, answered.now) == ([], 0)  # the timeout was cancelled
    ring = ("ring", (), (), ())
    timed = Simulation.run([(Timed("t"), ("go", (), ((None, 7, 1, ring), (None, 3, 2, ring)), ()))])
    assert (timed.state_of(Timed(1)), timed.state_of(Timed(2))) == (["ring"], ["ring"])
    assert timed.now == 7


def test_run_fires_timers_due_at_once_in_the_order_they_were_set() -> None:
    """Two entities' timers due at the same time: run fires the one set first first, as
    live does (it went by the entities' addresses: "a" before "z")."""

    def go(tag: str) -> tuple[Any, ...]:
        return ("go", (), ((None, 5, "log", (tag, (), (), ())),), ())

    world = Simulation.run([(Timed("z"), go("z")), (Timed("a"), go("a"))])
    assert world.state_of(Timed("log")) == ["z", "a"]
    world = Simulation.run([(Timed("a"), go("a")), (Timed("z"), go("z"))])
    assert world.state_of(Timed("log")) == ["a", "z"]


def test_a_reply_racing_a_timeout_has_exactly_two_outcomes() -> None:
    """Exploration lets the timer fire at any point after it was set: both outcomes show."""
    result = Simulation.explore([(Client("c"), ("ask", Server("s")))])
    outcomes = sorted(world.state_of(Client("c")) for world in result.final_worlds)
    assert outcomes == ["answered", "timed out, late reply"]
    assert result.unique_states == 7
    fifo = Simulation.exhaust([(Client("c"), ("ask", Server("s")))], network="fifo")
    assert sorted(world.state_of(Client("c")) for world in fifo) == outcomes


def test_an_entitys_timers_fire_in_due_order() -> None:
    """Timers of one entity keep their due order in every execution; ties, their set order."""
    timers = ((None, 10, 1, ("late", (), (), ())), (None, 5, 1, ("early", (), (), ())))
    ties = ((None, 5, 2, ("first", (), (), ())), (None, 5, 2, ("second", (), (), ())))
    finals = Simulation.exhaust([(Timed("t"), ("go", (), timers + ties, ()))])
    assert {tuple(world.state_of(Timed(1))) for world in finals} == {("early", "late")}
    assert {tuple(world.state_of(Timed(2))) for world in finals} == {("first", "second")}


def test_named_timers_replace_and_cancel_in_the_simulation() -> None:
    """A name set again replaces the pending timer; cancel removes it; as live."""
    ring = ("ring", (), (), ())
    replaced = (("n", 5, 1, ring), ("n", 9, 1, ("again", (), (), ())))
    [world] = Simulation.exhaust([(Timed("t"), ("go", (), replaced, ()))])
    assert world.state_of(Timed(1)) == ["again"]
    [world] = Simulation.exhaust([(Timed("t"), ("go", (), (("n", 5, 1, ring),), ("n",)))])
    assert world.state_of(Timed(1)) == []


def _sets(tag: str, *timers: tuple[str | None, float, str]) -> tuple[Any, ...]:
    """A Timed message that logs ``tag`` and sets each (name, delay, tag to log) timer."""
    return (
        tag,
        (),
        tuple((name, delay, "e", (fired, (), (), ())) for name, delay, fired in timers),
        (),
    )


def _then(message: tuple[Any, ...], sent: tuple[Any, ...]) -> tuple[Any, ...]:
    """``message``, sending ``sent`` on to the same entity (so it comes after it)."""
    tag, _, timers, cancels = message
    return (tag, (("e", sent),), timers, cancels)


def test_a_timer_set_for_less_than_one_held_from_an_earlier_message_is_reported() -> None:
    """ "go" sets a timer for 10 s, "m" one for 1 s. Live, "m" can come 20 s after "go", and
    the first timer fire first; exploration, whose time moves only when a timer fires,
    never takes that order, and says so: a count, the first case, a TimerOrderWarning."""
    envelopes = [
        (Timed("e"), _sets("go", (None, 10, "t1"))),
        (Timed("e"), _sets("m", (None, 1, "t2"))),
    ]
    with pytest.warns(TimerOrderWarning, match=r"1 transition set a timer for less time than"):
        result = Simulation.explore(envelopes)
    logs = {tuple(world.state_of(Timed("e"))) for world in result.final_worlds}
    assert ("go", "m", "t2", "t1") in logs
    assert ("go", "m", "t1", "t2") not in logs  # the order live allows and this search skips
    assert result.timer_gaps == 1  # "m" after "go": the other order sets the longer one last
    assert "Timed('e'), on ('m', (), ((None, 1, 'e', ('t2'" in result.timer_gap
    assert "set a timer for 1 s while holding timer of Timed('e') at 10" in result.timer_gap
    assert "set for 10 s by an earlier message" in result.timer_gap
    assert "timer orders maybe not explored: 1 transition" in str(result)
    assert repr(result).endswith(", 1 timer-order gap>")
    with pytest.warns(TimerOrderWarning):
        many = Simulation.explore(envelopes, workers=2)
    assert (many.timer_gaps, many.timer_gap) == (1, result.timer_gap)
    for found in (result, many):  # the trace to it: "go", then "m" setting the shorter one
        trace = found.timer_gap_trace
        assert trace is not None
        assert [action.message[0] for action in trace] == ["go", "m"]
        assert Simulation.replay(envelopes, trace).state_of(Timed("e")) == ["go", "m"]
    assert "reached by:\n1. deliver outside -> Timed('e'): ('go'" in str(result)


def _leaf(tag: str) -> tuple[Any, ...]:
    return (tag, (), (), ())


@pytest.mark.parametrize(
    ("envelopes", "missed"),
    [
        # m sets A (1 s) and B (0 s); A's message sets D (0 s), B's sets C (1 s). Live, B
        # fires late, at 1 s: C is due at 2, D at 1 (a timer that fired late).
        (
            [
                (
                    0,
                    (
                        "m",
                        (),
                        (
                            (None, 1, 0, ("A", (), ((None, 0, 0, _leaf("D")),), ())),
                            (None, 0, 0, ("B", (), ((None, 1, 0, _leaf("C")),), ())),
                        ),
                        (),
                    ),
                )
            ],
            ("m", "B", "A", "D", "C"),
        ),
        # p0 sets A (1 s); p3 sets B (1 s), whose message sets C (0 s). Live: p3 at 0,
        # p0 at 0.5, B at 1 sets C due at 1, before A at 1.5 (a message between dues).
        (
            [
                (0, ("p0", (), ((None, 1, 0, _leaf("A")),), ())),
                (0, ("p3", (), ((None, 1, 0, ("B", (), ((None, 0, 0, _leaf("C")),), ())),), ())),
            ],
            ("p3", "p0", "B", "C", "A"),
        ),
        # m0 sets V (3 s) and sends m1; m1 sets U (5 s); V's message sets T (4 s). Live:
        # m1 and V both at 3 s, U due at 8, T at 7 (time moved by another timer).
        (
            [
                (
                    0,
                    (
                        "m0",
                        ((0, ("m1", (), ((None, 5, 0, _leaf("U")),), ())),),
                        ((None, 3, 0, ("V", (), ((None, 4, 0, _leaf("T")),), ())),),
                        (),
                    ),
                )
            ],
            ("m0", "m1", "V", "T", "U"),
        ),
    ],
    ids=["a timer fired late", "a message between two dues", "time moved by another timer"],
)
def test_each_way_exploration_misses_a_timer_order_is_reported(
    envelopes: list[tuple[int, Any]], missed: tuple[str, ...]
) -> None:
    """Systems a helper's live-time oracle found missing an order (a log that real times
    give): each is a timer set for less time than one held from an earlier message, and
    reported (they went unreported when only a timer due earlier was)."""
    with pytest.warns(TimerOrderWarning):
        result = Simulation.explore([(Timed(target), message) for target, message in envelopes])
    assert result.timer_gaps >= 1
    assert missed not in {tuple(world.state_of(Timed(0))) for world in result.final_worlds}


@pytest.mark.parametrize(
    "envelopes",
    [
        [(Timed("e"), _sets("go", (None, 10, "t1"), (None, 1, "t2")))],  # one activation
        [(Timed("e"), _then(_sets("go", (None, 1, "t1")), _sets("m", (None, 10, "t2"))))],
        [
            (Timed("e"), _sets("go", ("idle", 10, "t1"))),
            (Timed("e"), _sets("m", ("idle", 1, "t2"))),
        ],
        [(Timed("e"), _sets("go", (None, 10, "t1"))), (Timed("f"), _sets("m", (None, 1, "t2")))],
    ],
    ids=["one activation", "longer and later", "replaced by name", "another entity"],
)
def test_timers_that_hide_no_order_are_not_reported(envelopes: list[tuple[Any, Any]]) -> None:
    """Timers set by one activation, one set later (the first message sends the second)
    with a longer delay, a named timer replaced, and another entity's timer: exploration
    takes every order live can, and warns of none (warnings are errors in this run)."""
    result = Simulation.explore(envelopes)
    assert (result.timer_gaps, result.timer_gap, result.timer_gap_trace) == (0, "", None)
    assert "timer" not in repr(result)


def test_a_world_cannot_be_changed() -> None:
    """Setting an attribute of a world is refused: worlds are values."""
    world = Simulation.run([(Counter("c"), "inc")])
    with pytest.raises(AttributeError, match="immutable"):
        world.states = ()


@pytest.mark.parametrize("search", ["depth", "breadth"])
def test_max_worlds_stops_at_the_same_worlds_every_time(search: str) -> None:
    """A search stopped by max_worlds visits exactly that many, the same ones each time,
    and says it is incomplete; a budget as large as the space leaves it complete."""
    envelopes = [(Counter(k), "inc") for k in range(3) for _ in range(3)]  # 4**3 worlds
    first = Simulation.explore(envelopes, max_worlds=10, search=search)  # type: ignore[arg-type]
    again = Simulation.explore(envelopes, max_worlds=10, search=search)  # type: ignore[arg-type]
    assert first.unique_states == again.unique_states == 10
    assert not first.complete
    assert first.stopped == "max_worlds"
    assert set(first.traces.values()) == set(again.traces.values())
    whole = Simulation.explore(envelopes, max_worlds=4**3, search=search)  # type: ignore[arg-type]
    assert (whole.complete, whole.stopped, whole.unique_states) == (True, None, 4**3)


def test_timeout_stops_a_search_too_big_to_finish() -> None:
    """A search of billions of worlds given 0.3 s stops, incomplete, with what it found."""
    envelopes = [(Recorder(k), n) for k in range(6) for n in range(6)]
    result = Simulation.explore(envelopes, timeout=0.3)
    assert result.stopped == "timeout"
    assert not result.complete
    assert result.unique_states > 0
    assert result.seconds < 30  # it stopped: not a speed target, the search is astronomical


def test_timeout_is_kept_when_each_world_is_slow_to_check() -> None:
    """An invariant taking 20 ms a world, timeout=0.5: the search stops soon after 0.5 s
    (it looked at the clock every 1,024 transitions: after about 20 s)."""

    def slow(world: World) -> bool:
        time.sleep(0.02)
        return True

    envelopes = [(Recorder(k), n) for k in range(4) for n in range(4)]
    started = time.perf_counter()
    result = Simulation.explore(envelopes, invariants=[slow], timeout=0.5)
    assert result.stopped == "timeout"
    assert time.perf_counter() - started < 5  # not a speed target: 20 s before


def test_a_violation_with_big_messages_and_worlds_reads_short() -> None:
    """A 20,000-character message and a world of 300 entities: each step of the trace
    shows 200 characters of the message and says how many more, the world 2,000 (it
    was 47,000 characters to read); the action keeps its whole message."""
    envelopes = [(Counter(k), "inc") for k in range(300)] + [(Keeper("k"), "x" * 20_000)]

    def most_in_flight(world: World) -> bool:
        return len(world.in_flight) > 299

    result = Simulation.explore(
        envelopes, invariants=[most_in_flight], search="breadth", max_worlds=5000
    )
    [violation] = result.violations
    assert "... (19,802 more characters)" in str(violation)
    assert len(str(violation)) < 3_000
    assert len(str(violation.trace[0])) < 300
    assert any(action.message == "x" * 20_000 for action in violation.trace)


def test_complete_is_false_when_a_violation_or_max_depth_cut_the_search() -> None:
    """Stopping at the first violation, or at max_depth, leaves the result incomplete."""
    envelopes = [(Recorder("r"), n) for n in range(3)]
    stopped = Simulation.explore(envelopes, invariants=[lambda w: False])
    assert (stopped.stopped, stopped.complete) == ("violation", False)
    everything = Simulation.explore(
        envelopes, invariants=[lambda w: False], stop_at_first_violation=False
    )
    assert (everything.stopped, everything.complete) == (None, True)
    assert not Simulation.explore(envelopes, max_depth=1).complete


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_worlds", 0),
        ("max_worlds", 2.5),
        ("max_worlds", True),
        ("timeout", 0),
        ("timeout", -1),
        ("timeout", float("nan")),
        ("timeout", "5"),
        ("progress", "yes"),
    ],
)
def test_budgets_refuse_bad_values(option: str, value: Any) -> None:
    """A bad budget is an InvalidArgumentError naming the option and the value."""
    with pytest.raises(InvalidArgumentError, match=option):
        Simulation.explore([(Counter("c"), "inc")], **{option: value})


def test_progress_reports_worlds_rate_frontier_and_depth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With progress=True a search reports on stderr and as a structlog event; with
    progress=False it prints nothing."""
    monkeypatch.setattr(_explore, "_PROGRESS_EVERY", 0.0)  # report at every look at the clock,
    monkeypatch.setattr(_explore, "_TICK", 16)  # and look often
    envelopes = [(Counter(k), "inc") for k in range(4) for _ in range(4)]  # 5**4 worlds
    with structlog.testing.capture_logs() as events:
        result = Simulation.explore(envelopes, progress=True)
    printed = capsys.readouterr().err
    assert re.search(r"exploring: [\d,]+ worlds, [\d,]+ worlds/s, frontier \d+, depth \d+", printed)
    assert f"explored: <Exploration complete: {result.unique_states:,} worlds" in printed
    reports = [event for event in events if event["event"] == "exploring"]
    assert reports
    assert {"worlds", "worlds_per_second", "frontier", "depth"} <= set(reports[0])
    Simulation.explore(envelopes, progress=False)
    assert capsys.readouterr().err == ""


def test_results_have_short_reprs_and_readable_strs() -> None:
    """A large result's repr is one short line; str shows the first violation's numbered trace."""
    envelopes = [(Recorder(k), n) for k in range(2) for n in range(4)]
    big = Simulation.explore(envelopes)
    assert big.unique_states > 500
    assert len(repr(big)) < 120, repr(big)
    assert repr(big).startswith("<Exploration complete: ")
    failing = Simulation.explore(envelopes, invariants=[lambda w: len(w.in_flight) > 6])
    text = str(failing)
    assert text.startswith("exploration stopped early (violation): ")
    assert "\n1. deliver outside -> Recorder(" in text
    assert len(repr(failing.violations[0])) < 80
    execution = Simulation.walk(envelopes, seed=3)
    assert repr(execution) == f"<Execution of {len(execution.trace)} steps, seed 3>"
    assert str(execution).splitlines()[1].startswith("1. deliver outside -> Recorder(")


def test_hypothesis_prints_a_failing_execution_as_its_numbered_trace() -> None:
    """Hypothesis's falsifying example shows the execution as numbered steps, not a dump."""
    envelopes = [(Recorder("r"), n) for n in range(3)]

    @settings(database=None, derandomize=True, max_examples=100)
    @given(Simulation.executions(envelopes))
    def check(execution: Any) -> None:
        assert execution.world.state_of(Recorder("r"))[:1] != [2]

    with pytest.raises(AssertionError) as failure:
        check()
    notes = "\n".join(getattr(failure.value, "__notes__", []))
    assert "execution of 3 steps:" in notes, notes
    assert "1. deliver outside -> Recorder('r'): 2" in notes, notes
    assert "World(" not in notes  # no dump of every intermediate world


def test_a_failing_init_names_the_message_entity_and_hook() -> None:
    """A failing init() in the simulation names the message, the entity, the hook and the cause."""

    class NoStart(Entity[Any, Any]):
        entity_name = "tests.simulation.NoStart"

        def init(self) -> Any:
            raise ValueError("no initial state")

    expected = (
        r"raised on 'hello': InitError: \S*NoStart\('n'\): \S*NoStart.init\(\) failed, so "
        r"the entity has no initial state: ValueError: no initial state"
    )
    with pytest.raises(ExplorationError, match=expected) as caught:
        Simulation.run([(NoStart("n"), "hello")], failures="violation")
    assert caught.value.message == "hello"


def test_depth_first_under_max_depth_takes_no_step_past_it() -> None:
    """A world met again at max_depth with fewer actions asleep is not expanded there:
    the depth-first search reports only worlds and finals within max_depth steps, as
    breadth-first does. (It did take a step past: found by an attack helper.)"""
    envelopes = [(Mixer(0), ("add", 0, ())), (Mixer(0), ("add", 0, ((1, ("add", 0, ())),)))]
    depth = Simulation.explore(envelopes, drops=1, max_depth=2)
    breadth = Simulation.explore(envelopes, drops=1, max_depth=2, search="breadth")
    assert all(len(trace) <= 2 for trace in depth.traces.values())
    assert (depth.unique_states, len(depth.final_worlds)) == (10, 1)
    assert (breadth.unique_states, len(breadth.final_worlds)) == (10, 1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.one_of(systems, mixed_systems),
    st.sampled_from([(0, 0), (1, 0), (0, 1)]),
    st.integers(1, 4),
)
def test_depth_first_under_max_depth_finds_what_breadth_first_finds(
    envelopes: list[tuple[Any, Any]], faults: tuple[int, int], max_depth: int
) -> None:
    """Cut at max_depth, depth-first (sleep sets, worlds met again at other depths) and
    breadth-first (every transition) find the same worlds and finals."""
    drops, duplicates = faults
    options: dict[str, Any] = {"drops": drops, "duplicates": duplicates, "max_depth": max_depth}
    depth = Simulation.explore(envelopes, **options)
    breadth = Simulation.explore(envelopes, search="breadth", **options)
    assert depth.unique_states == breadth.unique_states
    assert {w.canonical for w in depth.final_worlds} == {w.canonical for w in breadth.final_worlds}
