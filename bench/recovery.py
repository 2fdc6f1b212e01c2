"""Recovery: reopen a directory holding many accepted, unprocessed messages and drain it.

python -m bench.recovery write DIRECTORY COUNT    # accept COUNT messages, process none
python -m bench.recovery drain DIRECTORY COUNT    # prints seconds to reopen and drain

The writer accepts every message durably (fsync) with activations paused, so
all of them are still pending when it closes; the drainer is a fresh process.
"""

from __future__ import annotations

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

SENDERS = 200
ENTITIES = 10_000


async def write(directory: str, count: int) -> None:
    async with LocalDisk.open(directory, durability="fsync") as eco:
        eco.runtime.pause()  # accept, never activate: everything stays pending

        async def sender(first: int) -> None:
            for number in range(first, count, SENDERS):
                await eco.send(Tally(number % ENTITIES), PAYLOAD)

        async with trio.open_nursery() as nursery:
            for first in range(SENDERS):
                nursery.start_soon(sender, first)
        if eco.runtime.statistics["activations"] != 0:
            raise AssertionError(f"the writer activated: {eco.runtime.statistics}")


async def drain(directory: str, count: int) -> None:
    started = time.perf_counter()
    async with LocalDisk.open(directory, durability="fsync") as eco:
        await eco.settle()
        elapsed = time.perf_counter() - started
        activations = eco.runtime.statistics["activations"]
        total = sum([await eco.state_of(Tally(n)) for n in range(ENTITIES)])
    if activations != count or total != count:
        raise AssertionError(f"drained {activations} activations, total {total}; sent {count}")
    print(elapsed)


def raw_scan(directory: str) -> float:
    """Seconds for plyvel alone to read every key and value of the directory once."""
    db = plyvel.DB(directory)
    started = time.perf_counter()
    for _ in db:
        pass
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def _child(*arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench.recovery", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.recovery {arguments[0]} failed:\n{result.stderr}")
    return result.stdout


def once(count: int) -> tuple[float, float]:
    """(drain messages/s, raw scan items/s) for one fresh directory of ``count`` pending."""
    with tempfile.TemporaryDirectory() as directory:
        _child("write", directory, str(count))
        scan = raw_scan(directory)
        elapsed = float(_child("drain", directory, str(count)))
    return count / elapsed, count / scan


def rows(quick: bool) -> list[Row]:
    count = 20_000 if quick else 100_000
    runs = 3
    progress(
        f"recovery: {runs} x (child accepts {count:,} messages with activations paused; "
        f"a fresh child reopens and drains)"
    )
    results = [once(count) for _ in range(runs)]
    return [
        Row(
            f"recovery: reopen + drain {count:,} pending messages",
            statistics.median(rate for rate, _ in results),
            "raw plyvel scan of those messages",
            statistics.median(scan for _, scan in results),
            "msg/s",
            None,
        )
    ]


if __name__ == "__main__":
    if sys.argv[1] == "write":
        trio.run(write, sys.argv[2], int(sys.argv[3]))
    else:
        trio.run(drain, sys.argv[2], int(sys.argv[3]))
