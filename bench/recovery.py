"""Recovery: reopen a directory holding many accepted, unprocessed messages and drain it.

python -m bench.recovery write DIRECTORY COUNT    # accept COUNT messages, process none
python -m bench.recovery drain DIRECTORY          # prints seconds to reopen and drain
"""

from __future__ import annotations

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
    async with LocalDisk.open(directory, durability="flush") as eco:
        eco.runtime.pause()  # accept, never activate: everything stays pending

        async def sender(first: int) -> None:
            for number in range(first, count, SENDERS):
                await eco.send(Tally(number % ENTITIES), PAYLOAD)

        async with trio.open_nursery() as nursery:
            for first in range(SENDERS):
                nursery.start_soon(sender, first)


async def drain(directory: str) -> float:
    started = time.perf_counter()
    async with LocalDisk.open(directory) as eco:
        await eco.settle()
        elapsed = time.perf_counter() - started
        total = sum([await eco.state_of(Tally(n)) for n in range(ENTITIES)])
    print(f"{elapsed} {total}")
    return elapsed


def raw_scan(directory: str) -> float:
    """Seconds for plyvel alone to read every key and value of the directory once."""
    db = plyvel.DB(directory)
    started = time.perf_counter()
    for _ in db:
        pass
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def rows(quick: bool) -> list[Row]:
    count = 20_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as directory:
        progress(f"recovery: accepting {count:,} messages without processing them")
        subprocess.run(
            [sys.executable, "-m", "bench.recovery", "write", directory, str(count)], check=True
        )
        scan = raw_scan(directory)
        progress("recovery: reopening and draining in a fresh process")
        result = subprocess.run(
            [sys.executable, "-m", "bench.recovery", "drain", directory],
            capture_output=True,
            text=True,
            check=True,
        )
    elapsed, total = result.stdout.split()
    if int(total) != count:
        raise AssertionError(f"recovery processed {total} messages, expected {count}")
    return [
        Row(
            f"recovery: reopen + drain {count:,} pending messages",
            count / float(elapsed),
            "raw plyvel scan of the directory",
            count / scan,
            "msg/s",
            None,
        )
    ]


if __name__ == "__main__":
    if sys.argv[1] == "write":
        trio.run(write, sys.argv[2], int(sys.argv[3]))
    else:
        trio.run(drain, sys.argv[2])
