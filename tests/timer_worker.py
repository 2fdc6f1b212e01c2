"""A timer workload for the crash test, run as a child process and killed with SIGKILL.

    python tests/timer_worker.py DIRECTORY set     # set every timer, say "set", wait
    python tests/timer_worker.py DIRECTORY fire    # open when all are overdue, fire them

Time is a ManualClock: the ``set`` run is at time 0 and sets ``TIMERS`` timers
on ``ENTITIES`` entities, due between 1 and 100 s; every ``fire`` run opens at
time 1,000, when all of them are overdue, so they fire as soon as the store is
open. Each timer's message names it; its entity records what rang. On
standard output the worker says ``set`` once every timer is durable, and
``opened`` once the store is open.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import trio

from ecosystems import LocalDisk
from pachyderm import Entity, ManualClock, Outbox, after

ENTITIES = 200
TIMERS = 30_000
FIRED_AT = 1_000.0


class Clockwork(Entity[Any, list[int]]):
    """Sets a timer per ``("set", number)``; keeps the numbers of those that rang."""

    # The parent imports this module as tests.timer_worker, the worker runs it
    # as __main__: a fixed name makes both store the same entities.
    entity_name = "tests.crash.Clockwork"

    def init(self) -> list[int]:
        return []

    def activate(self, message: Any, state: list[int]) -> tuple[Outbox, list[int]]:
        match message:
            case ("set", number):
                return [after(1 + number % 100, self, ("rang", number))], state
            case ("rang", number):
                return [], [*state, number]
        raise AssertionError(f"unknown message {message!r}")


async def set_timers(directory: str) -> None:
    async with LocalDisk.open(directory, clock=ManualClock(0)) as eco:
        async with trio.open_nursery() as nursery:
            for sender in range(50):

                async def send(sender: int = sender) -> None:
                    for number in range(sender, TIMERS, 50):
                        await eco.send(Clockwork(number % ENTITIES), ("set", number))

                nursery.start_soon(send)
            await eco.settle()  # every timer set, and durable
        print("set", flush=True)
        time.sleep(60)  # killed here: nothing closes the store


async def fire(directory: str) -> None:
    async with LocalDisk.open(directory, clock=ManualClock(FIRED_AT)) as eco:
        print("opened", flush=True)
        await eco.settle()
    print("settled", flush=True)


def main(arguments: list[str]) -> None:
    directory, mode = arguments
    trio.run(set_timers if mode == "set" else fire, directory)


if __name__ == "__main__":
    main(sys.argv[1:])
