"""What Postgres adds to the shared behaviour suite: fencing, clients, schema, failover.

The behaviour tests of ``test_runtime`` and the others run on Postgres too
(the ``kind`` fixture); these cover what only a shared database has. All run
against the real server the test run starts (``tests/postgres_server.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import trio
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs

import pachyderm._runtime
from ecosystems import Postgres
from ecosystems._postgres_arrays import blobs, texts
from ecosystems._postgres_storage import _TOLD, PostgresStorage, partition_of
from pachyderm import ActivationError, Entity, Outbox
from pachyderm._layout import address_key
from pachyderm.errors import (
    EcosystemClosedError,
    InvalidArgumentError,
    OutcomeUnknownError,
    PachydermError,
    PartitionLostError,
    RemoteActivationFailure,
    StoreAccessError,
    StoreCorruptedError,
)
from tests.entities import Alarm, Timed

ROOT = Path(__file__).resolve().parent.parent


class Tally(Entity[str, int]):
    """Counts messages; fails on "boom"."""

    entity_name = "tests.postgres.Tally"

    def init(self) -> int:
        return 0

    def activate(self, message: str, state: int) -> tuple[Outbox, int]:
        if message == "boom":
            raise ValueError("boom")
        return [], state + 1


class Relay(Entity[int, list[int]]):
    """Keeps what it got and passes it on to the next relay, until 0."""

    entity_name = "tests.postgres.Relay"

    def init(self) -> list[int]:
        return []

    def activate(self, message: int, state: list[int]) -> tuple[Outbox, list[int]]:
        number = self.id
        assert isinstance(number, int)
        outbox = [] if message == 0 else [(Relay(number + 1), message - 1)]
        return outbox, [*state, message]


async def test_a_client_runs_nothing_and_gets_replies_from_the_worker(postgres_dsn: str) -> None:
    """A client (worker=False) forwards every message; send_sync returns the state after
    its activation in the worker, and a failure there is an ActivationError naming it."""
    async with (
        Postgres.open(postgres_dsn, poll=0.05) as worker,
        Postgres.open(postgres_dsn, worker=False, poll=0.05) as client,
    ):
        assert [await client.send_sync(Tally("t"), "x") for _ in range(3)] == [1, 2, 3]
        with pytest.raises(ActivationError) as caught:
            await client.send_sync(Tally("t"), "boom")
        assert isinstance(caught.value.cause, RemoteActivationFailure)
        assert "ValueError: boom" in str(caught.value)
        assert caught.value.dead_letter_id == (await client.dead_letters())[0].id
        assert client.runtime.statistics["activations"] == 0  # it ran nothing itself
        assert await worker.state_of(Tally("t")) == 3


async def test_a_clients_round_trip_waits_for_two_flushes_and_leaves_no_reply_behind(
    postgres_dsn: str,
) -> None:
    """A client's send_sync waits for the WAL flush of its send and of the worker's group,
    not for a third one deleting the reply it read; the replies are deleted all the same."""
    count = 100

    def flushes() -> int:
        """WAL flushes so far, once the processes' sessions are gone (a session adds its
        own to the server's statistics by the time it ends)."""
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            while connection.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone() != (0,):
                time.sleep(0.01)
            row = connection.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
            assert row is not None
            return int(row[0])

    async def round_trips(number: int) -> None:
        async with (
            Postgres.open(postgres_dsn, poll=0.05),
            Postgres.open(postgres_dsn, worker=False, poll=0.05) as client,
        ):
            for _ in range(number):
                await client.send_sync(Tally("f"), "x")

    await round_trips(1)  # the schema made, the entity stored
    before = flushes()
    await round_trips(count)
    flushed = flushes() - before
    # Two a round trip, and some of opening and closing, of leases, of the WAL writer.
    assert 2 * count <= flushed < 2.5 * count, flushed
    with psycopg.connect(postgres_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM pachyderm_replies").fetchone() == (0,)


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


async def test_a_client_closed_with_callers_waiting_leaves_no_replies(postgres_dsn: str) -> None:
    """A client closed while its send_sync callers wait (they hear OutcomeUnknownError,
    naming the entity and saying that its worker applies it) withdraws its wait: a
    worker that runs the messages later writes no reply rows that nobody would read.
    (One that took them before the close still answers: those rows are swept after an
    hour.)"""
    async with Postgres.open(postgres_dsn, poll=0.05):
        pass  # the schema, and no worker running
    outcomes: list[object] = []
    told: list[tuple[int, str]] = []
    async with (
        trio.open_nursery() as nursery,
        Postgres.open(postgres_dsn, worker=False, poll=0.05) as client,
    ):

        async def call(n: int) -> None:
            try:
                outcomes.append(await client.send_sync(Tally(f"w{n}"), "x"))
            except OutcomeUnknownError as error:
                outcomes.append(type(error))
                told.append((n, str(error)))

        for n in range(4):
            nursery.start_soon(call, n)
        with trio.fail_after(10):
            while _count(postgres_dsn, "pachyderm_inbox") < 4:
                await trio.sleep(0.02)
    assert outcomes == [OutcomeUnknownError] * 4
    for n, text in told:  # it names the entity, and says who applies it: not a reopening here
        assert f"to Tally('w{n}') in ecosystem 'default'" in text
        assert "the worker process that runs that entity applies it, once" in text
        assert "Do not send it again" in text
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        with trio.fail_after(10):
            while _count(postgres_dsn, "pachyderm_inbox"):
                await trio.sleep(0.02)
        await worker.settle()
        assert [await worker.state_of(Tally(f"w{n}")) for n in range(4)] == [1] * 4
    assert _count(postgres_dsn, "pachyderm_replies") == 0


async def test_a_client_whose_reading_session_was_cut_while_idle_closes_clean(
    postgres_dsn: str,
) -> None:
    """A client whose reading session was ended on the server while it sat idle (an
    admin, a network cut) still deletes its reply rows and its write mark at close."""
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        async with Postgres.open(postgres_dsn, worker=False, poll=0.05) as client:
            assert await client.send_sync(Tally("idle"), "x") == 1
            storage = cast(PostgresStorage, client.runtime.storage)
            reader = storage._reader
            assert reader is not None
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (reader.info.backend_pid,))
            await trio.sleep(0.3)
            incarnation = storage.incarnation
        await worker.settle()
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        marks = connection.execute(
            "SELECT count(*) FROM pachyderm_writes WHERE incarnation = %s", (incarnation,)
        ).fetchone()
    assert marks == (0,)
    assert _count(postgres_dsn, "pachyderm_replies") == 0


async def test_chains_cross_partitions_through_the_tables(postgres_dsn: str) -> None:
    """Messages an activation sends to entities in other partitions reach them: with two
    partitions and one worker owning all, every hop of a chain is applied once."""
    async with Postgres.open(postgres_dsn, partitions=2, poll=0.05) as worker:
        await worker.send(Relay(0), 20)
        await worker.settle()
        states = [await worker.state_of(Relay(n)) for n in range(22)]
    assert states == [[20 - n] for n in range(21)] + [[]]


async def test_a_worker_whose_partition_moved_cannot_commit(postgres_dsn: str) -> None:
    """The fence: once another owner took the partition (its epoch moved on), this
    worker's next group is refused with PartitionLostError, nothing of it written, and
    the worker stops: its open() ends with EcosystemClosedError caused by it; reopened,
    the entity is as the last committed group left it."""

    async def usurped() -> None:
        async with Postgres.open(postgres_dsn, partitions=1, lease=30, poll=0.05) as eco:
            assert await eco.send_sync(Tally("t"), "x") == 1
            with psycopg.connect(postgres_dsn, autocommit=True) as connection:
                connection.execute(  # what a takeover by another worker does
                    "UPDATE pachyderm_partitions SET owner = 'usurper', epoch = epoch + 1"
                )
            with pytest.raises((OutcomeUnknownError, EcosystemClosedError)):
                await eco.send_sync(Tally("t"), "x")
            with trio.fail_after(10):
                await eco.runtime.wait_stopped()
            assert isinstance(eco.runtime.failure, PartitionLostError)
            assert eco.runtime.storage.fenced_commits == 1  # type: ignore[attr-defined]

    with pytest.raises(EcosystemClosedError, match="partition 0 moved to another worker") as how:
        await usurped()
    assert isinstance(how.value.__cause__, PartitionLostError)  # what a worker's loop tells by
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("UPDATE pachyderm_partitions SET owner = NULL")
    async with Postgres.open(postgres_dsn, poll=0.05) as eco:
        await eco.settle()
        assert await eco.state_of(Tally("t")) == 1  # the refused activation left no trace


async def test_a_role_without_the_rights_a_store_needs_is_told_which(postgres_dsn: str) -> None:
    """A role that may not create the tables (PostgreSQL 15 gives others no CREATE on
    public), or may not use tables and sequences another role made (no grants, reads
    only, or no USAGE on the sequences), and any role on a read-only server, gets
    StoreAccessError saying what it needs; not StoreCorruptedError, which says the data
    cannot be read, nor a psycopg error."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
    try:
        as_role = make_conninfo(postgres_dsn, user=role)
        with pytest.raises(StoreAccessError, match="GRANT CREATE ON SCHEMA public"):
            async with Postgres.open(as_role):
                pass
        async with Postgres.open(postgres_dsn) as eco:  # the owner makes the tables
            await eco.send_sync(Tally("t"), "x")
        grants = [
            "",  # none
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",  # reads only
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        ]  # (and no USAGE on the sequences)
        for grant in grants:
            if grant:
                with psycopg.connect(postgres_dsn, autocommit=True) as connection:
                    connection.execute(grant)
            with pytest.raises(StoreAccessError, match="GRANT SELECT, INSERT, UPDATE, DELETE"):
                async with Postgres.open(as_role):
                    pass
        dbname = psycopg.conninfo.conninfo_to_dict(postgres_dsn)["dbname"]
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:  # a read-only server
            connection.execute(f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
        with pytest.raises(StoreAccessError, match="on a server that accepts writes"):
            async with Postgres.open(postgres_dsn):
                pass
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            connection.execute("SET default_transaction_read_only = off")
            connection.execute(f"ALTER DATABASE {dbname} RESET default_transaction_read_only")
        async with Postgres.open(postgres_dsn) as eco:
            assert await eco.state_of(Tally("t")) == 1  # untouched
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            connection.execute("SET default_transaction_read_only = off")
            connection.execute(f"DROP OWNED BY {role}")
            connection.execute(f"DROP ROLE {role}")


async def test_a_newer_schema_is_refused_untouched(postgres_dsn: str) -> None:
    """A database whose schema is newer than this code is refused, saying what to do."""
    async with Postgres.open(postgres_dsn):
        pass
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("UPDATE pachyderm_meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(StoreCorruptedError, match=r"schema version 99.*upgrade pachyderm"):
        async with Postgres.open(postgres_dsn):
            pass
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        assert connection.execute(
            "SELECT value FROM pachyderm_meta WHERE key = 'schema_version'"
        ).fetchone() == (99,)


async def test_the_partition_count_is_the_databases(postgres_dsn: str) -> None:
    """The partition count is fixed when the schema is made: a later open asking for
    another count still uses the database's, so every process agrees where entities live."""
    async with Postgres.open(postgres_dsn, partitions=4) as eco:
        assert await eco.send_sync(Tally("t"), "x") == 1
    async with Postgres.open(postgres_dsn, partitions=16) as eco:
        assert eco.runtime.storage.partitions == 4  # type: ignore[attr-defined]
        assert await eco.send_sync(Tally("t"), "x") == 2


async def test_bad_arguments_and_unreachable_servers_say_what_to_do(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad options raise InvalidArgumentError showing the value; a server that cannot be
    reached raises StoreAccessError naming the DSN; no DSN at all says how to give one."""
    cases: tuple[tuple[dict[str, Any], str], ...] = (
        ({"worker": "yes"}, "'yes' (a builtins.str)"),
        ({"lease": 0}, "0 (a builtins.int)"),
        ({"partitions": 0}, "0 (a builtins.int)"),
        ({"linger": -0.01}, "linger must be a number of seconds from 0.0 to 10.0, got -0.01"),
        ({"linger": "10ms"}, "'10ms' (a builtins.str)"),
        ({"max_message_bytes": 2**30}, "1073741824 (a builtins.int)"),  # over a row's 1 GB
    )
    for options, shown in cases:
        with pytest.raises(InvalidArgumentError, match=re.escape(shown)):
            async with Postgres.open(postgres_dsn, **options):
                pass
    with pytest.raises(InvalidArgumentError, match="a Postgres DSN must be a str"):
        async with Postgres.open(42):  # type: ignore[arg-type]
            pass
    nowhere = "host=/nonexistent user=nobody dbname=nothing"
    with pytest.raises(StoreAccessError, match="/nonexistent"):
        async with Postgres.open(nowhere):
            pass
    monkeypatch.delenv("PACHYDERM_DSN")
    Postgres.close()
    with pytest.raises(InvalidArgumentError, match=r"\$PACHYDERM_DSN"):
        Postgres.send_sync(Tally("t"), "x")


def test_the_shell_face_refuses_to_change_worker_on_a_store_already_open(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres.connect(dsn, worker=False), then Postgres.connect(dsn): refused, saying
    what is open (its DSN's password masked) and what to do (else the second caller
    would get a client, and its send_sync wait for a worker that is not there); after
    close() it opens as asked."""
    try:
        client = Postgres.connect(postgres_dsn, worker=False, poll=0.05)
        with pytest.raises(InvalidArgumentError, match=r"worker=False.*Postgres.close\(\)"):
            Postgres.connect(postgres_dsn)
        assert Postgres.connect(postgres_dsn, worker=False) is client  # the same: reused
        Postgres.close()
        # The refusal names the store as errors do, password masked, also by default DSN.
        with_password = f"{postgres_dsn} password=hunter2"
        monkeypatch.setenv("PACHYDERM_DSN", with_password)
        Postgres.connect(with_password, worker=False, poll=0.05)
        for location in (with_password, None):
            with pytest.raises(InvalidArgumentError) as refused:
                Postgres.connect(location)
            assert "hunter2" not in str(refused.value)
            assert "password=***" in str(refused.value)
        Postgres.close()
        worker = Postgres.connect(postgres_dsn, poll=0.05)
        assert worker.send_sync(Tally("shell"), "x") == 1
        assert worker.runtime.statistics["activations"] == 1  # it runs its entities
    finally:
        Postgres.close()


def test_import_works_without_psycopg_and_postgres_says_what_to_install() -> None:
    """Without psycopg, ``import ecosystems`` works and opening Postgres names the extra."""
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import ecosystems\n"
        "from ecosystems import LocalDisk, Postgres\n"
        "try:\n"
        "    Postgres.connect('dbname=x')\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "PsycopgMissingError" in result.stdout
    assert "pip install 'pachyderm-entities[postgres]'" in result.stdout


def test_the_two_worker_example_fails_over(postgres_dsn: str) -> None:
    """examples/postgres_workers.py: the worker holding every counter is killed with
    SIGKILL; the other serves them again within the lease plus a second, each counter
    applied exactly once per round."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "postgres_workers.py"), postgres_dsn],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    out = result.stdout
    assert "round 1 states: [1, 1, 1, 1, 1, 1, 1, 1]" in out
    assert "round 2 states: [2, 2, 2, 2, 2, 2, 2, 2]" in out
    seconds = float(re.search(r"served again after ([\d.]+) s", out).group(1))  # type: ignore[union-attr]
    assert seconds < 2.0 + 1.5


def _owners(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return dict(
            connection.execute(
                "SELECT owner, count(*) FROM pachyderm_partitions GROUP BY owner"
            ).fetchall()
        )


def _counted_reads(
    monkeypatch: pytest.MonkeyPatch, during_many: Callable[[], None] | None = None
) -> dict[str, int]:
    """Count the stores' reads of states, one at a time and many at once (counted, not
    replaced); ``during_many`` runs in each read of many, before it."""
    reads = {"one": 0, "many": 0}
    load, load_many = PostgresStorage.load, PostgresStorage.load_many

    def counted_load(storage: PostgresStorage, entity: Any) -> bytes | None:
        reads["one"] += 1
        return load(storage, entity)

    def counted_load_many(storage: PostgresStorage, entities: list[Any]) -> list[bytes | None]:
        reads["many"] += 1
        if during_many is not None:
            during_many()
        return load_many(storage, entities)

    monkeypatch.setattr(PostgresStorage, "load", counted_load)
    monkeypatch.setattr(PostgresStorage, "load_many", counted_load_many)
    return reads


async def test_idle_entities_not_loaded_yet_have_their_states_read_together_without_the_lock(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Senders at once to many idle entities whose states are still to be read: the
    states are read a batch at a time, not one round trip each, and with the runtime's
    lock free meanwhile (another thread could send); every message is applied once."""
    lock_free: list[bool] = []
    holder: dict[str, Any] = {}

    def try_the_lock() -> None:
        if "runtime" in holder:
            lock = holder["runtime"].lock

            def try_lock() -> None:  # from another thread, as a caller's would
                if lock.acquire(timeout=2):
                    lock.__exit__(None, None, None)  # (its release)
                    lock_free.append(True)
                else:
                    lock_free.append(False)

            other = threading.Thread(target=try_lock)
            other.start()
            other.join()

    reads = _counted_reads(monkeypatch, try_the_lock)
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        holder["runtime"] = worker.runtime
        replies: list[int] = []

        async def send(n: int) -> None:
            replies.append(await worker.send_sync(Tally(n), "x"))

        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(send, n)
        states = [await worker.state_of(Tally(n)) for n in range(100)]
    assert replies == [1] * 100
    assert states == [1] * 100
    assert reads["one"] + reads["many"] < 10, reads  # 100 before: one read per entity
    assert lock_free
    assert all(lock_free), lock_free


async def test_a_worker_taking_a_backlog_reads_the_states_it_needs_a_batch_at_a_time(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog (a worker restarting, or taking over) is run with the states of the
    entities about to run read in one round trip per batch, not one per entity: each
    state is the stored one, each message applied once."""
    async with Postgres.open(postgres_dsn, poll=0.05) as first:
        assert [await first.send_sync(Tally(n), "x") for n in range(300)] == [1] * 300
    async with Postgres.open(postgres_dsn, worker=False) as client:
        for n in range(600):  # 300 entities stored, 300 never activated
            await client.send(Tally(n), "y")
    reads = _counted_reads(monkeypatch)
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        await worker.settle()
        states = [await worker.state_of(Tally(n)) for n in range(600)]
    assert states == [2] * 300 + [1] * 300
    assert reads["many"] >= 1, reads
    assert reads["one"] + reads["many"] < 60, reads  # 600 before: one read per entity


async def test_a_worker_that_joins_gets_its_share_and_nothing_is_lost(postgres_dsn: str) -> None:
    """Hand-over: a worker holding every partition gives half to one that joins, draining
    first. Messages accepted but not yet run when it does (its dispatcher paused), and
    callers waiting on them, are served by the new owner: each message applied once."""
    options: dict[str, Any] = {"partitions": 8, "lease": 0.6, "poll": 0.05}
    async with Postgres.open(postgres_dsn, **options) as first:
        assert [await first.send_sync(Tally(n), "x") for n in range(16)] == [1] * 16
        first.runtime.pause()  # accepted from now on, not run: waiting in inboxes
        for n in range(16):
            await first.send(Tally(n), "y")
        replies: list[int] = []
        async with trio.open_nursery() as nursery:

            async def wait_for(n: int) -> None:
                replies.append(await first.send_sync(Tally(n), "z"))

            for n in range(16):
                nursery.start_soon(wait_for, n)
            await trio.sleep(0.1)
            async with Postgres.open(postgres_dsn, **options) as second:
                with trio.fail_after(15):
                    while sorted(_owners(postgres_dsn).values()) != [4, 4]:
                        await trio.sleep(0.05)
                first.runtime.resume()
                await first.settle()
                with trio.fail_after(15):
                    while len(replies) < 16:
                        await trio.sleep(0.05)
                await second.settle()
                assert second.runtime.statistics["activations"] > 0  # it ran the ones it took
                states = [await second.state_of(Tally(n)) for n in range(16)]
    assert sorted(replies) == [3] * 16
    assert states == [3] * 16
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM pachyderm_inbox").fetchone() == (0,)


async def _two_workers_and_a_client(
    dsn: str, stack: contextlib.AsyncExitStack, *, linger: float, paused: bool = False
) -> tuple[Any, Any, Any, list[int], list[int]]:
    """Two workers with 4 of 8 partitions each (both paused, if asked), and a client, all
    with ``linger``; and the ids (of 0-999) of the Tallies each of the two runs."""
    options: dict[str, Any] = {"partitions": 8, "lease": 0.6, "poll": 0.05, "linger": linger}
    first = await stack.enter_async_context(Postgres.open(dsn, **options))
    second = await stack.enter_async_context(Postgres.open(dsn, **options))
    client = await stack.enter_async_context(
        Postgres.open(dsn, worker=False, poll=0.05, linger=linger)
    )
    with trio.fail_after(15):
        while sorted(_owners(dsn).values()) != [4, 4]:
            await trio.sleep(0.05)
    owned = cast(PostgresStorage, first.runtime.storage).owned
    ids = [(n, partition_of("default", address_key(Tally.entity_name, n), 8)) for n in range(1000)]
    on_first = [n for n, p in ids if p in owned]
    on_second = [n for n, p in ids if p not in owned]
    if paused:
        first.runtime.pause()
        second.runtime.pause()
    return first, second, client, on_first, on_second


@pytest.mark.parametrize("linger", [5.0, 0.0])
async def test_a_clients_write_waits_for_the_replies_due_to_its_last_so_their_callers_join_it(
    postgres_dsn: str, linger: float
) -> None:
    """Replies to one write come from each worker in turn. A caller woken by the first
    sends again; its write waits (up to ``linger``) for the others' replies, so the
    callers they wake join it: one write for all, not one per worker (each wakes every
    worker). With linger=0 it does not wait."""
    async with contextlib.AsyncExitStack() as stack:
        first, second, client, on_first, on_second = await _two_workers_and_a_client(
            postgres_dsn, stack, linger=linger, paused=True
        )
        fast, slow = on_first[0], on_second[0]
        returned: dict[str, float] = {}
        started = time.monotonic()

        async def one_caller() -> None:  # answered by the first worker, then sends again
            assert await client.send_sync(Tally(fast), "x") == 1
            returned["fast"] = time.monotonic() - started
            assert await client.send_sync(Tally(fast), "x") == 2
            returned["fast again"] = time.monotonic() - started

        async def another() -> None:  # in the same write, answered by the second worker
            assert await client.send_sync(Tally(slow), "x") == 1
            returned["slow"] = time.monotonic() - started

        async with trio.open_nursery() as nursery:
            nursery.start_soon(another)
            nursery.start_soon(one_caller)
            with trio.fail_after(10):
                while client.runtime._asked is None:
                    await trio.sleep(0.01)
            assert client.runtime._asked.replies_due == 2  # the two sent in one write
            await trio.sleep(0.4)
            first.runtime.resume()  # its reply comes 0.4 s after the write
            await trio.sleep(0.3)
            second.runtime.resume()  # its own 0.3 s later
    assert returned["fast"] < 0.7 < returned["slow"], returned
    # With a linger, the second send waited for the slow reply: it was written after,
    # with the callers that reply woke (none here but the one).
    assert (returned["fast again"] > returned["slow"]) == bool(linger), returned


async def test_a_reply_long_in_coming_holds_up_one_write_and_not_the_ones_after(
    postgres_dsn: str,
) -> None:
    """While one caller's reply never comes (its worker paused), another caller's writes
    do not each wait for it: the first waits linger at most, those after not at all."""
    async with contextlib.AsyncExitStack() as stack:
        first, second, client, on_first, on_second = await _two_workers_and_a_client(
            postgres_dsn, stack, linger=0.6, paused=True
        )
        fast, slow = on_first[0], on_second[0]
        took: list[float] = []

        async def one_caller() -> None:
            assert await client.send_sync(Tally(fast), "x") == 1
            for count in range(2, 7):
                before = time.monotonic()
                assert await client.send_sync(Tally(fast), "x") == count
                took.append(time.monotonic() - before)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_sync, Tally(slow), "x")
            nursery.start_soon(one_caller)
            first.runtime.resume()
            with trio.fail_after(10):
                while len(took) < 5:
                    await trio.sleep(0.01)
            assert await first.state_of(Tally(fast)) == 6
            second.runtime.resume()
    assert took[0] > 0.6, took  # the first waited, for a reply that did not come
    assert sum(took[1:]) < 0.6, took  # those after did not: together, not as long


@pytest.mark.parametrize(
    ("joining", "caller"), [(False, "client"), (True, "client"), (True, "worker itself")]
)
async def test_a_worker_answers_others_without_waiting_for_its_own_callers_replies(
    postgres_dsn: str, joining: bool, caller: str
) -> None:
    """A worker's group holding activations is written without waiting for replies due to
    callers in its process, whether the activation comes before the wait or joins the
    waiting group, run from the queue (a client's message) or at once in its sender's
    step (the worker's own caller, its entity loaded): others may wait on what they
    answer (two workers asking each other waited for each other's groups, in step)."""
    async with contextlib.AsyncExitStack() as stack:
        first, second, client, on_first, on_second = await _two_workers_and_a_client(
            postgres_dsn, stack, linger=2.0
        )
        assert await first.send_sync(Tally(on_first[1]), "x") == 1  # (loaded now)
        second.runtime.pause()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.send_sync, Tally(on_second[0]), "x")  # never answered yet
            with trio.fail_after(10):
                while first.runtime._asked is None:  # written: its reply is due
                    await trio.sleep(0.01)
            if joining:
                nursery.start_soon(first.send_sync, Tally(on_second[1]), "x")  # its write waits
                with trio.fail_after(10):
                    while first.runtime.replies_in is None:
                        await trio.sleep(0.001)
            started = time.monotonic()
            if caller == "client":
                assert await client.send_sync(Tally(on_first[0]), "x") == 1
            else:
                assert await first.send_sync(Tally(on_first[1]), "x") == 2
            took = time.monotonic() - started
            second.runtime.resume()
    assert took < 1.0, took  # not the 2 s wait


@pytest.mark.parametrize("how", ["closed", "failed"])
async def test_a_store_closed_or_failed_while_its_write_waits_stops_at_once(
    postgres_dsn: str, how: str
) -> None:
    """Closing (or a failure) while the committer waits for replies due ends the wait:
    the store stops at once, not when the wait would have run out."""
    took: list[float] = []

    async def stop_while_waiting() -> None:
        async with contextlib.AsyncExitStack() as stack:
            _, second, client, on_first, on_second = await _two_workers_and_a_client(
                postgres_dsn, stack, linger=5.0
            )
            second.runtime.pause()
            runtime = client.runtime

            async def call(n: int) -> None:
                with contextlib.suppress(PachydermError):
                    await client.send_sync(Tally(n), "x")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, on_second[0])
                with trio.fail_after(10):
                    while runtime._asked is None:  # written: its reply is due
                        await trio.sleep(0.01)
                nursery.start_soon(call, on_first[0])
                with trio.fail_after(10):
                    while runtime.replies_in is None:  # its write waits
                        await trio.sleep(0.001)
                started = time.monotonic()
                if how == "closed":
                    await runtime.aclose()
                else:
                    with runtime.lock:
                        runtime._fail(RuntimeError("a read failed"), "reading news")
                    await runtime.wait_stopped()
                took.append(time.monotonic() - started)
                second.runtime.resume()

    with contextlib.suppress(EcosystemClosedError):  # (a failed store's close says so)
        await stop_while_waiting()
    assert len(took) == 1, took
    assert took[0] < 2.5, took  # not the 5 s wait


async def test_callers_asking_a_paused_worker_do_not_hold_up_every_write(
    postgres_dsn: str,
) -> None:
    """While a stream of callers asks a worker that is paused, a caller of the other
    worker is not held up on each write: after a wait that ran out, the next 1, 2, 4...
    writes do not wait (before, each of them waited the whole linger)."""
    calls = 30
    async with contextlib.AsyncExitStack() as stack:
        _, second, client, on_first, on_second = await _two_workers_and_a_client(
            postgres_dsn, stack, linger=0.2
        )
        fast, paused = on_first[0], on_second
        second.runtime.pause()
        took = 0.0
        async with trio.open_nursery() as nursery:

            async def stream() -> None:
                for n in paused:
                    nursery.start_soon(client.send_sync, Tally(n), "x")
                    await trio.sleep(0.01)

            nursery.start_soon(stream)
            started = time.monotonic()
            for count in range(1, calls + 1):
                assert await client.send_sync(Tally(fast), "x") == count
            took = time.monotonic() - started
            nursery.cancel_scope.cancel()
        second.runtime.resume()
    # Waits before calls 1, 3, 6, 11, 20: 1 s; every call waiting would be 6 s.
    assert took < 3.0, took


async def test_a_failure_while_waiting_for_replies_leaves_the_open_group_unwritten(
    postgres_dsn: str,
) -> None:
    """The runtime fails (a read of news, say) while its committer waits for replies due:
    the open group, maybe incomplete, is not written after, and its caller hears that
    nothing happened (safe to send again); the caller of the message written before
    hears that it waits in the inbox."""
    commits: list[int] = []
    runtimes: list[Any] = []
    heard: dict[str, PachydermError] = {}
    ids: dict[str, int] = {}

    async def fail_while_waiting() -> None:
        async with contextlib.AsyncExitStack() as stack:
            _, second, client, on_first, on_second = await _two_workers_and_a_client(
                postgres_dsn, stack, linger=5.0
            )
            ids["fast"], ids["slow"] = on_first[0], on_second[0]
            second.runtime.pause()
            runtime = client.runtime
            runtimes.append(runtime)

            async def call(name: str) -> None:
                try:
                    await client.send_sync(Tally(ids[name]), "x")
                except PachydermError as error:
                    heard[name] = error

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "slow")
                with trio.fail_after(10):
                    while runtime._asked is None:  # written: its reply is due
                        await trio.sleep(0.01)
                nursery.start_soon(call, "fast")
                with trio.fail_after(10):
                    while runtime.replies_in is None:  # the fast one's write waits for it
                        await trio.sleep(0.001)
                commits.append(runtime.commit.commits)
                with runtime.lock:
                    runtime._fail(RuntimeError("a read failed"), "reading news from the store")
                with trio.fail_after(10):
                    await trio.sleep_forever()  # (the client's failure ends this block)

    with pytest.raises(EcosystemClosedError, match="a read failed"):  # (the client's close)
        await fail_while_waiting()
    assert runtimes[0].commit.commits == commits[0]  # nothing written after the failure
    assert type(heard["fast"]) is EcosystemClosedError, heard
    assert type(heard["slow"]) is OutcomeUnknownError, heard
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        with trio.fail_after(10):
            while await worker.state_of(Tally(ids["slow"])) != 1:  # written before: run now
                await trio.sleep(0.05)
        assert await worker.state_of(Tally(ids["fast"])) == 0  # never written: never run


async def test_a_caller_of_a_stored_message_handed_over_hears_outcome_unknown_on_a_failure(
    postgres_dsn: str,
) -> None:
    """A worker hands a partition over while a caller waits on a message stored there;
    it fails before the hand-over is written. The caller hears that its message may yet
    be applied (OutcomeUnknownError), never that nothing happened: sending it again
    would apply it twice. On reopening it is applied once."""
    heard: list[PachydermError] = []
    p = partition_of("default", address_key(Tally.entity_name, "handed"), 8)

    async def fail_after_hand_over() -> None:
        async with Postgres.open(postgres_dsn, partitions=8, poll=0.05) as worker:
            runtime = worker.runtime
            runtime.pause()  # accepted and stored, not run

            async def call() -> None:
                try:
                    await worker.send_sync(Tally("handed"), "x")
                except PachydermError as error:
                    heard.append(error)

            async with trio.open_nursery() as nursery:
                written = runtime.commit.commits
                nursery.start_soon(call)
                with trio.fail_after(10):
                    while runtime.commit.commits == written:  # its message is stored
                        await trio.sleep(0.01)
                sharing = runtime.sharing
                assert sharing is not None
                with runtime.lock:
                    sharing._hand_over([p])
                    runtime._fail(RuntimeError("a read failed"), "reading news from the store")
                with trio.fail_after(10):
                    await trio.sleep_forever()  # (the failure ends this block)

    with pytest.raises(EcosystemClosedError, match="a read failed"):
        await fail_after_hand_over()
    assert [type(error) for error in heard] == [OutcomeUnknownError], heard
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        await worker.settle()
        assert await worker.state_of(Tally("handed")) == 1


async def test_a_client_follows_an_entity_run_in_a_worker(postgres_dsn: str) -> None:
    """A follower in a client sees the state now, then every change the worker commits,
    in commit order, each once (told by notification: the client would look only once a
    minute); it stops hearing of it once it closes."""
    async with (
        Postgres.open(postgres_dsn, poll=0.05) as worker,
        Postgres.open(postgres_dsn, worker=False, poll=60) as client,
    ):
        await worker.send_sync(Tally("t"), "x")
        seen: list[int] = []
        async with client.follow(Tally("t")) as updates:
            assert updates.state == 1
            for _ in range(5):
                await worker.send_sync(Tally("t"), "x")  # one commit each
            with trio.fail_after(10):
                async for _, state in updates:
                    seen.append(state)
                    if state == 6:
                        break
        assert seen == [2, 3, 4, 5, 6]
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM pachyderm_follows").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM pachyderm_updates").fetchone() == (0,)


async def test_a_second_follower_in_a_process_never_robs_the_first_of_a_version(
    postgres_dsn: str,
) -> None:
    """A client follows an entity; a worker commits a new version, and the client starts
    a second follower of it at once: the first is told that version too (the second's
    read had marked it told, and its update row was skipped). A follow refused for its
    buffer registers nothing."""
    async with (
        Postgres.open(postgres_dsn, poll=0.05) as worker,
        Postgres.open(postgres_dsn, worker=False, poll=0.05) as client,
    ):
        stuck = []
        for n in range(10):
            tally = Tally(f"t{n}")
            await worker.send_sync(tally, "a")
            async with client.follow(tally) as first:
                latest = await worker.send_sync(tally, "b")  # committed: its update is stored
                async with client.follow(tally) as second:
                    assert second.state == latest
                with trio.move_on_after(2):
                    async for _, state in first:
                        if state == latest:
                            break
                if first.state != latest:
                    stuck.append((n, first.state, latest))
        assert stuck == []
        with pytest.raises(InvalidArgumentError, match="buffer"):
            client.follow(Tally("never"), buffer=0)
    with psycopg.connect(postgres_dsn) as connection:
        assert connection.execute(
            "SELECT count(*) FROM pachyderm_follows WHERE address LIKE %s", (b"%never%",)
        ).fetchone() == (0,)


@pytest.mark.parametrize("plans", ["auto", "force_generic_plan", "force_custom_plan"])
async def test_telling_followers_looks_records_up_by_key_not_by_scanning_them(
    postgres_dsn: str, plans: str
) -> None:
    """A group's statement for followers reads the entities by their key, whatever plan
    the server makes of it: it once hashed over a scan of every entity, on each group."""
    async with Postgres.open(postgres_dsn, poll=0.05) as eco:
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            # Statistics as the table grows and before they are gathered: what a busy
            # table has most of the time.
            connection.execute("ALTER TABLE pachyderm_entities SET (autovacuum_enabled = off)")
        for number in range(1000):
            await eco.send(Tally(number), "x")
        await eco.settle()
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        rows = connection.execute("SELECT eco, address FROM pachyderm_entities LIMIT 26").fetchall()
        ecos, addresses = [row[0] for row in rows], [bytes(row[1]) for row in rows]
        for eco_name, address in zip(ecos[:5], addresses[:5], strict=True):
            connection.execute(
                "INSERT INTO pachyderm_follows (eco, address, follower) VALUES (%s, %s, 'far')",
                (eco_name, address),
            )
        connection.execute(f"SET plan_cache_mode = {plans}")
        connection.execute("BEGIN")
        for _ in range(6):  # (a generic plan is tried from the sixth run of a statement on)
            plan = "\n".join(
                line
                for (line,) in connection.execute(
                    "EXPLAIN (ANALYZE) " + _TOLD, (texts(ecos), blobs(addresses), "x"), prepare=True
                )
            )
        told = connection.execute("SELECT count(*) FROM pachyderm_updates").fetchone()
        connection.execute("ROLLBACK")
    assert "Seq Scan on pachyderm_entities" not in plan, plan
    assert "Index Scan using pachyderm_entities_pkey" in plan, plan
    assert told == (6 * 5,)  # each run told the five followers


async def test_a_version_1_database_is_upgraded_with_its_data(postgres_dsn: str) -> None:
    """A database made by schema version 1 (no followers' tables, inbox rows without
    positions) opens upgraded to the current version: its entities' states kept, the
    messages waiting in its inbox applied once, in order, and the one whose sender
    waited answered (in the replies table: that sender is gone)."""
    from ecosystems._postgres_schema import SCHEMA_VERSION, ensure_schema
    from pachyderm._codec import encode
    from pachyderm._layout import address_key
    from pachyderm._step import record_bytes

    address = address_key("tests.postgres.Tally", "old")
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        ensure_schema(connection, "test", 8, version=1)
        connection.execute(
            "INSERT INTO pachyderm_entities (eco, address, p, record) VALUES (%s, %s, %s, %s)",
            ("default", address, partition_of("default", address, 8), record_bytes(1, b"\x29")),
        )
        for seq, reply in ((5, False), (4, True)):  # accepted by version 1, not yet applied
            connection.execute(
                "INSERT INTO pachyderm_inbox (seq, p, eco, address, message, reply) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (seq, partition_of("default", address, 8), "default", address, encode("x"), reply),
            )
        assert connection.execute("SELECT to_regclass('pachyderm_follows')").fetchone() == (None,)
    async with Postgres.open(postgres_dsn) as eco:
        await eco.settle()
        assert await eco.state_of(Tally("old")) == 43
        assert await eco.send_sync(Tally("old"), "x") == 44
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        assert connection.execute(
            "SELECT value FROM pachyderm_meta WHERE key = 'schema_version'"
        ).fetchone() == (SCHEMA_VERSION,)
        assert connection.execute("SELECT version FROM pachyderm_entities").fetchone() == (3,)
        assert connection.execute("SELECT count(*) FROM pachyderm_inbox").fetchone() == (0,)
        assert connection.execute("SELECT seq FROM pachyderm_replies").fetchall() == [(4,)]


async def test_a_message_whose_writer_was_running_at_a_scan_is_found_after(
    postgres_dsn: str,
) -> None:
    """A worker's scans read only the inbox rows of transactions their last snapshot did
    not see. A message written by a transaction still running at such a scan (so it
    was not seen), and committed after, is found by a later scan and applied once."""

    from pachyderm._codec import encode
    from pachyderm._layout import address_key

    address = address_key("tests.postgres.Tally", "late")
    p = partition_of("default", address, 64)
    async with Postgres.open(postgres_dsn, poll=0.05) as worker:
        assert await worker.send_sync(Tally("late"), "x") == 1
        with psycopg.connect(postgres_dsn) as writer:  # (not autocommit: held open)
            writer.execute(
                "INSERT INTO pachyderm_inbox (seq, p, eco, address, message) "
                "VALUES (%s, %s, %s, %s, %s)",
                (1 << 62, p, "default", address, encode("x")),  # (a seq no open takes)
            )
            (xid,) = writer.execute("SELECT pg_current_xact_id()::text").fetchone()  # type: ignore[misc]
            # A later transaction commits (the writer's xid is then below the snapshots'
            # xmax), and a scan lists the writer as running: only that tells it apart.
            assert await worker.send_sync(Tally("other"), "x") == 1
            storage = cast(PostgresStorage, worker.runtime.storage)
            with trio.fail_after(5):
                while int(xid) not in storage._snapshot[1]:
                    await trio.sleep(0.05)
            assert await worker.state_of(Tally("late")) == 1
            writer.commit()
        with trio.fail_after(5):
            while await worker.state_of(Tally("late")) != 2:
                await trio.sleep(0.05)
        await trio.sleep(0.3)  # (and once only)
        assert await worker.state_of(Tally("late")) == 2


class CommitCutter:
    """A unix-socket proxy in front of the server that cuts a connection at a COMMIT.

    Armed with ``"before"``, it drops the next COMMIT (with whatever came in the
    same read: a group's whole pipeline) and closes the client's
    connection (the server aborts the transaction); with ``"after"``, it passes
    the COMMIT on and closes the connection before the answer comes back (the
    server commits; the client never hears so). Real sockets, a real server.
    """

    COMMIT = b"COMMIT\x00"  # the end of a query's text, in a Query or a Parse message

    def __init__(self, server_dsn: str, directory: Path) -> None:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        target = conninfo_to_dict(server_dsn)
        self.target = os.path.join(str(target["host"]), ".s.PGSQL.5432")
        self.dsn = make_conninfo(server_dsn, host=str(directory))
        self.armed: str | None = None
        self.cuts = 0
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(directory / ".s.PGSQL.5432"))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target)
            held = threading.Event()  # set: the server's answers are no longer passed on
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, upstream, held), daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, upstream: bool, held: threading.Event
    ) -> None:
        try:
            while data := source.recv(65536):
                if held.is_set():
                    return
                if upstream and self.armed and self.COMMIT in data:
                    mode, self.armed = self.armed, None
                    held.set()
                    self.cuts += 1
                    if mode == "after":
                        sink.sendall(data)
                        time.sleep(0.2)  # the server reads and commits it
                    source.shutdown(socket.SHUT_RDWR)
                    sink.shutdown(socket.SHUT_RDWR)
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize(("cut", "rewrites"), [("before", 1), ("after", 0)])
async def test_a_connection_lost_at_commit_neither_loses_nor_doubles_the_group(
    postgres_dsn: str, cut: str, rewrites: int
) -> None:
    """The connection drops at a group's COMMIT: the worker asks the server what became
    of the transaction. Committed: the caller is answered; aborted: the group is written
    again. Either way the activation is applied exactly once and the worker goes on."""
    directory = Path(tempfile.mkdtemp(prefix="cutter-", dir="/tmp"))
    cutter = CommitCutter(postgres_dsn, directory)
    try:
        async with Postgres.open(cutter.dsn, poll=0.05) as eco:
            assert await eco.send_sync(Tally("t"), "x") == 1
            cutter.armed = cut
            assert await eco.send_sync(Tally("t"), "x") == 2
            assert cutter.cuts == 1
            assert eco.runtime.storage.rewrites == rewrites  # type: ignore[attr-defined]
            assert await eco.send_sync(Tally("t"), "x") == 3
        async with Postgres.open(postgres_dsn) as eco:
            assert await eco.state_of(Tally("t")) == 3
    finally:
        cutter.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_killed_test_run_leaves_no_server_behind() -> None:
    """A run SIGKILLed with its server up: the watchdog stops the server, removes its files."""
    from tests.postgres_server import HOW_TO_GET_ONE, find_binaries

    if find_binaries() is None:
        if os.environ.get("PACHYDERM_REQUIRE_POSTGRES"):
            pytest.fail(HOW_TO_GET_ONE)
        pytest.skip(HOW_TO_GET_ONE)
    code = (
        "import sys, time; from tests.postgres_server import PostgresServer, find_binaries; "
        "server = PostgresServer(find_binaries()); print(server.directory, flush=True); "
        "time.sleep(600)"
    )
    run = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert run.stdout is not None
    directory = run.stdout.readline().strip()
    pid_file = Path(directory, "data", "postmaster.pid")
    assert pid_file.exists()  # the server is up
    postmaster = int(pid_file.read_text().split()[0])
    run.kill()
    run.wait()
    run.stdout.close()
    deadline = time.monotonic() + 60
    while Path(directory).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(directory).exists()
    assert not _running(postmaster)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie left for a reaper that never comes does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_release_committing_after_the_partition_was_taken_again_keeps_it(
    postgres_dsn: str,
) -> None:
    """A hand-over's release commits; before the worker forgets the partition, a lease
    round takes it again (a new epoch). Forgetting the released epoch keeps the new one:
    the worker runs what the database says it owns, instead of renewing a partition it
    never serves."""
    from ecosystems._postgres_leases import Leases
    from ecosystems._postgres_schema import ensure_schema

    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        ensure_schema(connection, "test", 8)
    leases = Leases(postgres_dsn, "host:1:1", 8, 10.0, lambda _: None, lambda _: None)
    try:
        leases._round()
        released = {3: leases.owned[3]}
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            connection.execute(  # the release commits, and the partition is free...
                "UPDATE pachyderm_partitions SET owner = NULL, lease_until = NULL WHERE p = 3"
            )
        leases.owned = {p: e for p, e in leases.owned.items() if p != 3}  # (lost meanwhile)
        leases._round()  # ...and a round takes it again
        assert leases.owned[3] == released[3] + 1
        leases.drop(released)
        assert leases.owned[3] == released[3] + 1
        leases.drop({3: released[3] + 1})
        assert 3 not in leases.owned
    finally:
        leases.stop()


async def test_pause_during_a_read_of_cold_states_runs_nothing_until_resumed(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pause()`` while the dispatch loop reads the states of queued entities (without
    the lock): nothing runs until ``resume()``; then the message is applied once.
    (Found by an attack helper: the batch read ran after pause() returned.)"""
    started = threading.Event()
    release = threading.Event()
    load_many = PostgresStorage.load_many

    def slow_load_many(storage: PostgresStorage, entities: list[Any]) -> list[bytes | None]:
        started.set()  # the read is in flight, the runtime's lock free
        release.wait(10)
        return load_many(storage, entities)

    monkeypatch.setattr(PostgresStorage, "load_many", slow_load_many)
    async with Postgres.open(postgres_dsn, poll=0.05) as eco:
        await eco.send(Tally("cold"), "x")  # accepted; queued, its state to be read
        with trio.fail_after(10):
            while not started.is_set():
                await trio.sleep(0.01)
        eco.runtime.pause()
        release.set()
        await trio.sleep(0.5)
        while_paused = await eco.state_of(Tally("cold"))
        eco.runtime.resume()
        with trio.fail_after(10):
            await eco.settle()
        assert await eco.state_of(Tally("cold")) == 1
    assert while_paused == 0, "an activation ran after pause() returned"


async def test_a_second_follow_in_the_owning_process_tells_the_first_nothing_twice(
    postgres_dsn: str,
) -> None:
    """In the process that runs an entity, once passivated, a second follower reading
    its stored state tells the first nothing again: it saw 1, 2, 3 once each."""
    async with Postgres.open(postgres_dsn, poll=0.05, max_resident=1) as eco:
        tally = Tally("followed")
        async with eco.follow(tally) as first:
            for _ in range(3):
                await eco.send_sync(tally, "x")
            await eco.send_sync(Tally("other"), "x")  # max_resident=1: tally passivated
            await eco.settle()
            async with eco.follow(tally) as second:
                assert second.state == 3
            seen = []
            with trio.move_on_after(1):
                async for _, state in first:
                    seen.append(state)
    assert seen == [1, 2, 3]


async def test_a_partition_taken_back_with_a_pending_timer_fires_it_once(
    postgres_dsn: str,
) -> None:
    """A worker hands a partition with a pending timer to a worker that joins, and takes
    it back when that one closes: the timer, dropped from its memory at the hand-over
    and read again, fires once (its two heap entries once made the worker stop on a
    TypeError, comparing two timers)."""
    options: dict[str, Any] = {"partitions": 2, "lease": 0.6, "poll": 0.05}
    alarm = next(
        Alarm(n)
        for n in range(100)
        if partition_of("default", address_key(Alarm.entity_name, n), 2) == 1  # handed over
    )
    async with Postgres.open(postgres_dsn, **options) as first:
        storage = cast(PostgresStorage, first.runtime.storage)
        await first.send_sync(alarm, ("set", 3.0, "rung"))
        async with Postgres.open(postgres_dsn, **options):
            with trio.fail_after(10):
                while 1 in storage.owned:
                    await trio.sleep(0.02)
        with trio.fail_after(10):
            while 1 not in storage.owned:
                await trio.sleep(0.02)
        with trio.fail_after(10):
            while await first.state_of(alarm) != ["rung"]:
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        assert await first.state_of(alarm) == ["rung"]


async def test_a_partition_whose_taking_was_never_answered_is_run_by_its_taker(
    postgres_dsn: str,
) -> None:
    """A take of a partition that committed, its answer lost (the connection cut): the
    table says the worker owns it, and its renewals keep it so, so no other worker may
    take it. The worker finds it at its next renewal and runs its entities (they went
    unanswered while it lived)."""
    options: dict[str, Any] = {"partitions": 4, "lease": 0.6, "poll": 0.05}
    tally = next(
        Tally(n)
        for n in range(100)
        if partition_of("default", address_key(Tally.entity_name, n), 4) == 2
    )
    async with Postgres.open(postgres_dsn, **options) as eco:
        storage = cast(PostgresStorage, eco.runtime.storage)
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            # Another worker, alive for a few seconds: this one hands over half.
            connection.execute(
                "INSERT INTO pachyderm_workers (id, seen) VALUES ('ghost', now() + interval '3 s')"
            )
            with trio.fail_after(10):
                while sorted(storage.owned) != [0, 1]:
                    await trio.sleep(0.02)
            # What a take of partition 2 leaves when its answer never comes back.
            connection.execute(
                "UPDATE pachyderm_partitions SET owner = %s, epoch = epoch + 1, "
                "lease_until = now() + interval '0.6 s' WHERE p = 2",
                (storage.identity,),
            )
        with trio.fail_after(15):
            assert await eco.send_sync(tally, "x") == 1
        assert 2 in storage.owned


async def test_a_password_in_the_dsn_is_never_shown(postgres_dsn: str) -> None:
    """Errors and log events name the store by its DSN, with any password masked."""
    with pytest.raises(StoreAccessError) as refused:
        async with Postgres.open("postgresql://app:s3cret-word@127.0.0.1:1/app"):
            pass
    assert "s3cret" not in str(refused.value)
    assert "app:***@127.0.0.1" in str(refused.value)
    with capture_logs() as logs:
        async with Postgres.open(postgres_dsn + " password=s3cret-word") as eco:
            assert await eco.send_sync(Tally("t"), "x") == 1
        with pytest.raises(EcosystemClosedError) as closed:
            await eco.send_sync(Tally("t"), "x")
    assert "password=***" in str(closed.value)
    assert logs
    assert not [event for event in logs if "s3cret" in repr(event)]


async def test_settle_waits_for_messages_run_in_another_process(postgres_dsn: str) -> None:
    """A client's send() x 300, then settle(): every message has been applied by the
    worker that runs the entity, as state_of shows at once (settle waited only for the
    client's own share: none, so it returned at once)."""
    async with (
        Postgres.open(postgres_dsn, poll=0.05),
        Postgres.open(postgres_dsn, worker=False, poll=0.05) as client,
    ):
        for _ in range(300):
            await client.send(Tally("settled"), "x")
        with trio.fail_after(30):
            await client.settle()
        assert await client.state_of(Tally("settled")) == 300


async def test_a_partition_taken_over_brings_at_most_a_window_of_its_timers(
    postgres_dsn: str,
) -> None:
    """A partition with 1,100 pending timers taken back by a worker that holds a window of
    1,024: it reads and keeps at most a window of them (it read all of them at once:
    200,000 timers took 200 MB), and the one due soon still fires, once."""
    options: dict[str, Any] = {"partitions": 2, "lease": 0.6, "poll": 0.05}
    owner = next(
        Timed(n)
        for n in range(100)
        if partition_of("default", address_key(Timed.entity_name, n), 2) == 1  # handed over
    )
    later = tuple((None, 3600.0, owner.id, (k, (), (), ())) for k in range(1_099))
    async with Postgres.open(postgres_dsn, **options) as first:
        storage = cast(PostgresStorage, first.runtime.storage)
        timers = first.runtime.timers
        async with Postgres.open(postgres_dsn, **options) as second:
            with trio.fail_after(10):
                while 1 in storage.owned:
                    await trio.sleep(0.02)
            soon = ((None, 2.0, owner.id, ("soon", (), (), ())),)
            await second.send_sync(owner, ("set", (), soon + later, ()))
        with trio.fail_after(10):
            while 1 not in storage.owned:
                await trio.sleep(0.02)
        assert len(timers) <= timers.window
        with trio.fail_after(10):
            while await first.state_of(owner) != ["set", "soon"]:
                await trio.sleep(0.05)
        await trio.sleep(0.3)
        assert await first.state_of(owner) == ["set", "soon"]


async def test_a_follow_during_a_hand_over_never_sends_the_first_follower_backwards(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker runs counters, each followed there, with a group in flight of two
    activations of each (states 2 and 3); a second worker joins, so half are handed
    over before the group completes, and each counter is followed again: the first
    followers see 1, 2, 3, never a state twice or out of order, and the second ones
    start at 1 and hear 2 and 3 (they were told 3, then 2 and 3 again)."""
    monkeypatch.setattr(pachyderm._runtime, "INLINE_WRITE", 0.0)  # writes in a worker thread
    armed, committed, proceed = threading.Event(), threading.Event(), threading.Event()
    write = PostgresStorage.write
    holder: dict[str, Any] = {}

    def held_write(storage: PostgresStorage, batch: Any, *, sync: bool) -> None:
        write(storage, batch, sync=sync)
        if armed.is_set() and storage is holder.get("storage"):  # committed, not completed
            armed.clear()
            committed.set()
            proceed.wait(20)

    monkeypatch.setattr(PostgresStorage, "write", held_write)
    options: dict[str, Any] = {"partitions": 2, "lease": 0.6, "poll": 0.05}
    counters = [Tally(f"c{n}") for n in range(8)]  # in both partitions
    async with (
        Postgres.open(postgres_dsn, **options) as first,
        contextlib.AsyncExitStack() as stack,
    ):
        runtime = first.runtime
        holder["storage"] = runtime.storage
        followers = [await stack.enter_async_context(first.follow(c)) for c in counters]
        for counter in counters:
            assert await first.send_sync(counter, "x") == 1
        armed.set()
        async with trio.open_nursery() as nursery:  # two activations of each, one group
            for counter in counters:
                nursery.start_soon(first.send, counter, "x")
                nursery.start_soon(first.send, counter, "x")
            with trio.fail_after(10):
                while not committed.is_set():
                    await trio.sleep(0.01)
            hand_overs = runtime.dispatcher.hand_overs
            async with Postgres.open(postgres_dsn, **options):
                with trio.fail_after(10):
                    while runtime.dispatcher.hand_overs == hand_overs:  # half handed over
                        await trio.sleep(0.01)
                seconds = [await stack.enter_async_context(first.follow(c)) for c in counters]
                starts = [second.state for second in seconds]
                proceed.set()
        seen = []
        for follower in followers:
            states = []
            with trio.move_on_after(0.5):
                async for _, state in follower:
                    states.append(state)
            seen.append(states)
        heard = [
            [start, *(state for _, state in second.flush())]
            for start, second in zip(starts, seconds, strict=True)
        ]
    assert seen == [[1, 2, 3]] * len(counters)
    assert heard == [[1, 2, 3]] * len(counters)


class _Slow(Entity[str, int]):
    """Counts messages, taking 5 ms each."""

    entity_name = "tests.postgres.Slow"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        time.sleep(0.005)
        return [], state + 1


async def test_a_clients_settle_waits_for_what_it_sent_before_not_for_sends_since(
    postgres_dsn: str,
) -> None:
    """settle() in a client waits until the messages it accepted before the call are
    applied, wherever they run; messages its other tasks keep sending meanwhile do not
    hold it up (it waited while any message of the process was in flight: with other
    threads sending all the while, for ever)."""
    async with (
        Postgres.open(postgres_dsn, poll=0.05) as worker,
        Postgres.open(postgres_dsn, worker=False, poll=0.05) as client,
    ):
        for n in range(20):
            await client.send(_Slow(f"s{n % 4}"), "x")
        stop = trio.Event()

        async def keep_sending() -> None:
            while not stop.is_set():
                await client.send(_Slow("busy"), "x")

        async with trio.open_nursery() as nursery:
            for _ in range(8):  # faster than the worker runs them: a backlog all the while
                nursery.start_soon(keep_sending)
            with trio.fail_after(20):
                await client.settle()
            stop.set()
        assert [await worker.state_of(_Slow(f"s{n}")) for n in range(4)] == [5] * 4


async def test_dead_letters_are_listed_oldest_first_whichever_worker_made_them(
    postgres_dsn: str,
) -> None:
    """Dead letters made in turn by two workers are listed in the order they failed (a
    dead letter's id starts with its worker's incarnation: listed by id, they came
    grouped by worker)."""
    async with contextlib.AsyncExitStack() as stack:
        _, _, client, on_first, on_second = await _two_workers_and_a_client(
            postgres_dsn, stack, linger=0.0
        )
        made = [Tally(n) for pair in zip(on_first[:3], on_second[:3], strict=True) for n in pair]
        for address in made:
            with pytest.raises(ActivationError):
                await client.send_sync(address, "boom")
        assert [letter.address for letter in await client.dead_letters()] == made


def _epochs(dsn: str) -> dict[int, tuple[str, int]]:
    with psycopg.connect(dsn) as connection:
        rows = connection.execute("SELECT p, owner, epoch FROM pachyderm_partitions").fetchall()
    return {p: (owner, epoch) for p, owner, epoch in rows}


async def test_workers_with_different_leases_share_the_partitions_and_keep_them(
    postgres_dsn: str,
) -> None:
    """A worker with a short lease and one with a long lease split the partitions, and
    the split stays: each counts the other alive by the other's own lease (counted by
    its own, the short-lease worker missed the other between its renewals, took its
    share, handed it back, and again: the share's epochs kept moving)."""
    options: dict[str, Any] = {"partitions": 8, "poll": 0.05}
    async with (
        Postgres.open(postgres_dsn, lease=0.5, **options),
        Postgres.open(postgres_dsn, lease=3.0, **options),
    ):
        with trio.fail_after(20):
            while None in (owners := _owners(postgres_dsn)) or sorted(owners.values()) != [4, 4]:
                await trio.sleep(0.05)
        before = _epochs(postgres_dsn)
        await trio.sleep(4.0)  # a long lease and more, some 24 of the short one's rounds
        assert _epochs(postgres_dsn) == before
