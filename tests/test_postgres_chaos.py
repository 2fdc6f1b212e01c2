"""Chaos on the Postgres ecosystem: real worker processes, real signals, a real server.

Three workers (``tests/postgres_chaos_worker.py``) serve 8 partitions with a 1 s
lease while a client in this process sends uniquely numbered messages from
several trio tasks to the heads of chains of entities that forward each
message through their outboxes to the next link, in another partition; the
last link echoes each through a timer. During the traffic workers are killed
with SIGKILL and restarted again and again, twice one is stopped with SIGSTOP
well past its lease and continued, and writers' backends are terminated in the
middle of their transactions. The other two tests pin down ordering and schema
upgrade bugs this test led to.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import trio

from ecosystems import Postgres
from pachyderm.errors import EcosystemClosedError
from tests.postgres_chaos_worker import (
    HOPS,
    LEASE,
    PARTITIONS,
    POLL,
    SENDER,
    Echo,
    Link,
    chains,
    partition,
)

WORKER = Path(__file__).with_name("postgres_chaos_worker.py")
WORKERS = 3
SENDERS = 8
HEADS = chains(6)
TRAFFIC = 36.0
"""Seconds of traffic, with faults all along."""
KILL_EVERY = 2.0
ZOMBIE_AT = (6.0, 21.0)
"""When (seconds into the traffic) a worker is stopped, for ``ZOMBIE_PAUSE``."""
ZOMBIE_PAUSE = 5 * LEASE
"""Past its lease and past the time a silent worker stops counting as live (3 leases)."""
TERMINATE_EVERY = 3.0
GRACE = 30.0
"""Seconds the senders' last messages and the settling may take after the traffic."""

# A backend in the middle of a group commit: inside its transaction (between
# statements), or running one of the statements of a group.
WRITERS = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND (state = 'idle in transaction'
       OR (state = 'active' AND (query LIKE 'SELECT pachyderm_fence%' OR query LIKE 'WITH v AS%'
                                 OR query LIKE 'INSERT INTO pachyderm_i%' OR query = 'COMMIT'
                                 OR query LIKE 'DELETE FROM pachyderm_inbox%')))
"""


class Worker:
    """One worker slot: a process started again after each kill; its lines in a log file."""

    def __init__(self, dsn: str, logs: Path, slot: int) -> None:
        self.dsn = dsn
        self.logs = logs
        self.slot = slot
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def log(self) -> Path:
        return self.logs / f"worker-{self.slot}-{self.runs}"

    def start(self) -> None:
        self.runs += 1
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), self.dsn],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    def signal(self, number: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def lines(self) -> list[str]:
        """What the current process said so far."""
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def owned(self) -> list[int] | None:
        """The partitions the current process last said it owns (None: not opened)."""
        said = [line for line in self.lines() if line.startswith("owned")]
        if not said:
            return None
        text = said[-1].removeprefix("owned").strip()
        return [int(p) for p in text.split(",")] if text else []


def all_lines(logs: Path) -> list[str]:
    return [
        line for path in sorted(logs.glob("worker-*")) for line in path.read_text().splitlines()
    ]


@dataclass
class Sends:
    """What the client's senders tried, and what they heard back."""

    attempted: dict[int, int] = field(default_factory=dict)  # message -> head it went to
    acknowledged: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)  # EcosystemClosedError: not applied
    reopened: Counter[str] = field(default_factory=Counter)  # the client's failures


async def client(dsn: str, sends: Sends, until: float) -> None:
    """Send from ``SENDERS`` tasks until ``until``; open the client again when it stops."""
    rngs = [random.Random(f"sender-{sender}") for sender in range(SENDERS)]
    numbers = [0] * SENDERS

    async def send(eco: Any, sender: int) -> None:
        rng = rngs[sender]
        while trio.current_time() < until and not eco.runtime.stopped:
            numbers[sender] += 1
            message = (sender + 1) * SENDER + numbers[sender]
            head = rng.choice(HEADS)
            sends.attempted[message] = head
            try:
                if rng.random() < 0.5:
                    await eco.send_sync(Link(head), message)
                else:
                    await eco.send(Link(head), message)
            except EcosystemClosedError:
                sends.refused.add(message)
                return
            except Exception:
                # OutcomeUnknownError and the like: attempted, perhaps applied.
                if eco.runtime.stopped:
                    return
                raise
            sends.acknowledged.add(message)

    while trio.current_time() < until:
        eco = None
        try:
            async with (
                Postgres.open(
                    dsn, worker=False, partitions=PARTITIONS, lease=LEASE, poll=POLL
                ) as eco,
                trio.open_nursery() as nursery,
            ):
                for sender in range(SENDERS):
                    nursery.start_soon(send, eco, sender)
        except Exception as error:
            failure = None if eco is None else eco.runtime.failure
            if eco is not None and failure is None:
                raise  # not the client stopping: a sender's own error
            sends.reopened[type(failure or error).__name__] += 1
            await trio.sleep(0.05)


def terminate_a_writer(dsn: str, within: float) -> bool:
    """Terminate the backend of a transaction writing a group, if one shows ``within`` s."""
    deadline = time.monotonic() + within
    with psycopg.connect(dsn, autocommit=True) as connection:
        while time.monotonic() < deadline:
            pids = [pid for (pid,) in connection.execute(WRITERS).fetchall()]
            if pids:
                (done,) = connection.execute(  # type: ignore[misc]
                    "SELECT pg_terminate_backend(%s)", (random.choice(pids),)
                ).fetchone()
                if done:
                    return True
            time.sleep(0.002)
    return False


@dataclass
class Faults:
    kills: int = 0
    terminated: int = 0
    zombies: list[list[str]] = field(default_factory=list)  # what each zombie said after
    served: list[int] = field(default_factory=list)  # partitions others held, zombie stopped
    seen: list[str] = field(default_factory=list)  # what the server showed then


async def chaos(dsn: str, workers: list[Worker], faults: Faults, until: float) -> None:
    """Kill and restart workers, make zombies, terminate writers' backends, until ``until``."""
    rng = random.Random(20261129)
    start = trio.current_time()
    spared: set[int] = set()  # the zombie, while it is stopped and until it spoke

    async def killing() -> None:
        while trio.current_time() + KILL_EVERY < until:
            await trio.sleep(KILL_EVERY)
            if spared:
                continue  # the partitions must be seen to move from the zombie alone
            victim = rng.choice(workers)
            victim.kill()
            faults.kills += 1
            victim.start()

    async def zombie(at: float) -> None:
        await trio.sleep_until(start + at)
        # One that owns partitions and has been serving them for a while.
        while True:
            candidates = [
                w
                for w in workers
                if w.owned() and time.monotonic() - w.started > 2 * LEASE and w.slot not in spared
            ]
            if candidates:
                break
            await trio.sleep(0.1)
        victim = rng.choice(candidates)
        spared.add(victim.slot)
        said = len(victim.lines())
        identity = [line.split()[1] for line in victim.lines() if line.startswith("opened")][-1]
        victim.signal(signal.SIGSTOP)
        try:
            await trio.sleep(ZOMBIE_PAUSE)
            served, seen = await trio.to_thread.run_sync(served_by_others, dsn, identity)
            faults.served.append(served)
            faults.seen.append(seen)
        finally:
            victim.signal(signal.SIGCONT)
        with trio.move_on_after(10):
            while not any(line.startswith("stopped") for line in victim.lines()[said:]):
                await trio.sleep(0.05)
        faults.zombies.append(victim.lines()[said:])
        spared.discard(victim.slot)

    async def terminating() -> None:
        while trio.current_time() + TERMINATE_EVERY < until:
            await trio.sleep(TERMINATE_EVERY)
            if spared:
                # A stopped worker's transaction looks idle in transaction: cutting it off
                # would end the zombie before it could try to commit.
                continue
            faults.terminated += await trio.to_thread.run_sync(terminate_a_writer, dsn, 1.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(killing)
        nursery.start_soon(terminating)
        for at in ZOMBIE_AT:
            nursery.start_soon(zombie, at)


def served_by_others(dsn: str, identity: str) -> tuple[int, str]:
    """How many partitions workers other than ``identity`` lease; what the server shows."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT p, owner, lease_until > now() FROM pachyderm_partitions ORDER BY p"
        ).fetchall()
        workers = connection.execute("SELECT id, now() - seen FROM pachyderm_workers").fetchall()
        backends = connection.execute(
            "SELECT state, wait_event, now() - state_change, left(query, 50) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    served = sum(1 for _, owner, live in rows if live and owner != identity)
    return served, f"zombie {identity}: {rows} workers {workers} backends {backends}"


def settled(dsn: str, workers: list[Worker]) -> bool:
    """Inboxes and timers empty, every partition leased, each as the workers say they hold it."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        (schema,) = connection.execute("SELECT to_regclass('pachyderm_meta')").fetchone()  # type: ignore[misc]
        if schema is None:
            return False  # the workers have not created the schema yet
        (pending,) = connection.execute(  # type: ignore[misc]
            "SELECT (SELECT count(*) FROM pachyderm_inbox) "
            "+ (SELECT count(*) FROM pachyderm_timers)"
        ).fetchone()
        table: dict[int, str] = dict(
            connection.execute(
                "SELECT p, owner FROM pachyderm_partitions WHERE lease_until > now()"
            ).fetchall()
        )
    views: dict[int, list[str]] = {}  # partition -> the workers that say they own it
    for worker in workers:
        opened = [line.split()[1] for line in worker.lines() if line.startswith("opened")]
        for p in worker.owned() or []:
            views.setdefault(p, []).append(opened[-1])
    return (
        pending == 0
        and {p: [owner] for p, owner in table.items()} == views
        and len(table) == PARTITIONS
    )


def check_chain(head: int, links: list[list[int]], sends: Sends) -> None:
    """Each acknowledged message to ``head`` applied once, in each sender's order, all along."""
    applied = links[0]
    assert len(set(applied)) == len(applied), f"chain {head}: a message applied twice"
    mine = {m for m, h in sends.attempted.items() if h == head}
    assert set(applied) <= mine, f"chain {head}: applied what was not sent to it"
    assert not set(applied) & sends.refused, f"chain {head}: applied a refused message"
    assert mine & sends.acknowledged <= set(applied), f"chain {head}: lost acknowledged messages"
    for sender in {m // SENDER for m in applied}:
        numbers = [m % SENDER for m in applied if m // SENDER == sender]
        assert numbers == sorted(numbers), f"chain {head}: sender {sender} out of order"
    for hop, link in enumerate(links[1:], 1):
        assert link == applied, (
            f"chain {head}: link {hop} differs from the head: {_diff(applied, link)}"
        )


def _diff(a: list[int], b: list[int]) -> str:
    """Where two lists of messages part (for the failure message)."""
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return (
        f"lengths {len(a)} and {len(b)}, first difference at {i}: "
        f"{a[i : i + 6]} vs {b[i : i + 6]}; "
        f"only in the first {sorted(set(a) - set(b))[:10]}, only in the second "
        f"{sorted(set(b) - set(a))[:10]}"
    )


async def test_chaos_keeps_exactly_once_order_and_one_owner(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Under kills, zombies and cut connections: acknowledged = applied once, in each
    sender's order; refused never applied; applied <= attempted; chains equal; each timer
    fired once; inboxes and timers empty; one owner per partition, all served, also while
    a zombie is stopped; each zombie fenced (commit refused or lease loss seen)."""
    began = time.monotonic()
    workers = [Worker(postgres_dsn, tmp_path, slot) for slot in range(WORKERS)]
    for worker in workers:
        worker.start()
    sends, faults = Sends(), Faults()
    try:
        with trio.fail_after(30):
            while not settled(postgres_dsn, workers):
                await trio.sleep(0.1)
        until = trio.current_time() + TRAFFIC
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos, postgres_dsn, workers, faults, until)
            with trio.fail_after(TRAFFIC + GRACE):
                await client(postgres_dsn, sends, until)
        with trio.fail_after(GRACE):
            while not settled(postgres_dsn, workers):
                await trio.sleep(0.1)
        async with Postgres.open(postgres_dsn, worker=False) as eco:
            states = {
                head: [await eco.state_of(Link(head + hop)) for hop in range(HOPS)]
                for head in HEADS
            }
            echoes = {head: await eco.state_of(Echo(head + HOPS - 1)) for head in HEADS}
            assert await eco.dead_letters() == []
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            (replies,) = connection.execute(  # type: ignore[misc]
                "SELECT count(*) FROM pachyderm_replies"
            ).fetchone()
    finally:
        for worker in workers:
            if worker.process is not None:
                worker.signal(signal.SIGCONT)
                worker.kill()

    for head, links in states.items():
        check_chain(head, links, sends)
        assert sorted(echoes[head]) == sorted(links[-1]), f"chain {head}: a timer lost or twice"
    applied = sum(len(links[0]) for links in states.values())
    assert len(sends.acknowledged) <= applied <= len(sends.attempted)

    stops = Counter(line.split()[1] for line in all_lines(tmp_path) if line.startswith("stopped"))
    fenced = sum(int(line.split()[2]) for line in all_lines(tmp_path) if line.startswith("stopped"))
    zombies = [line for said in faults.zombies for line in said if line.startswith("stopped")]
    print(
        f"\nkills={faults.kills} zombies={len(faults.zombies)} terminated={faults.terminated} "
        f"attempted={len(sends.attempted)} acknowledged={len(sends.acknowledged)} "
        f"refused={len(sends.refused)} applied={applied} fenced_commits={fenced} "
        f"worker_stops={dict(stops)} client_reopens={dict(sends.reopened)} "
        f"replies_left={replies} served_while_stopped={faults.served} zombie_said={zombies} "
        f"seconds={time.monotonic() - began:.0f}"
    )
    assert faults.kills >= 10
    assert faults.terminated >= 3, "no writer's backend was caught mid-transaction"
    assert len(zombies) == len(ZOMBIE_AT), f"a zombie kept running: {faults.zombies}"
    assert faults.served == [PARTITIONS] * len(ZOMBIE_AT), faults.seen
    # Fenced: a commit refused, or the loss seen first by the lease thread; or, stopped in
    # the middle of a group, its transaction ended by the server (idle in transaction past
    # the lease) so that others could take its partitions over.
    assert all(
        line.split()[1] == "PartitionLostError"
        or (line.split()[1] == "StoreAccessError" and "writing a group failed" in line)
        for line in zombies
    ), zombies
    assert set(stops) <= {"PartitionLostError", "StoreAccessError"}, stops
    assert len(sends.acknowledged) > 1000, "the traffic hardly ran"


async def test_messages_from_a_sender_that_moved_keep_its_order(postgres_dsn: str) -> None:
    """A sender moved from a newer process to an older one: its recipient's new owner
    applies its messages in the order it sent them (not by the processes' numbering)."""
    partitions, lease = 4, 0.3
    head = next(
        head
        for head in range(0, 300, HOPS)
        if len({partition(head + hop, partitions) for hop in range(HOPS)}) == HOPS
    )
    sender, recipient = Link(head), Link(head + 1)
    held = [partition(head, partitions), partition(head + 1, partitions)]

    def leases(statement: str, p: int) -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            connection.execute(statement, (p,))

    async def until_owned(storage: Any, p: int) -> None:
        with trio.fail_after(10):
            while p not in storage.owned:
                await trio.sleep(0.02)

    options: dict[str, Any] = {"partitions": partitions, "lease": lease, "poll": 0.05}
    async with Postgres.open(postgres_dsn, worker=False, **options):
        pass  # the schema, so that the two partitions can be held by nobody for a while
    for p in held:
        leases(
            "UPDATE pachyderm_partitions SET owner = 'nobody', "
            "lease_until = now() + interval '1 hour' WHERE p = %s",
            p,
        )
    free = "UPDATE pachyderm_partitions SET owner = NULL, lease_until = NULL WHERE p = %s"
    async with Postgres.open(postgres_dsn, **options) as older:
        async with Postgres.open(postgres_dsn, **options) as newer:
            leases(free, held[0])
            await until_owned(newer.runtime.storage, held[0])
            await newer.send_sync(sender, 1)  # forwarded from the newer process
        await until_owned(older.runtime.storage, held[0])
        await older.send_sync(sender, 2)  # forwarded from the older one
        leases(free, held[1])
        await until_owned(older.runtime.storage, held[1])
        await older.settle()
        with trio.fail_after(10):
            while len(await older.state_of(recipient)) < 2:
                await trio.sleep(0.02)
        assert await older.state_of(sender) == [1, 2]
        assert await older.state_of(recipient) == [1, 2]
