"""Two worker processes and a client on one PostgreSQL database; one worker is killed.

    python examples/postgres_workers.py "postgresql:///app"

Starts two workers (this script with ``--worker``), which share the
partitions (the first hands half over to the second), sends from a client
(``worker=False``) to counters spread over the partitions, kills the first
worker with SIGKILL, and sends again: the other worker takes its partitions
over once their lease runs out, and no message is lost or applied twice.
Each counter ends at exactly the number of messages sent to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psycopg
import trio

from ecosystems import Postgres
from pachyderm import Ecosystem, Entity, Outbox

LEASE = 2.0  # seconds: how long a killed worker's partitions wait before others take them
COUNTERS = 8


class Visits(Entity[str, int]):
    """Counts the visits to one page."""

    entity_name = "examples.postgres_workers.Visits"

    def init(self) -> int:
        return 0

    def activate(self, message: str, state: int) -> tuple[Outbox, int]:
        return [], state + 1


def owners(dsn: str) -> dict[str, int]:
    """How many partitions each worker owns."""
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT owner, count(*) FROM pachyderm_partitions "
            "WHERE owner IS NOT NULL GROUP BY owner ORDER BY owner"
        ).fetchall()
    return {owner.split(":")[1]: count for owner, count in rows}


async def serve(dsn: str) -> None:
    async with Postgres.open(dsn, lease=LEASE, poll=0.1):
        print(f"worker {os.getpid()} serving", flush=True)
        await trio.sleep_forever()


def start_worker(dsn: str) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, __file__, dsn, "--worker"], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    worker.stdout.readline()  # "serving": it has taken its first share
    return worker


async def visit_all(client: Ecosystem, round_number: int) -> list[int]:
    return [
        await client.send_sync(Visits(f"page-{page}"), f"round {round_number}")
        for page in range(COUNTERS)
    ]


async def main(dsn: str) -> None:
    first = start_worker(dsn)
    second = start_worker(dsn)
    try:
        while len(owners(dsn)) < 2:  # the first hands half over within a few lease rounds
            time.sleep(0.1)
        print("partitions per worker:", sorted(owners(dsn).values()))
        async with Postgres.open(dsn, worker=False, poll=0.1) as client:
            print("round 1 states:", await visit_all(client, 1))
            first.send_signal(signal.SIGKILL)
            first.wait()
            print(f"killed worker {first.pid} (SIGKILL)")
            started = time.perf_counter()
            print("round 2 states:", await visit_all(client, 2))
            print(f"served again after {time.perf_counter() - started:.1f} s (lease {LEASE} s)")
            print("partitions per worker:", sorted(owners(dsn).values()))
    finally:
        for worker in (first, second):
            if worker.poll() is None:
                worker.send_signal(signal.SIGINT)  # a clean close hands its partitions back
                worker.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[2:] == ["--worker"]:
        with contextlib.suppress(KeyboardInterrupt):  # closed cleanly: partitions handed back
            trio.run(serve, sys.argv[1])
    else:
        trio.run(main, sys.argv[1])
