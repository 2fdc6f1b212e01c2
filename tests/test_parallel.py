"""Parallel search: workers=N finds exactly what one process finds, with real worker processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pachyderm import Entity, InvalidArgumentError, Outbox, PachydermError
from simulation import Exploration, Simulation, World, _explore, _parallel, _worker
from tests.entities import Client, Counter, Fragile, Mixer, Recorder, Relay, Server, Timed, Voter
from tests.oracle import (
    brute_force,
    brute_force_with_timers,
    every_world,
    mixed_systems,
    systems,
    timed_systems,
)

ROOT = Path(__file__).resolve().parent.parent


def finals_of(result: Exploration) -> set[bytes]:
    return {world.canonical for world in result.final_worlds}


def assert_same(envelopes: list[tuple[Any, Any]], **options: Any) -> Exploration:
    """workers=2 and workers=3 find one process's worlds and finals; their traces replay."""
    one = Simulation.explore(envelopes, **options)
    for workers in (2, 3):
        many = Simulation.explore(envelopes, workers=workers, **options)
        assert many.unique_states == one.unique_states
        assert finals_of(many) == finals_of(one)
        assert (many.complete, many.truncated) == (one.complete, one.truncated)
        replay = {k: options[k] for k in ("network", "drops", "duplicates") if k in options}
        for world in many.final_worlds:
            assert Simulation.replay(envelopes, many.traces[world], **replay).outcome() == world
    return one


@pytest.mark.parametrize(
    ("envelopes", "worlds", "finals"),
    [
        ([(Counter(k), "inc") for k in range(3) for _ in range(3)], 64, 1),
        ([(Recorder(e), m) for e in range(3) for m in range(3)], 4096, 216),
        ([(Relay("a"), (Recorder("r"), 1)), (Recorder("r"), 2), (Counter("c"), 0)], 14, 2),
        ([(Client("c"), ("ask", Server("s")))], 7, 2),  # a reply racing a timer
    ],
)
@pytest.mark.parametrize("network", ["unordered", "fifo"])
def test_workers_find_the_same_worlds_and_finals(
    envelopes: list[tuple[Any, Any]], worlds: int, finals: int, network: str
) -> None:
    """Counters, order-sensitive recorders, a relay, timers: exact counts with 1, 2, 3 workers."""
    one = assert_same(envelopes, network=network)
    if network == "unordered":
        assert (one.unique_states, len(one.final_worlds)) == (worlds, finals)


def test_workers_with_faults_and_dead_letters() -> None:
    """Drops, duplicates and failing activations kept as dead letters: the same worlds."""
    envelopes = [(Recorder("r"), 1), (Recorder("r"), 2), (Counter("c"), 0)]
    assert_same(envelopes, drops=1)
    assert_same(envelopes, duplicates=1, network="fifo")
    fragile = [(Fragile("f"), "one"), (Fragile("f"), "boom"), (Fragile("f"), "two")]
    one = assert_same(fragile)
    assert {len(world.dead_letters) for world in one.final_worlds} == {1}


def test_workers_with_max_depth() -> None:
    """Cut at max_depth, the same worlds, and the same count of worlds cut short."""
    one = assert_same([(Recorder(e), m) for e in range(2) for m in range(3)], max_depth=4)
    assert one.truncated > 0


@pytest.mark.parametrize("network", ["unordered", "fifo"])
def test_workers_with_symmetry(network: str) -> None:
    """Interchangeable voters: the same classes of worlds, and one final world per class."""
    group = [Voter(n) for n in range(3)]
    envelopes: list[tuple[Any, Any]] = [(voter, "vote") for voter in group]
    one = Simulation.explore(envelopes, network=network, symmetric=[group])  # type: ignore[arg-type]
    many = Simulation.explore(envelopes, network=network, symmetric=[group], workers=2)  # type: ignore[arg-type]
    assert many.unique_states == one.unique_states
    assert len(many.final_worlds) == len(one.final_worlds) == 1
    counters = [Counter(n) for n in range(3)]
    incs = [(counter, "inc") for counter in counters for _ in range(2)]
    reduced = Simulation.explore(incs, symmetric=[counters], workers=2)
    assert reduced.unique_states == Simulation.explore(incs, symmetric=[counters]).unique_states
    assert reduced.unique_states == 10  # C(2+3, 3) classes of 27 worlds


class Flipper(Entity[Any, int]):
    """Flips its bit and sends itself the message again: worlds that come back, forever."""

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [(self, message)], 1 - state


_EXCHANGES: list[tuple[str, list[tuple[Any, Any]], dict[str, Any]]] = [
    # Many paths to each world, made by several workers in one level: one taker each.
    ("counters", [(Counter(k), "inc") for k in range(3) for _ in range(3)], {}),
    (
        "counters fifo",
        [(Counter(k), "inc") for k in range(3) for _ in range(3)],
        {"network": "fifo"},
    ),
    # Faults: budgets in the worlds, and actions that commute with nothing.
    ("drops", [(Recorder("r"), 1), (Recorder("r"), 2), (Counter("c"), 0)], {"drops": 2}),
    (
        "duplicates fifo",
        [(Relay("a"), (Recorder("r"), 1)), (Recorder("r"), 2)],
        {"duplicates": 1, "network": "fifo"},
    ),
    ("timers", [(Client("c"), ("ask", Server("s"))), (Client("d"), ("ask", Server("s")))], {}),
    # Worlds that come back at later levels with other sleep sets: taken again only for
    # the actions that slept then (or the search never ends).
    ("cycles", [(Flipper(n), "flip") for n in range(3)], {}),
    (
        "cycles fifo",
        [(Flipper(n), "flip") for n in range(2) for _ in range(2)],
        {"network": "fifo"},
    ),
    ("max_depth", [(Recorder(e), m) for e in range(3) for m in range(2)], {"max_depth": 3}),
    ("symmetry", [(Counter(n), "inc") for n in range(3) for _ in range(2)], {"symmetric": True}),
]


def _even(world: World) -> bool:
    return (len(world.in_flight) + len(world.states)) % 2 == 0


@pytest.mark.parametrize("balance", ["as is", "never", "at any surplus"])
@pytest.mark.parametrize(
    ("envelopes", "options"),
    [(envelopes, options) for _, envelopes, options in _EXCHANGES],
    ids=[name for name, _, _ in _EXCHANGES],
)
def test_every_world_is_counted_once_whatever_the_workers(
    envelopes: list[tuple[Any, Any]],
    options: dict[str, Any],
    balance: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However many workers, and whether or not they even out their levels, a search
    counts each world once, finds one process's final worlds, and the same trace to
    each and the same transitions: nothing decided depends on which worker made or
    owns a world."""
    if balance == "never":
        monkeypatch.setattr(_parallel, "_SLACK", 10**9)
    elif balance == "at any surplus":  # small searches spread over every worker too
        monkeypatch.setattr(_parallel, "_SLACK", 0)
        monkeypatch.setattr(_parallel, "_TOLERANCE", 0.0)
    if options.get("symmetric"):
        options = {
            **options,
            "symmetric": [list(dict.fromkeys(address for address, _ in envelopes))],
        }
    # Checked once per world: a world taken twice would be reported twice.
    options = {**options, "invariants": [_even], "stop_at_first_violation": False}
    one = Simulation.explore(envelopes, **options)
    assert one.violations
    traces = set()
    for workers in (2, 3, 4):
        many = Simulation.explore(envelopes, workers=workers, **options)
        assert many.unique_states == one.unique_states
        assert (many.complete, many.truncated) == (one.complete, one.truncated)
        assert len(many.final_worlds) == len(one.final_worlds)
        assert len(many.violations) == len(one.violations)
        if "symmetric" not in options:
            assert finals_of(many) == finals_of(one)
            assert {v.world for v in many.violations} == {v.world for v in one.violations}
        taken = tuple((world.canonical, many.traces[world]) for world in many.final_worlds)
        traces.add((taken, many.transitions))  # a world taken twice takes its actions twice
    assert len(traces) == 1


@pytest.mark.parametrize(
    ("envelopes", "options"),
    [
        (envelopes, options)
        for name, envelopes, options in _EXCHANGES
        if name in ("counters", "drops", "timers", "cycles", "cycles fifo")
    ],
)
def test_sleep_sets_kept_as_bits_come_out_the_same_when_their_keys_are_forgotten(
    envelopes: list[tuple[Any, Any]], options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers number actions each their own way and send sleep sets to owners as keys,
    through a bounded cache of each set's keys: emptied at every use, and with items
    shipped at any surplus, a search takes the same transitions to the same worlds and
    finds the same traces."""
    monkeypatch.setattr(_parallel, "_SLACK", 0)
    monkeypatch.setattr(_parallel, "_TOLERANCE", 0.0)
    kept = Simulation.explore(envelopes, workers=2, **options)
    monkeypatch.setattr(_worker, "_KEY_SETS", 1)
    for workers in (2, 3):
        forgetting = Simulation.explore(envelopes, workers=workers, **options)
        assert forgetting.unique_states == kept.unique_states
        assert forgetting.transitions == kept.transitions
        assert finals_of(forgetting) == finals_of(kept)
        assert {w.canonical: t for w, t in forgetting.traces.items()} == {
            w.canonical: t for w, t in kept.traces.items()
        }


@settings(max_examples=12, deadline=None, derandomize=True)
@given(systems, st.sampled_from(["unordered", "fifo"]), st.sampled_from([(0, 0), (1, 0), (0, 1)]))
def test_workers_agree_with_brute_force(
    envelopes: list[tuple[Any, Any]], network: str, faults: tuple[int, int]
) -> None:
    """Generated systems: two workers find the brute force's final and reachable worlds."""
    drops, duplicates = faults
    finals, reached = brute_force(envelopes, network, drops, duplicates)
    result = Simulation.explore(
        envelopes,
        network=network,  # type: ignore[arg-type]
        drops=drops,
        duplicates=duplicates,
        workers=2,
    )
    assert finals_of(result) == finals
    assert result.unique_states == len(reached)


# It compares searches over one model of time; where that model skips timer orders
# (TimerOrderWarning) is another test's business.
@pytest.mark.filterwarnings("ignore::pachyderm.TimerOrderWarning")
@settings(max_examples=12, deadline=None, derandomize=True)
@given(timed_systems, st.sampled_from(["unordered", "fifo"]))
def test_workers_agree_with_brute_force_with_timers(
    envelopes: list[tuple[Any, Any]], network: str
) -> None:
    """Generated systems with timers set, replaced and cancelled: the oracle's worlds exactly."""
    finals, reached = brute_force_with_timers(envelopes, network)
    result = Simulation.explore(envelopes, network=network, workers=2)  # type: ignore[arg-type]
    assert finals_of(result) == finals
    assert result.unique_states == len(reached)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(mixed_systems, st.sampled_from([(0, 0), (1, 0), (0, 1)]))
def test_workers_agree_with_brute_force_where_deliveries_commute_in_some_worlds(
    envelopes: list[tuple[Any, Any]], faults: tuple[int, int]
) -> None:
    """Deliveries to one entity that commute only in some worlds: two workers find the
    oracle's final and reachable worlds exactly."""
    drops, duplicates = faults
    finals, reached = every_world(envelopes, "unordered", drops, duplicates)
    result = Simulation.explore(envelopes, drops=drops, duplicates=duplicates, workers=2)
    assert finals_of(result) == finals
    assert result.unique_states == len(reached)


def test_violations_are_the_same_and_the_first_is_shortest_and_replays() -> None:
    """Every violating world is found as by one process; stopped at the first, the reported
    one is a shortest, the same on every run and with any number of workers."""
    envelopes = [(Recorder(e), m) for e in range(2) for m in range(3)]

    def zero_not_last(world: World) -> bool:
        return world.state_of(Recorder(0))[-1:] != [0] or len(world.in_flight) == 0

    everything: Any = {"invariants": [zero_not_last], "stop_at_first_violation": False}
    one = Simulation.explore(envelopes, **everything)
    many = Simulation.explore(envelopes, workers=2, **everything)
    assert {v.world.canonical for v in many.violations} == {
        v.world.canonical for v in one.violations
    }
    assert len(many.violations) == len(one.violations) > 0
    shortest = Simulation.explore(envelopes, invariants=[zero_not_last], search="breadth")
    firsts = [
        Simulation.explore(envelopes, invariants=[zero_not_last], workers=workers).violations
        for workers in (2, 2, 3)
    ]
    assert [len(found) for found in firsts] == [1, 1, 1]
    traces = {tuple(map(str, found[0].trace)) for found in firsts}
    assert len(traces) == 1
    [violation] = firsts[0]
    assert len(violation.trace) == len(shortest.violations[0].trace) == 1
    assert Simulation.replay(envelopes, violation.trace) == violation.world


def test_failures_and_final_checks_as_violations() -> None:
    """A failing activation and a failing final check are reported as by one process."""
    fragile = [(Fragile("f"), "one"), (Fragile("f"), "boom")]
    [failed] = Simulation.explore(fragile, failures="violation", workers=2).violations
    assert failed.property_name == "activation failed"
    assert "ValueError: boom" in failed.detail
    assert Simulation.replay(fragile, failed.trace) == failed.world

    def got_both(world: World) -> bool:
        return world.state_of(Counter("c")) == 2

    pair = [(Counter("c"), "a"), (Counter("c"), "b")]
    [lost] = Simulation.explore(pair, final=[got_both], drops=1, workers=2).violations
    assert [action.kind for action in lost.trace] == ["deliver", "drop"]
    three = [*pair, (Counter("c"), "c")]
    options: Any = {"final": [got_both], "drops": 2, "stop_at_first_violation": False}
    every = Simulation.explore(three, workers=2, **options).violations
    alone = Simulation.explore(three, **options).violations
    assert {v.world for v in every} == {v.world for v in alone}
    assert sorted(v.world.state_of(Counter("c")) for v in every) == [1, 3]


def test_classes_defined_in_a_function_and_lambdas_work() -> None:
    """Workers are forked: a local entity class and lambda invariants need no pickling."""

    class Doubler(Entity[Any, int]):
        entity_name = "tests.parallel.Doubler"

        def init(self) -> int:
            return 1

        def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
            return [], state * 2 + message

    envelopes = [(Doubler(k), m) for k in range(2) for m in range(3)]
    one = Simulation.explore(envelopes, invariants=[lambda world: True])
    many = Simulation.explore(envelopes, invariants=[lambda world: True], workers=2)
    assert many.unique_states == one.unique_states == 256
    assert finals_of(many) == finals_of(one)


def test_an_invariant_that_raises_raises_here() -> None:
    """An error other than AssertionError in a worker reaches the caller, with its type."""

    def broken(world: World) -> bool:
        raise KeyError("no such thing")

    with pytest.raises(KeyError, match="no such thing") as caught:
        Simulation.explore([(Counter("c"), "inc")], invariants=[broken], workers=2)
    assert any("search worker" in note for note in getattr(caught.value, "__notes__", []))


def test_a_worker_killed_mid_search_is_an_error() -> None:
    """A worker process killed from outside ends the search with a PachydermError."""
    caller = os.getpid()

    def killed(world: World) -> bool:
        if os.getpid() != caller:  # in a worker
            os.kill(os.getpid(), signal.SIGKILL)
        return True

    with pytest.raises(PachydermError, match="ended in the middle of the search"):
        Simulation.explore([(Counter("c"), "inc")], invariants=[killed], workers=2)


@pytest.mark.parametrize("search", ["depth", "breadth"])
def test_max_worlds_stops_at_the_same_worlds_every_time(search: str) -> None:
    """With workers, max_worlds visits exactly that many, the same each time; a budget as
    large as the space leaves the search complete."""
    envelopes = [(Counter(k), "inc") for k in range(3) for _ in range(3)]  # 4**3 worlds
    options: Any = {"search": search, "workers": 2}
    first = Simulation.explore(envelopes, max_worlds=10, **options)
    again = Simulation.explore(envelopes, max_worlds=10, **options)
    assert first.unique_states == again.unique_states == 10
    assert (first.complete, first.stopped) == (False, "max_worlds")
    assert set(first.traces.values()) == set(again.traces.values())
    whole = Simulation.explore(envelopes, max_worlds=4**3, **options)
    assert (whole.complete, whole.stopped, whole.unique_states) == (True, None, 4**3)


def test_timeout_stops_workers_too() -> None:
    """A search of billions of worlds with two workers and 0.5 s stops, incomplete."""
    envelopes = [(Recorder(k), n) for k in range(6) for n in range(6)]
    result = Simulation.explore(envelopes, timeout=0.5, workers=2)
    assert (result.stopped, result.complete) == ("timeout", False)
    assert result.unique_states > 0
    assert result.seconds < 30  # it stopped: not a speed target


def test_progress_is_reported_with_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With workers and progress=True, progress lines and the closing summary are printed."""
    monkeypatch.setattr(_explore, "_PROGRESS_EVERY", 0.0)
    envelopes = [(Counter(k), "inc") for k in range(4) for _ in range(4)]
    result = Simulation.explore(envelopes, progress=True, workers=2)
    printed = capsys.readouterr().err
    assert re.search(r"exploring: [\d,]+ worlds, [\d,]+ worlds/s, frontier \d+, depth \d+", printed)
    assert f"explored: <Exploration complete: {result.unique_states:,} worlds" in printed


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "2", None])
def test_bad_workers_are_refused(workers: Any) -> None:
    """workers must be an int >= 1: anything else is an InvalidArgumentError naming it."""
    with pytest.raises(InvalidArgumentError, match=r"workers must be an int >= 1 .* got"):
        Simulation.explore([(Counter("c"), "inc")], workers=workers)


def test_workers_and_path_counts_are_refused_together() -> None:
    """count_paths needs the whole state graph in one process: refused, saying what to do."""
    with pytest.raises(InvalidArgumentError, match="use workers=1 with count_paths"):
        Simulation.explore([(Counter("c"), "inc")], count_paths=True, workers=2)


_SEARCH_FOREVER = """
import sys
from simulation import Simulation
from tests.entities import Recorder
print("searching", flush=True)
Simulation.explore([(Recorder(k), n) for k in range(6) for n in range(6)], workers=2)
"""


def _children(pid: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry))
    return children


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_ctrl_c_stops_the_workers() -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a parallel
    search raises KeyboardInterrupt in the caller and leaves no worker process behind."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SEARCH_FOREVER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "searching\n"
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _children(process.pid)
            time.sleep(0.05)
        assert len(workers) == 2, workers
        time.sleep(0.5)  # well into the search
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def test_worlds_cut_at_max_depth_are_counted_as_breadth_first_counts_them() -> None:
    """A world first reached at max_depth and later by a shorter path is not cut short:
    workers=1, workers=2 and the breadth-first search count the same worlds truncated."""
    envelopes = [
        (Mixer(0), ("add", 0, ())),
        (Mixer(0), ("add", 1, ())),
        (Mixer(0), ("add", 1, ())),
        (Mixer(0), ("add", 0, ((0, ("add", 0, ())),))),
    ]
    breadth = Simulation.explore(envelopes, max_depth=4, search="breadth")
    assert breadth.truncated > 0
    for workers in (1, 2):
        result = Simulation.explore(envelopes, max_depth=4, workers=workers)
        assert result.unique_states == breadth.unique_states
        assert (result.complete, result.truncated) == (breadth.complete, breadth.truncated)


@pytest.mark.filterwarnings("ignore::pachyderm.TimerOrderWarning")
def test_the_first_timer_gap_is_the_same_whatever_the_workers() -> None:
    """With gaps on two entities met at one depth, workers report the same first one, and
    its trace, every run and with 2 or 3 workers: chosen by (depth, parent, action), not by
    which worker met it."""

    def sets(tag: str, delay: int) -> tuple[Any, ...]:
        return (tag, (), ((None, delay, "log", (tag, (), (), ())),), ())

    envelopes = [
        (Timed(entity), message)
        for entity in ("e", "f", "g")
        for message in (sets("go", 10), sets("m", 1))
    ]
    found = [Simulation.explore(envelopes, workers=workers) for workers in (2, 2, 3, 3)]
    assert len({(r.timer_gaps, r.timer_gap, r.timer_gap_trace) for r in found}) == 1
    first = found[0]
    assert first.timer_gaps > 1
    assert first.timer_gap_trace is not None
    assert len(first.timer_gap_trace) == 2  # a "go", then an "m" to the same entity
    Simulation.replay(envelopes, first.timer_gap_trace)
