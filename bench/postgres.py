"""Postgres: the ecosystem against raw single-row INSERT + COMMIT on the same server.

The server is a throwaway cluster started here (``tests/postgres_server.py``:
the machine's PostgreSQL binaries, fsync on, a unix socket), or
``$PACHYDERM_TEST_DSN``. Each round uses a fresh database. Without a server
the rows are left out, saying why.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import trio
from psycopg.conninfo import make_conninfo

from bench._entities import Busy, Tally
from bench._measure import PAYLOAD, RUNS, Row, interleaved, progress
from bench.throughput import (
    ENTITIES,
    SENDERS,
    THREADS,
    send_concurrently,
    sequential_round_trips,
    threads_round_trips,
)
from ecosystems import Postgres
from ecosystems._postgres_storage import partition_of
from pachyderm._layout import address_key
from pachyderm._shell import ShellEcosystem
from tests.postgres_server import HOW_TO_GET_ONE, running_server


class Databases:
    """Fresh databases on one server, dropped when the benchmark is done."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.made: list[str] = []

    def fresh(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.base, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        self.made.append(name)
        return make_conninfo(self.base, dbname=name)

    def drop_all(self) -> None:
        with psycopg.connect(self.base, autocommit=True) as connection:
            for name in self.made:
                connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def raw_inserts(dsn: str, count: int) -> float:
    """Rows per second, one ``INSERT`` and ``COMMIT`` each, on one connection."""
    with psycopg.connect(dsn) as connection:
        connection.execute("CREATE TABLE raw (id bigint PRIMARY KEY, payload bytea)")
        connection.commit()
        started = time.perf_counter()
        for number in range(count):
            connection.execute("INSERT INTO raw VALUES (%s, %s)", (number, PAYLOAD))
            connection.commit()
        return count / (time.perf_counter() - started)


def concurrent_send_sync(dsn: str, count: int) -> float:
    """One worker process, 200 trio tasks awaiting send_sync to 1,000 entities."""

    async def run() -> float:
        async with Postgres.open(dsn) as eco:
            rate = await send_concurrently(eco, count, verb="send_sync")
            if eco.runtime.statistics["activations"] != count:
                raise AssertionError(f"expected {count} activations: {eco.runtime.statistics}")
            return rate

    return trio.run(run)


def new_entities_send_sync(dsn: str, count: int) -> float:
    """One worker process, 200 trio tasks awaiting send_sync, each message to an entity
    never sent to before (a new user, a new order): its state is still to be read."""

    async def run() -> float:
        async with Postgres.open(dsn) as eco:
            send_sync = eco.send_sync

            async def sender(first: int) -> None:
                for number in range(first, count, SENDERS):
                    await send_sync(Tally(f"new-{number}"), PAYLOAD)

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for first in range(SENDERS):
                    nursery.start_soon(sender, first)
            await eco.settle()
            rate = count / (time.perf_counter() - started)
            if eco.runtime.statistics["activations"] != count:
                raise AssertionError(f"expected {count} activations: {eco.runtime.statistics}")
            return rate

    return trio.run(run)


def sequential_send_sync(dsn: str, count: int) -> float:
    """Round trips per second of the shell face's send_sync, one after another."""
    try:
        return sequential_round_trips(Postgres.connect(dsn), count)
    finally:
        Postgres.close()


def threads_send_sync(dsn: str, per_thread: int) -> float:
    """Round trips per second of the shell face's send_sync from many threads (a web
    server's request threads), in a process that is the only worker."""
    try:
        return threads_round_trips(Postgres.connect(dsn), per_thread)
    finally:
        Postgres.close()


@contextmanager
def workers(dsn: str, count: int, lease: float = 2.0) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` worker processes, each holding its share of the partitions."""
    started = []
    try:
        for _ in range(count):
            worker = subprocess.Popen(
                [sys.executable, "-m", "bench._postgres_worker", dsn, str(lease)],
                stdout=subprocess.PIPE,
                text=True,
            )
            started.append(worker)
            assert worker.stdout is not None
            worker.stdout.readline()  # serving
        # Shared out within a few leases; a loaded machine (a test run) takes longer.
        deadline = time.monotonic() + 90
        while len(_owners(dsn)) < count or max(_owners(dsn).values()) > -(-64 // count):
            ended = [worker.returncode for worker in started if worker.poll() is not None]
            if ended or time.monotonic() > deadline:
                raise AssertionError(
                    f"partitions not shared out among {count} workers: owners {_owners(dsn)}, "
                    f"exit codes of workers that ended: {ended}"
                )
            time.sleep(0.1)
        yield started
    finally:
        for worker in started:
            if worker.poll() is None:
                worker.send_signal(signal.SIGINT)
        for worker in started:
            worker.wait(timeout=30)


def _owners(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as connection:
        return dict(
            connection.execute(
                "SELECT owner, count(*) FROM pachyderm_partitions "
                "WHERE owner IS NOT NULL GROUP BY owner"
            ).fetchall()
        )


def client_send_sync(
    dsn: str, count: int, worker_processes: int, entity: type[Tally] = Tally
) -> float:
    """A client process's 200 trio send_sync senders, served by worker processes."""

    async def run() -> float:
        async with Postgres.open(dsn, worker=False, poll=0.1) as client:
            return await send_concurrently(client, count, verb="send_sync", entity=entity)

    with workers(dsn, worker_processes):
        return trio.run(run)


def _shell_client(
    dsn: str, worker_processes: int, measure: Callable[[ShellEcosystem], float]
) -> float:
    """``measure`` of a client process's shell face, served by worker processes."""
    with workers(dsn, worker_processes):
        try:
            return measure(Postgres.connect(dsn, worker=False))
        finally:
            Postgres.close()


def client_threads_send_sync(dsn: str, per_thread: int, worker_processes: int) -> float:
    """A client process's threads calling shell send_sync (a web server's request threads),
    served by worker processes."""
    return _shell_client(dsn, worker_processes, lambda eco: threads_round_trips(eco, per_thread))


def client_sequential_send_sync(dsn: str, count: int) -> float:
    """Round trips per second of a client process's shell-face send_sync, one after
    another, served by a worker process (a web app's process, a request at a time)."""
    return _shell_client(dsn, 1, lambda eco: sequential_round_trips(eco, count))


def takeover_seconds(dsn: str, lease: float = 2.0) -> float:
    """Of two workers, SIGKILL the one running an entity: seconds until a client's
    send_sync to that entity returns (served by the other)."""
    entity = Tally("taken-over")
    p = partition_of("default", address_key(entity.entity_name, entity.id), 64)

    async def run(running: list[subprocess.Popen[str]]) -> float:
        async with Postgres.open(dsn, worker=False, poll=0.1) as client:
            await client.send_sync(entity, PAYLOAD)
            with psycopg.connect(dsn) as connection:
                (owner,) = connection.execute(  # type: ignore[misc]
                    "SELECT owner FROM pachyderm_partitions WHERE p = %s", (p,)
                ).fetchone()
            [victim] = [w for w in running if owner.split(":")[1] == str(w.pid)]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            started = time.perf_counter()
            await client.send_sync(entity, PAYLOAD)
            return time.perf_counter() - started

    with workers(dsn, 2, lease) as running:
        return trio.run(run, running)


def rows(quick: bool) -> list[Row]:
    with running_server() as base:
        if base is None:
            progress(f"Postgres rows left out: {HOW_TO_GET_ONE}")
            return []
        databases = Databases(base)
        try:
            return _rows(quick, databases.fresh)
        finally:
            databases.drop_all()


def _rows(quick: bool, fresh: Callable[[], str]) -> list[Row]:
    runs = 3 if quick else RUNS
    inserts = 500 if quick else 2_000
    messages = 5_000 if quick else 30_000
    round_trips = 300 if quick else 1_000
    per_thread = 20 if quick else 100
    busy = 1_000 if quick else 6_000
    progress(
        f"postgres: raw INSERT+COMMIT x {inserts:,}; {SENDERS} trio send_sync senders x "
        f"{messages:,} (and x {messages // 2:,} to new entities); shell send_sync x "
        f"{round_trips:,}; {THREADS} threads' shell send_sync x {per_thread:,} each; "
        f"{runs} rounds, interleaved"
    )
    measured = interleaved(
        runs,
        {
            "raw": lambda: raw_inserts(fresh(), inserts),
            "concurrent": lambda: concurrent_send_sync(fresh(), messages),
            "new": lambda: new_entities_send_sync(fresh(), messages // 2),
            "sequential": lambda: sequential_send_sync(fresh(), round_trips),
            "threads": lambda: threads_send_sync(fresh(), per_thread),
        },
    )
    progress(
        f"postgres: a client's {SENDERS} send_sync senders x {messages // 2:,} (and x "
        f"{busy:,} with handlers of 0.2 ms), served by 1 and by 3 worker processes; "
        f"{THREADS} threads' shell send_sync x {per_thread:,} "
        f"each, the same; a client's sequential send_sync x {round_trips // 2:,}; "
        f"takeover after SIGKILL (lease 2 s); {runs} rounds"
    )
    spread = interleaved(
        runs,
        {
            "one": lambda: client_send_sync(fresh(), messages // 2, 1),
            "three": lambda: client_send_sync(fresh(), messages // 2, 3),
            "busy_one": lambda: client_send_sync(fresh(), busy, 1, Busy),
            "busy_three": lambda: client_send_sync(fresh(), busy, 3, Busy),
            "threads_one": lambda: client_threads_send_sync(fresh(), per_thread, 1),
            "threads_three": lambda: client_threads_send_sync(fresh(), per_thread, 3),
            "client_sequential": lambda: client_sequential_send_sync(fresh(), round_trips // 2),
        },
    )
    takeovers = sorted(takeover_seconds(fresh()) for _ in range(runs))
    raw_name = "raw psycopg INSERT+COMMIT, 1 by 1"
    return [
        Row(
            f"Postgres, 1 worker, {SENDERS} trio send_sync senders -> {ENTITIES:,} entities",
            measured["concurrent"],
            raw_name,
            measured["raw"],
            "msg/s",
            5.0,
        ),
        Row(
            f"Postgres, 1 worker, {SENDERS} trio send_sync senders -> a new entity each",
            measured["new"],
            raw_name,
            measured["raw"],
            "msg/s",
            None,
        ),
        Row(
            "Postgres, sequential shell send_sync",
            measured["sequential"],
            raw_name,
            measured["raw"],
            "msg/s",
            0.5,
        ),
        Row(
            f"Postgres, 1 worker, {THREADS} threads calling shell send_sync",
            measured["threads"],
            raw_name,
            measured["raw"],
            "msg/s",
            None,
        ),
        Row(
            "Postgres, a client process's sequential shell send_sync, 1 worker process",
            spread["client_sequential"],
            raw_name,
            measured["raw"],
            "msg/s",
            None,
        ),
        Row(
            f"Postgres, client's {SENDERS} send_sync senders, 3 worker processes",
            spread["three"],
            "same, 1 worker process",
            spread["one"],
            "msg/s",
            1.0,
        ),
        Row(
            f"Postgres, client's {SENDERS} send_sync senders, handlers of 0.2 ms, "
            f"3 worker processes",
            spread["busy_three"],
            "same, 1 worker process",
            spread["busy_one"],
            "msg/s",
            None,
        ),
        Row(
            f"Postgres, client's {THREADS} threads calling shell send_sync, 3 worker processes",
            spread["threads_three"],
            "same, 1 worker process",
            spread["threads_one"],
            "msg/s",
            None,
        ),
        Row(
            "Postgres, SIGKILLed worker's entity served again (lease 2 s)",
            takeovers[len(takeovers) // 2],
            "lease + 1 s",
            3.0,
            "s",
            1.0,
            at_most=True,
        ),
    ]
