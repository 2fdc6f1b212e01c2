"""Exploration against the original naive exhaust: every message branched on, at every step."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench._entities import Bits, Hop, Tally
from bench._measure import Row, interleaved, progress
from pachyderm import Entity, Outbox
from simulation import Simulation
from simulation._network import initial_world
from simulation._step import Action, step
from simulation._world import World


class Journal(Entity[Any, list[Any]]):
    """Order-sensitive: its state is the list of messages in arrival order."""

    entity_name = "bench.Journal"

    def init(self) -> list[Any]:
        return []

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        return [], [*state, message]


def naive_exhaust(envelopes: list[tuple[Any, Any]]) -> tuple[int, int, set[bytes]]:
    """The original algorithm: every in-flight message at every step, no memory of worlds.

    Returns (complete orders walked, worlds visited, distinct final worlds).
    """
    finals: set[bytes] = set()
    visited = 0
    orders = 0

    def branch(world: World) -> None:
        nonlocal visited, orders
        visited += 1
        if world.quiescent:
            orders += 1
            finals.add(world.outcome().canonical)
            return
        for item in world.envelopes:
            branch(step(world, Action("deliver", item), "unordered")[0])

    branch(initial_world(envelopes, None, "unordered", 0, 0))
    return orders, visited, finals


def rows(quick: bool) -> list[Row]:
    entities = 2 if quick else 3
    system = [(Journal(e), (e, m)) for e in range(entities) for m in range(3)]
    progress(f"simulation: naive exhaust of {entities} entities x 3 order-sensitive messages")
    started = time.perf_counter()
    orders, naive_worlds, naive_finals = naive_exhaust(system)
    naive_seconds = time.perf_counter() - started
    progress(f"simulation: naive walked {orders:,} orders in {naive_seconds:.1f} s; now ours")
    result = Simulation.explore(system)
    if {w.canonical for w in result.final_worlds} != naive_finals:
        raise AssertionError("the search and the naive exhaust disagree on the final worlds")

    counters = [(Tally(k), "tick") for k in range(4) for _ in range(9 if not quick else 5)]
    few = [(Tally(k), "tick") for k in range(4) for _ in range(2)]  # 2,520 orders to walk
    progress(
        f"simulation: {len(counters)} messages to 4 independent counters, against the naive "
        f"walk of {len(few)}; 3 rounds, interleaved"
    )
    rates, naive_rates = [], []
    for _ in range(3):
        independent = Simulation.explore(counters)
        rates.append(independent.unique_states / independent.seconds)
        started = time.perf_counter()
        _, walked, _ = naive_exhaust(few)
        naive_rates.append(walked / (time.perf_counter() - started))
    rates.sort()
    naive_rates.sort()
    name = f"{entities} entities x 3 order-sensitive messages"
    return [
        *_rows(
            result, orders, naive_seconds, naive_worlds, independent, rates, naive_rates, few, name
        ),
        *scaling(quick),
        parallel(quick),
    ]


def parallel(quick: bool) -> Row:
    """One search with two worker processes against the same search in one process.

    Five order-sensitive entities with three messages each: 16**5 = 1,048,576
    worlds, 7,776 final (quick: three entities, 4,096 worlds). The two take turns over
    three rounds (medians), and must find the same worlds and final worlds.
    """
    entities = 3 if quick else 5
    system = [(Journal(e), (e, m)) for e in range(entities) for m in range(3)]
    progress(
        f"simulation: {16**entities:,} worlds with workers=2 and workers=1, taking turns, 3 rounds"
    )
    results: dict[int, list[Any]] = {1: [], 2: []}

    def measure(workers: int) -> Callable[[], float]:
        def once() -> float:
            result = Simulation.explore(system, workers=workers)
            results[workers].append(result)
            return float(result.unique_states / result.seconds)

        return once

    rates = interleaved(3, {"one": measure(1), "two": measure(2)})
    one, two = results[1][0], results[2][0]
    if (one.unique_states, len(one.final_worlds)) != (two.unique_states, len(two.final_worlds)):
        raise AssertionError("the parallel search and the single-process one disagree")
    if {w.canonical for w in one.final_worlds} != {w.canonical for w in two.final_worlds}:
        raise AssertionError("the parallel search and the single-process one disagree on finals")
    return Row(
        f"parallel search, workers=2 ({one.unique_states:,} worlds): unique worlds/s",
        rates["two"],
        "same search, workers=1",
        rates["one"],
        "worlds/s",
        1.6,  # issue "Exploration at scale": >= 1.6x on this 2-core machine
    )


def scaling(quick: bool) -> list[Row]:
    """Worlds/s as worlds grow (messages in flight), the 4 x 4 search, memory per world.

    Tokens passed round a ring of four entities keep the same number of
    messages in flight all through a search: searches of 4 to 32 tokens, each
    cut at the same budget of worlds, give worlds/s against world size (flat
    if a step's cost does not grow with the world). Then the issue's fixed
    search, 4 entities x 4 messages (65,536 worlds), and memory: tracemalloc's
    peak over a search cut at a budget of worlds.
    """
    sizes = (4, 8, 16, 32)
    budget = 5_000 if quick else 30_000
    progress(
        f"simulation: searches of {budget:,} worlds with {', '.join(map(str, sizes))} "
        f"messages in flight, 3 rounds each; then 4 entities x 4 messages, 3 rounds"
    )
    rates: dict[int, float] = {}
    for size in sizes:
        ring = [(Hop(token % 4), (token, 16)) for token in range(size)]
        figures = []
        for _ in range(3):
            result = Simulation.explore(ring, max_worlds=budget)
            figures.append(result.unique_states / result.seconds)
        rates[size] = sorted(figures)[1]
    bits = [(Bits(e), 1 << m) for e in range(4) for m in range(2 if quick else 4)]
    figures = []
    for _ in range(3):
        grid = Simulation.explore(bits)
        figures.append(grid.unique_states / grid.seconds)
    system = [(Journal(e), (e, m)) for e in range(4) for m in range(4)]
    gc.collect()
    tracemalloc.start()
    result = Simulation.explore(system, max_worlds=20_000 if not quick else 5_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    smallest = sizes[0]
    rows = [
        Row(
            f"unique worlds/s, {size} messages in flight ({budget:,} worlds)",
            rates[size],
            f"same, {smallest} messages in flight",
            rates[smallest],
            "worlds/s",
            None,  # to be flat: issue "Exploration at scale"
        )
        for size in sizes[1:]
    ]
    rows.append(
        Row(
            f"unique worlds/s, 4 entities x {len(bits) // 4} messages ({grid.unique_states:,} "
            f"worlds, {grid.handler_calls / grid.unique_states:.3f} handler calls per world)",
            sorted(figures)[1],
            "target",
            TARGET_WORLDS_PER_SECOND,
            "worlds/s",
            1.0,
        )
    )
    rows.append(
        Row(
            f"memory per stored world (peak over {result.unique_states:,} worlds, 16 in flight)",
            peak / result.unique_states,
            "10 million worlds in 4 GB",
            4e9 / 1e7,
            "bytes",
            None,
            at_most=True,
        )
    )
    return rows


TARGET_WORLDS_PER_SECOND = 100_000  # issue "Exploration at scale", on one process


def _rows(
    result: Any,
    orders: int,
    naive_seconds: float,
    naive_worlds: int,
    independent: Any,
    rates: list[float],
    naive_rates: list[float],
    few: list[Any],
    name: str,
) -> list[Row]:
    return [
        Row(
            f"exhaust, {name}: time",
            result.seconds * 1000,
            f"naive exhaust ({orders:,} orders)",
            naive_seconds * 1000,
            "ms",
            None,
        ),
        Row(
            f"exhaust, {name}: worlds visited",
            result.unique_states,
            "naive: worlds visited",
            naive_worlds,
            "worlds",
            None,
        ),
        Row(
            f"unique worlds/s, trivial handlers ({independent.unique_states:,} worlds)",
            rates[1],
            f"naive walk's worlds/s, same handlers ({len(few)} messages)",
            naive_rates[1],
            "worlds/s",
            None,
        ),
        Row(
            f"unique worlds/s, trivial handlers ({independent.unique_states:,} worlds)",
            rates[1],
            "target",
            TARGET_WORLDS_PER_SECOND,
            "worlds/s",
            1.0,  # issue "Exploration at scale"
        ),
        Row(
            "handler calls per unique world, independent entities",
            independent.handler_calls / independent.unique_states * 100,
            "limit",
            110,
            "calls per 100 worlds",
            1.0,
            at_most=True,
        ),
    ]
