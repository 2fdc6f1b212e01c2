"""A workload for the crash test, run as a child process and killed with SIGKILL.

    python tests/crash_worker.py DIRECTORY LOG_DIRECTORY RUN DURABILITY

``TASKS`` trio tasks each send, one message at a time, to ``Forwarder``
entities, which forward every message to their ``Receiver`` through the
outbox. Before a send, a task appends ``"<entity> <message>"`` to
``attempts-<run>-<task>``; once the send returned, it appends the same line to
``acks-<run>-<task>``. Each line is flushed to the OS before the task goes on,
and the OS keeps what it was given when a process is killed: so the logs say,
for every task, which messages the store must hold (the acknowledged ones) and
the one it may hold (the last attempt, if it has no acknowledgement).

Every entity keeps a ledger: for each sender (a task of a run), how many of its
messages it applied and the number of the last. A lost message, one applied
twice, or one applied out of order all show in it.

On standard output the worker says ``opening`` before it opens the store,
``opened <n>`` once it has (``n``: the accepted, unprocessed messages the store
held), and ``sending`` once a first send was acknowledged.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import sys
from pathlib import Path

import structlog
import trio
from structlog.testing import capture_logs

from ecosystems import LocalDisk
from pachyderm import Entity, Outbox

ENTITIES = 20
TASKS = 32
SEND_SYNC_SHARE = 0.2
HOT_SHARE = 0.75
"""The share of sends that go to entity 0 (see :func:`pick_entity`)."""
SENDER = 10**8
"""A message is ``sender * SENDER + number``: the ``number``-th send (from 1) of a sender."""
LIFETIME = 120.0
"""Seconds after which a worker nobody killed stops by itself (if its parent died)."""

Ledger = dict[int, list[int]]
"""For each sender: ``[how many of its messages were applied, the number of the last]``."""


def sender_of(run: int, task: int) -> int:
    return run * TASKS + task


def record(message: int, ledger: Ledger) -> Ledger:
    sender, number = divmod(message, SENDER)
    count, _ = ledger.get(sender, (0, 0))
    ledger[sender] = [count + 1, number]
    return ledger


class Forwarder(Entity[int, Ledger]):
    """Records its messages and forwards each to its Receiver: the "A" of a pair."""

    # The parent imports this module as tests.crash_worker, the worker runs it
    # as __main__: a fixed name makes both store the same entities.
    entity_name = "tests.crash.Forwarder"

    def init(self) -> Ledger:
        return {}

    def activate(self, message: int, state: Ledger) -> tuple[Outbox, Ledger]:
        return [(Receiver(self.id), message)], record(message, state)


class Receiver(Entity[int, Ledger]):
    """Records what its Forwarder forwarded: the "B" of a pair."""

    entity_name = "tests.crash.Receiver"

    def init(self) -> Ledger:
        return {}

    def activate(self, message: int, state: Ledger) -> tuple[Outbox, Ledger]:
        return [], record(message, state)


def pick_entity(rng: random.Random) -> int:
    """Mostly entity 0: its inbox backs up, so commits hold accepted, unprocessed messages.

    With sends spread evenly, every message is processed in the commit that
    accepts it, and a restart never has pending messages to recover.
    """
    return 0 if rng.random() < HOT_SHARE else rng.randrange(ENTITIES)


async def drive(directory: str, logs: Path, run: int, durability: str) -> None:
    print("opening", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        try:
            with capture_logs() as events:
                eco = await stack.enter_async_context(
                    LocalDisk.open(directory, durability=durability)
                )
        finally:
            structlog.reset_defaults()  # capture_logs leaves structlog "configured"
        (opened,) = (event for event in events if event["event"] == "store.opened")
        print(f"opened {opened['pending_messages']}", flush=True)
        sending = trio.Event()

        async def task(number: int) -> None:
            rng = random.Random(f"{run}-{number}")
            sender = sender_of(run, number)
            with (
                open(logs / f"attempts-{run}-{number}", "a") as attempts,
                open(logs / f"acks-{run}-{number}", "a") as acks,
            ):
                for count in itertools.count(1):
                    entity = pick_entity(rng)
                    message = sender * SENDER + count
                    line = f"{entity} {message}\n"
                    attempts.write(line)
                    attempts.flush()
                    if rng.random() < SEND_SYNC_SHARE:
                        await eco.send_sync(Forwarder(entity), message)
                    else:
                        await eco.send(Forwarder(entity), message)
                    acks.write(line)
                    acks.flush()
                    sending.set()

        with trio.move_on_after(LIFETIME):
            async with trio.open_nursery() as nursery:
                for number in range(TASKS):
                    nursery.start_soon(task, number)
                await sending.wait()
                print("sending", flush=True)


def main(arguments: list[str]) -> None:
    directory, logs, run, durability = arguments
    trio.run(drive, directory, Path(logs), int(run), durability)


if __name__ == "__main__":
    main(sys.argv[1:])
