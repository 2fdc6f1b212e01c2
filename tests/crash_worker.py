"""A workload for the crash test, run as a child process and killed with SIGKILL.

    python tests/crash_worker.py DIRECTORY LOG_DIRECTORY SEED

Many trio tasks send to ``Forwarder`` entities, which forward every message
to their ``Receiver`` through the outbox. Each task writes a line to
``attempts-<task>`` before a send and to ``acks-<task>`` once it returned, so
the parent can check every entity against what was attempted and acknowledged.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ecosystems import LocalDisk  # noqa: E402
from pachyderm import Entity, Outbox  # noqa: E402

ENTITIES = 20
TASKS = 16


class Forwarder(Entity[Any, int]):
    """Counts its messages and forwards each to its Receiver."""

    entity_name = "tests.crash.Forwarder"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [(Receiver(self.id), message)], state + 1


class Receiver(Entity[Any, int]):
    """Counts what its Forwarder forwarded."""

    entity_name = "tests.crash.Receiver"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        return [], state + 1


async def drive(directory: str, logs: Path, seed: int) -> None:
    async with LocalDisk.open(directory) as eco:

        async def task(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            with (
                open(logs / f"attempts-{seed}-{number}", "a", buffering=1) as attempts,
                open(logs / f"acks-{seed}-{number}", "a", buffering=1) as acks,
            ):
                while True:
                    target = rng.randrange(ENTITIES)
                    attempts.write(f"{target}\n")
                    if rng.random() < 0.2:
                        await eco.send_sync(Forwarder(target), number)
                    else:
                        await eco.send(Forwarder(target), number)
                    acks.write(f"{target}\n")

        print("ready", flush=True)
        async with trio.open_nursery() as nursery:
            for number in range(TASKS):
                nursery.start_soon(task, number)


if __name__ == "__main__":
    trio.run(drive, sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
