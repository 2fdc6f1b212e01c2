"""Activation rate with many stored entities, and the memory it takes to touch them all.

Run by the benchmark table in a child process per store size, so that each
peak RSS is its own:

    python -m bench.scale STORED MESSAGES
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time

import trio

from bench._entities import Tally
from bench._measure import PAYLOAD, Row, progress
from ecosystems import LocalDisk
from pachyderm import Ecosystem

SENDERS = 200
HOT = 1_000
"""The working set: the entities a measurement sends to, resident in memory."""


async def _send(eco: Ecosystem, targets: list[int]) -> float:
    async def sender(first: int) -> None:
        for index in range(first, len(targets), SENDERS):
            await eco.send(Tally(targets[index]), PAYLOAD)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(SENDERS):
            nursery.start_soon(sender, first)
    await eco.settle()
    return len(targets) / (time.perf_counter() - started)


async def measure(stored: int, messages: int) -> dict[str, float]:
    """Populate ``stored`` entities, then time hot (working-set) and cold (random) sends."""
    rng = random.Random(stored)
    with tempfile.TemporaryDirectory() as directory:
        async with LocalDisk.open(directory, durability="flush") as eco:
            populate = await _send(eco, list(range(stored)))
        touched_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        async with LocalDisk.open(directory) as eco:  # durable from here on
            await _send(eco, list(range(HOT)))  # the working set comes into memory
            hot = await _send(eco, [rng.randrange(HOT) for _ in range(messages)])
            cold = await _send(eco, [rng.randrange(stored) for _ in range(messages)])
            assert await eco.state_of(Tally(0)) >= 2
    return {"populate": populate, "hot": hot, "cold": cold, "rss_mb": touched_rss}


def in_child(stored: int, messages: int) -> dict[str, float]:
    """:func:`measure` in a fresh interpreter, so that its peak RSS is its own."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", str(stored), str(messages)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def rows(quick: bool) -> list[Row]:
    big = 100_000 if quick else 1_000_000
    messages = 20_000 if quick else 40_000
    progress(f"scale: {HOT:,} stored entities, {messages:,} messages")
    small_figures = in_child(HOT, messages)
    progress(f"scale: {big:,} stored entities (populating takes a while), {messages:,} messages")
    big_figures = in_child(big, messages)
    progress(f"scale: populated {big:,} entities at {big_figures['populate']:,.0f}/s")
    return [
        Row(
            f"LocalDisk fsync, working set of 1,000 among {big:,} stored",
            big_figures["hot"],
            "same, 1,000 stored",
            small_figures["hot"],
            "msg/s",
            0.7,
        ),
        Row(
            f"LocalDisk fsync, random among {big:,} stored (cold reads)",
            big_figures["cold"],
            "working set, 1,000 stored",
            small_figures["hot"],
            "msg/s",
            None,
        ),
        Row(
            f"peak RSS after touching {big:,} distinct entities",
            big_figures["rss_mb"],
            "limit",
            500.0,
            "MB",
            1.0,
            at_most=True,
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(trio.run(measure, int(sys.argv[1]), int(sys.argv[2]))))
