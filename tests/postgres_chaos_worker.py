"""A Postgres worker for the chaos test, run as a child process and killed, stopped, cut off.

    python tests/postgres_chaos_worker.py DSN

It serves as a worker until killed: open, serve until the runtime stops
(a lost lease, a failed write, a dropped connection), open again. It says
what happens on standard output (the test sends it to a file), one line each:

- ``opened <identity>``: an open succeeded;
- ``owned <partitions>``: what it owns, every ``REPORT`` seconds and on change;
- ``stopped <failure> <fenced> <text>``: the runtime stopped; ``failure`` is the type
  of its cause, ``fenced`` this open's count of commits refused by the epoch fence.

The entities form chains: the client sends ``sender * SENDER + n`` to the head
of a chain, and each link records it and forwards it to the next link, in
another partition; the tail sets a timer that echoes it to an ``Echo``. Every
entity's state is the list of messages it applied.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import trio

from ecosystems import Postgres
from ecosystems._postgres_storage import PostgresStorage, partition_of
from pachyderm import Entity, Outbox, after
from pachyderm import _layout as layout
from pachyderm._ecosystem import DEFAULT_ECOSYSTEM
from pachyderm._runtime import Runtime

PARTITIONS = 8
LEASE = 1.0
POLL = 0.1
HOPS = 3
"""Links per chain: a head, a middle and a tail, each in its own partition."""
SENDER = 10**6
"""A message is ``sender * SENDER + n``: the ``n``-th send (from 1) of a sender."""
TIMER = 0.2
"""Seconds after which the tail of a chain has each message echoed by a timer."""
REPORT = 0.25
LIFETIME = 300.0
"""Seconds after which a worker nobody killed stops by itself (if its parent died)."""


class Link(Entity[int, list[int]]):
    """Records every message, and forwards it to the next link of its chain.

    The tail sets a timer for each instead, which delivers it to its ``Echo``.
    """

    # The test imports this module as tests.postgres_chaos_worker, the worker runs
    # it as __main__: a fixed name makes both address the same entities.
    entity_name = "tests.postgres_chaos.Link"

    def init(self) -> list[int]:
        return []

    def activate(self, message: int, state: list[int]) -> tuple[Outbox, list[int]]:
        state.append(message)
        link = cast(int, self.id)
        if link % HOPS == HOPS - 1:
            return [after(TIMER, Echo(link), message)], state
        return [(Link(link + 1), message)], state


class Echo(Entity[int, list[int]]):
    """Records the messages its chain's tail's timers deliver."""

    entity_name = "tests.postgres_chaos.Echo"

    def init(self) -> list[int]:
        return []

    def activate(self, message: int, state: list[int]) -> tuple[Outbox, list[int]]:
        state.append(message)
        return [], state


def partition(link: int, partitions: int = PARTITIONS) -> int:
    """The partition of ``Link(link)``."""
    return partition_of(DEFAULT_ECOSYSTEM, layout.address_key(Link.entity_name, link), partitions)


def chains(count: int) -> list[int]:
    """Heads of the first ``count`` chains whose links are in pairwise different partitions."""
    heads: list[int] = []
    chain = 0
    while len(heads) < count:
        head = chain * HOPS
        if len({partition(head + hop) for hop in range(HOPS)}) == HOPS:
            heads.append(head)
        chain += 1
    return heads


async def serve(dsn: str) -> None:
    while True:
        runtime: Runtime | None = None
        storage: PostgresStorage | None = None
        try:
            async with Postgres.open(dsn, partitions=PARTITIONS, lease=LEASE, poll=POLL) as eco:
                runtime = eco.runtime
                storage = cast(PostgresStorage, runtime.storage)
                leases: Any = storage._leases
                print(f"opened {leases.identity}", flush=True)
                reported: list[int] | None = None
                waited = 0.0
                while not runtime.stopped:
                    owned = sorted(storage.owned)
                    if owned != reported or waited >= REPORT:
                        print(f"owned {','.join(map(str, owned))}", flush=True)
                        reported, waited = owned, 0.0
                    with trio.move_on_after(0.05):
                        await runtime.wait_stopped()
                    waited += 0.05
        except Exception as error:  # reported: the test decides which failures are allowed
            cause = error if runtime is None or runtime.failure is None else runtime.failure
            fenced = 0 if storage is None else storage.fenced_commits
            why = str(cause).replace("\n", " ")[:300]
            print(f"stopped {type(cause).__name__} {fenced} {why}", flush=True)
        else:
            print("stopped None 0", flush=True)
        await trio.sleep(0.05)


async def serve_for_a_while(dsn: str) -> None:
    with trio.move_on_after(LIFETIME):
        await serve(dsn)


def main(arguments: list[str]) -> None:
    (dsn,) = arguments
    trio.run(serve_for_a_while, dsn)


if __name__ == "__main__":
    main(sys.argv[1:])
