"""Activation rate with many stored entities, and the memory it takes to touch them all.

Run by the benchmark table in a child process, so that its peak RSS is its own:

    python -m bench.scale STORED MESSAGES RUNS
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import plyvel
import trio

from bench._entities import Tally
from bench._measure import PAYLOAD, Row, progress
from ecosystems import LocalDisk
from pachyderm import Ecosystem

SENDERS = 200
HOT = 1_000
"""The working set: the entities a measurement sends to, resident in memory."""


async def _send(eco: Ecosystem, targets: list[int]) -> float:
    """Messages per second: SENDERS tasks send one message to each target, then settle."""

    async def sender(first: int) -> None:
        for index in range(first, len(targets), SENDERS):
            await eco.send(Tally(targets[index]), PAYLOAD)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(SENDERS):
            nursery.start_soon(sender, first)
    await eco.settle()
    return len(targets) / (time.perf_counter() - started)


def _raw_puts(directory: str, count: int) -> float:
    """Puts per second of plyvel ``put`` without sync, one per key: what populating compares to."""
    db = plyvel.DB(directory, create_if_missing=True)
    started = time.perf_counter()
    for number in range(count):
        db.put(b"entity-%d" % number, PAYLOAD)
    elapsed = time.perf_counter() - started
    db.close()
    return count / elapsed


def _peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB.

    ``VmHWM`` belongs to this program's own address space; ``ru_maxrss`` also
    remembers the parent's size at the fork that preceded exec, so it is only
    the fallback.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def _populate(directory: str, count: int) -> float:
    """Send one message to each of ``count`` new entities (durability "flush"); msg/s."""
    async with LocalDisk.open(directory, durability="flush") as eco:
        rate = await _send(eco, list(range(count)))
        if eco.runtime.statistics["activations"] != count:
            raise AssertionError(f"populating: {eco.runtime.statistics}")
    return rate


async def measure(stored: int, messages: int, runs: int) -> dict[str, float]:
    """Populate ``stored`` entities, then time hot and cold sends against a 1,000-entity store.

    Both stores are open in this process and measured in alternation (fsync),
    so that the machine's drift affects both alike: hot sends go to a working
    set of 1,000 entities in each store; cold sends go to random entities
    among all ``stored``, most of them read back from LevelDB.
    """
    rng = random.Random(stored)
    rss_before = _peak_rss_mb()
    with (
        tempfile.TemporaryDirectory() as big_directory,
        tempfile.TemporaryDirectory() as small_directory,
    ):
        started = time.perf_counter()
        populate = await _populate(big_directory, stored)
        populate_seconds = time.perf_counter() - started
        await _populate(small_directory, HOT)
        rates: dict[str, list[float]] = {"hot": [], "small": [], "cold": []}
        async with (
            LocalDisk.open(big_directory, durability="fsync") as big,
            LocalDisk.open(small_directory, durability="fsync") as small,
        ):
            await _send(big, list(range(HOT)))  # the working sets come into memory
            await _send(small, list(range(HOT)))
            rounds = [
                ("hot", big, HOT),
                ("small", small, HOT),
                ("cold", big, stored),
            ]
            for round_number in range(runs):
                shift = round_number % len(rounds)
                for name, eco, among in rounds[shift:] + rounds[:shift]:
                    targets = [rng.randrange(among) for _ in range(messages)]
                    rates[name].append(await _send(eco, targets))
            if await big.state_of(Tally(0)) < 2 or await small.state_of(Tally(0)) < 2:
                raise AssertionError("entity 0 lost a message")
    rss_mb = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as directory:
        raw = _raw_puts(directory, min(stored, 200_000))
    return {
        "populate": populate,
        "populate_seconds": populate_seconds,
        "raw_puts": raw,
        "hot": statistics.median(rates["hot"]),
        "small": statistics.median(rates["small"]),
        "cold": statistics.median(rates["cold"]),
        "rss_mb": rss_mb,
        "rss_before_mb": rss_before,
    }


def in_child(stored: int, messages: int, runs: int) -> dict[str, float]:
    """:func:`measure` in a fresh interpreter, so that its peak RSS is its own."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", str(stored), str(messages), str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.scale {stored} failed:\n{result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def rows(quick: bool) -> list[Row]:
    stored = 100_000 if quick else 1_000_000
    messages = 10_000 if quick else 40_000
    runs = 3
    progress(
        f"scale: child process populates {stored:,} entities (a while), then {runs} rounds of "
        f"{messages:,} messages to each of: 1,000 of them, a 1,000-entity store, random ones"
    )
    figures = in_child(stored, messages, runs)
    progress(
        f"scale: populated {stored:,} entities in {figures['populate_seconds']:.1f} s "
        f"({figures['populate']:,.0f}/s); peak RSS {figures['rss_mb']:.0f} MB"
    )
    return [
        Row(
            f"LocalDisk fsync, working set of 1,000 among {stored:,} stored",
            figures["hot"],
            "same, 1,000 stored",
            figures["small"],
            "msg/s",
            0.7,
        ),
        Row(
            f"LocalDisk fsync, random among {stored:,} stored (cold reads)",
            figures["cold"],
            "working set, 1,000 stored",
            figures["small"],
            "msg/s",
            None,
        ),
        Row(
            f"populate {stored:,} entities, flush, {SENDERS} senders "
            f"({figures['populate_seconds']:.0f} s)",
            figures["populate"],
            "raw plyvel put(), no sync, 1 by 1",
            figures["raw_puts"],
            "msg/s",
            None,
        ),
        Row(
            f"peak RSS, process that touched {stored:,} entities "
            f"(at start: {figures['rss_before_mb']:.0f} MB)",
            figures["rss_mb"],
            "limit",
            500.0,
            "MB",
            1.0,
            at_most=True,
        ),
    ]


if __name__ == "__main__":
    figures = trio.run(measure, int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(figures))
