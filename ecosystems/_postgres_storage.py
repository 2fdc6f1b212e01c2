"""``PostgresStorage``: the runtime's storage in PostgreSQL tables, shared by many processes.

Entities hash into a fixed number of partitions. A worker owns some of them
by lease (``_postgres_leases``) and runs only their activations; a message
for any other entity is *forwarded*: written to its inbox row, for the owner
to find. Every group is one transaction, fenced: it first takes a share lock
on the partitions whose entities it changes and checks that their epochs are
still this worker's, so a worker that lost a lease (paused past it, say)
can never commit. Sequence numbers are unique across processes: each open
takes an *incarnation* from a database sequence and numbers its messages,
timers and dead letters within it.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import psycopg

from ecosystems._postgres_leases import Leases
from ecosystems._postgres_schema import DEFAULT_PARTITIONS, ensure_schema
from pachyderm import _layout as layout
from pachyderm._log import log
from pachyderm._storage import WAITING_FOR_CLASS, Batch, Ident, PendingMessage, Timer
from pachyderm.errors import (
    EcosystemClosedError,
    PartitionLostError,
    StoreAccessError,
    StoreCorruptedError,
    UnknownDeadLetterError,
)

__all__ = ["INCARNATION_BITS", "PostgresBatch", "PostgresEntity", "PostgresStorage"]

INCARNATION_BITS = 36
"""Sequence numbers per open: 2**36; the incarnation is the high bits."""
_MICROSECONDS = 1_000_000
_WRITE_ATTEMPTS = 3  # a group whose write failed, and did not commit, is written again
_CHANNEL = "pachyderm"
_LISTEN_TICK = 0.25  # seconds between the listener's looks at whether it is closed


class PostgresEntity:
    """An entity's row key and partition, computed once while it is resident."""

    __slots__ = ("address", "eco", "p")

    def __init__(self, eco: str, address: bytes, p: int) -> None:
        self.eco = eco
        self.address = address
        self.p = p


def partition_of(eco: str, address: bytes, partitions: int) -> int:
    """Where an entity lives: the same in every process (CRC-32, not Python's hash)."""
    return zlib.crc32(address, zlib.crc32(eco.encode())) % partitions


class PostgresBatch:
    """One group's changes, applied by :meth:`PostgresStorage.write` in one transaction."""

    __slots__ = (
        "accepted",
        "consumed",
        "dead_added",
        "dead_removed",
        "fenced",
        "followed",
        "forwarded",
        "outcome",
        "records",
        "released",
        "replies",
        "reply_clears",
        "reply_marks",
        "serial",
        "storage",
        "timers_removed",
        "timers_set",
        "writes",
    )

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        storage.batches += 1
        self.serial = storage.batches  # groups are written in the order they were made
        self.writes = 0
        self.records: dict[tuple[str, bytes], tuple[int, bytes]] = {}
        self.accepted: list[tuple[int, int, str, bytes, bytes, bool] | None] = []
        self.consumed: list[int] = []
        self.timers_set: dict[int, Timer] = {}
        self.timers_removed: list[int] = []
        self.dead_added: dict[tuple[str, int], bytes] = {}
        self.dead_removed: list[tuple[str, int]] = []
        self.replies: list[tuple[int, bytes | None, int | None]] = []
        self.fenced: set[int] = set()
        self.released: set[int] = set()
        self.reply_marks: list[int] = []  # stored inbox rows whose sender now waits remotely
        self.reply_clears: list[int] = []  # stored inbox rows whose sender was answered
        self.forwarded: set[int] = set()  # partitions given messages: their owners are told
        self.followed = False  # the commit left followers elsewhere an update
        # The last activation's outcome (its record, or its dead letter id): the
        # dispatcher records it before consuming the message it ran on.
        self.outcome: tuple[bytes | None, int | None] = (None, None)

    def __len__(self) -> int:
        return self.writes

    def accept(self, entity: PostgresEntity, seq: int, message: bytes) -> int:
        self.writes += 1
        self.accepted.append((seq, entity.p, entity.eco, entity.address, message, False))
        self.storage.known[seq] = entity.p  # resident here: the arrivals scan must not bring it
        return len(self.accepted) - 1

    def forward(self, entity: Ident, seq: int, message: bytes, reply: bool) -> None:
        """Write a message to the inbox of an entity this process does not run."""
        self.writes += 1
        storage = self.storage
        handle = storage.handle(entity)
        self.accepted.append((seq, handle.p, handle.eco, handle.address, message, reply))
        self.forwarded.add(handle.p)
        if storage.worker:  # this worker may take the partition over before a scan sees it
            storage.forwards.append((self, len(self.accepted) - 1))

    def hand_over(self, partitions: list[int]) -> None:
        """Release these partitions' leases in this group's transaction."""
        self.writes += 1
        self.released.update(partitions)
        self.fenced.update(partitions)

    def want_reply(self, token: int | None, seq: int) -> None:
        """A message of a leaving entity whose sender waits here: its reply comes from the
        next owner. ``token``: its acceptance in this batch; None: already stored."""
        self.writes += 1
        if token is not None:
            accepted = self.accepted[token]
            assert accepted is not None
            self.accepted[token] = (*accepted[:5], True)
        else:
            self.reply_marks.append(seq)

    def tell_waiting(self, seq: int, name: str) -> bool:
        storage = self.storage
        if seq not in storage.reply_wanted:
            return False
        storage.reply_wanted.discard(seq)  # its activation, later, answers nobody
        self.writes += 1
        self.replies.append((seq, name.encode(), WAITING_FOR_CLASS))
        self.reply_clears.append(seq)
        return True

    def unaccept(self, token: int) -> None:
        accepted = self.accepted[token]
        assert accepted is not None
        self.storage.known.pop(accepted[0], None)
        self.accepted[token] = None

    def consume(self, entity: PostgresEntity, seq: int) -> None:
        self.writes += 1
        self.consumed.append(seq)
        self.fenced.add(entity.p)
        if seq in self.storage.reply_wanted:
            record, dead_letter = self.outcome
            self.replies.append((seq, record, dead_letter))

    def set_record(self, entity: PostgresEntity, record: bytes) -> None:
        self.writes += 1
        self.records[entity.eco, entity.address] = (entity.p, record)
        self.fenced.add(entity.p)
        self.outcome = (record, None)

    def set_timer(self, timer: Timer) -> None:
        self.writes += 1
        self.timers_set[timer.seq] = timer
        self.fenced.add(self.storage.timer_partition(timer))

    def remove_timer(self, timer: Timer) -> None:
        self.writes += 1
        self.fenced.add(self.storage.timer_partition(timer))
        if self.timers_set.pop(timer.seq, None) is None:
            self.timers_removed.append(timer.seq)

    def add_dead_letter(self, ecosystem: str, dead_letter_id: int, record: bytes) -> None:
        self.writes += 1
        self.dead_added[ecosystem, dead_letter_id] = record
        self.outcome = (None, dead_letter_id)

    def remove_dead_letter(self, ecosystem: str, dead_letter_id: int) -> None:
        self.writes += 1
        if self.dead_added.pop((ecosystem, dead_letter_id), None) is None:
            self.dead_removed.append((ecosystem, dead_letter_id))

    def next_sequence(self, seq: int) -> None:
        self.storage.check_sequence(seq)


class PostgresStorage:
    """Entities, inboxes, timers and dead letters in PostgreSQL; this process runs a share.

    Args:
        dsn: the libpq connection string.
        worker: own partitions and run their activations (False: a client).
        lease: seconds a partition's lease lasts without renewal.
        poll: seconds between looks at the tables when no notification comes.
        partitions: the partition count for a new database (an existing one keeps its own).
    """

    blocking = True
    volatile = False
    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        worker: bool = True,
        lease: float = 10.0,
        poll: float = 0.5,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:
        self.dsn = dsn
        self.worker = worker
        self.lease = lease
        self.poll = poll
        self.partitions = partitions
        self.name = f"Postgres({dsn!r})"
        self.known: dict[int, int] = {}  # pending seqs the runtime holds -> their partition
        self.reply_wanted: set[int] = set()  # pending seqs whose sender waits for a reply
        self.lost: BaseException | None = None  # a lease lost: the runtime must stop
        self.leaving: set[int] = set()  # owned, being handed over: nothing of them runs here
        self.following = False  # whether this process follows any entity
        self.fenced_commits = 0  # commits refused because a partition moved on
        self.rewrites = 0  # groups written again after a connection failed mid-write
        self._xid: int | None = None  # the transaction of the write in progress
        # A partition taken over is run here only once an arrivals scan that began
        # after the takeover brought its inbox: before that, a message sent here
        # and run at once would overtake older ones from the same sender in the
        # table. Until then (joining), messages to it are forwarded; those the
        # scan did not see are taken back into the inboxes when it becomes active.
        self._active: set[int] = set()
        self._joining: list[int] = []
        self.batches = 0  # batches made; the last written is _committed
        self._committed = 0
        self._scanned: tuple[frozenset[int], int] = (frozenset(), 0)  # last scan: what, after
        self.forwards: list[tuple[PostgresBatch, int]] = []  # maybe unseen by the last scan
        self._incarnation = 0
        self.identity = ""
        self._limit = 0
        self._news = threading.Event()
        self._arrivals_lock = threading.Lock()  # an arrivals scan never overlaps a write
        self._closed = False
        self._stopping = threading.Event()  # set on close: the listener's retry wait ends
        # Partitions whose timers the runtime holds: a partition's timers join in one
        # step (take_gained, under the runtime's lock), never half through a load.
        self._timer_partitions: set[int] = set()
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        self._leases: Leases | None = None
        self._listener: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"PostgresStorage({self.name})"

    # -- opening and closing -------------------------------------------------

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.dsn, autocommit=autocommit)
        except psycopg.Error as error:
            raise StoreAccessError(
                f"cannot connect to PostgreSQL with dsn {self.dsn!r}: {error}".strip()
                + " (is the server running, and is the dsn right?)"
            ) from error

    def _connect_writer(self) -> psycopg.Connection[Any]:
        connection = self._connect(autocommit=True)
        # A worker paused in the middle of a group holds the share locks of its
        # partitions, and takeovers skip locked partitions: the server must end
        # such a transaction, or the partitions stay unserved while it is paused.
        idle = round(max(self.lease, 1.0) * 1000)
        connection.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (str(idle),)
        )
        connection.autocommit = False
        return connection

    def open(self) -> int:
        try:
            return self._open()
        except psycopg.OperationalError as error:
            # The connection dropped or the server went away: nothing is wrong
            # with the data, and opening again may well succeed.
            raise StoreAccessError(
                f"{self.name}: the connection to the server failed while opening: {error}"
            ) from error

    def _open(self) -> int:
        self._writer = self._connect_writer()
        self._reader = self._connect(autocommit=True)
        self._writer.autocommit = True
        try:
            self.partitions = ensure_schema(self._writer, self.name, self.partitions)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as error:
            raise StoreCorruptedError(
                f"{self.name}: creating the schema failed: {error}"
            ) from error
        (self._incarnation,) = self._writer.execute(
            "SELECT nextval('pachyderm_incarnation')"
        ).fetchone()  # type: ignore[misc]
        self._writer.autocommit = False
        if self._incarnation >= 1 << (63 - INCARNATION_BITS):
            raise StoreCorruptedError(f"{self.name}: the incarnation sequence is exhausted")
        first = self._incarnation << INCARNATION_BITS
        self._limit = first + (1 << INCARNATION_BITS)
        self.identity = identity = f"{socket.gethostname()}:{os.getpid()}:{self._incarnation}"
        if self.worker:
            self._leases = Leases(
                self.dsn, identity, self.partitions, self.lease, self._on_gained, self._on_lost
            )
            self._leases.start()
            taken = self._leases.take_gained()  # nothing was sent yet: active at once
            self._active.update(taken)
            self._timer_partitions.update(taken)
        self._listener = threading.Thread(
            target=self._listen, name=f"pachyderm-listen-{identity}", daemon=True
        )
        self._listener.start()
        return first

    def close(self) -> None:
        if self._closed:
            return
        if self.following and self._reader is not None:
            with contextlib.suppress(psycopg.Error):
                self._reader.execute(
                    "DELETE FROM pachyderm_follows WHERE follower = %s", (self.identity,)
                )
                self._reader.execute(
                    "DELETE FROM pachyderm_updates WHERE follower = %s", (self.identity,)
                )
        self._closed = True
        self._stopping.set()
        self._news.set()
        if self._leases is not None:
            self._leases.stop()
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        if self._listener is not None:
            self._listener.join(timeout=5)

    def check_sequence(self, seq: int) -> None:
        if seq >= self._limit:
            raise StoreCorruptedError(
                f"{self.name}: this open used all {1 << INCARNATION_BITS} of its sequence "
                f"numbers; close and open again for a new range"
            )

    # -- ownership -----------------------------------------------------------

    @property
    def owned(self) -> dict[int, int]:
        """Owned partitions and their epochs (empty for a client)."""
        return {} if self._leases is None else self._leases.owned

    def owns(self, entity: Ident) -> bool:
        """Whether this process runs ``entity``'s activations now."""
        eco, name, entity_id = entity
        p = partition_of(eco, layout.address_key(name, entity_id), self.partitions)
        return p in self._active and p not in self.leaving

    def partition(self, entity: PostgresEntity) -> int:
        return entity.p

    def timer_partition(self, timer: Timer) -> int:
        """A timer lives with its owner (who may cancel it), else with its recipient."""
        eco, name, entity_id = timer.owner if timer.owner is not None else timer.recipient
        return partition_of(eco, layout.address_key(name, entity_id), self.partitions)

    def take_gained(self) -> tuple[list[int], list[tuple[PendingMessage, PostgresBatch, int]]]:
        """Partitions that become active, and this worker's messages to them the last scan missed.

        Called under the runtime's lock after the arrivals of the last scan were
        taken in. A partition taken over becomes active once a scan that began
        after the takeover read its inbox; from then on its entities run here
        (see :meth:`owns`) and its timers are the runtime's. The messages
        returned were forwarded to them by this worker, in batches written
        after that scan or not yet: they go into their inboxes after what the
        scan found, as ``(message, its batch, its index in the batch)``.
        """
        if self._leases is None:
            return [], []
        scanned, committed = self._scanned
        self.forwards = [entry for entry in self.forwards if entry[0].serial > committed]
        self._joining.extend(self._leases.take_gained())
        gained = [p for p in self._joining if p in scanned]
        if not gained:
            return [], []
        self._joining = [p for p in self._joining if p not in scanned]
        self._active.update(gained)
        self._timer_partitions.update(gained)
        taken, kept = [], []
        for batch, token in self.forwards:
            row = batch.accepted[token]
            assert row is not None, "a forwarded message is never taken back from its batch"
            seq, p, eco, address, message, _ = row
            if p in self._active:
                self.known[seq] = p  # a later scan must not bring it again
                taken.append((PendingMessage(_ident(eco, address), seq, message), batch, token))
            else:
                kept.append((batch, token))
        self.forwards = kept
        return gained, taken

    def take_releases(self) -> list[int]:
        """Partitions to hand over (this worker holds more than its share): from now on
        they are *leaving*: not run here, and released by the next group's commit."""
        if self._leases is None:
            return []
        releases = self._leases.take_releases()
        self.leaving.update(releases)
        self._timer_partitions.difference_update(releases)
        return releases

    def _released(self, partitions: set[int]) -> None:
        """A group that released ``partitions`` committed: forget them (arrivals lock held)."""
        assert self._leases is not None
        self._leases.drop(partitions)
        self.leaving.difference_update(partitions)
        self._active.difference_update(partitions)
        for seq in [seq for seq, p in self.known.items() if p in partitions]:
            del self.known[seq]
            self.reply_wanted.discard(seq)

    def _on_gained(self, partitions: list[int]) -> None:
        self._news.set()

    def _on_lost(self, error: BaseException) -> None:
        self.lost = error
        self._news.set()

    # -- news: notifications and polling ------------------------------------

    def _listen(self) -> None:
        """Turn notifications into news until closed; reconnect when the connection drops.

        It looks whether it is closed every ``_LISTEN_TICK`` seconds, not every
        ``poll`` (a long poll would hold up close), and retries a lost connection
        as often. Notifications sent before it listens are lost (between the
        runtime's first look at the tables and the first LISTEN, or while the
        connection was down), so listening anew is news: the runtime looks.
        """
        tick = min(self.poll, _LISTEN_TICK)
        while not self._closed:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {_CHANNEL}")
                    self._news.set()
                    while not self._closed:
                        for notification in connection.notifies(timeout=tick, stop_after=1):
                            if self._concerns_me(notification.payload):
                                self._news.set()
            except psycopg.Error:
                self._stopping.wait(tick)

    def _concerns_me(self, payload: str) -> bool:
        for part in payload.split(";"):
            if part in ("r", "*", ""):
                return True
            owned = self.owned
            if owned and any(int(p) in owned for p in part.split(",")):
                return True
        return False

    def wait_news(self, timeout: float) -> None:
        """Block until something may have arrived or been answered, or ``timeout`` passes."""
        self._news.wait(timeout)
        self._news.clear()

    def arrivals(self) -> list[PendingMessage]:
        """Pending messages of owned entities that the runtime does not hold yet, in order.

        In the order their rows were written (``pos``), not by ``seq``: each
        process numbers its own messages, so seqs of two processes do not
        compare, while a sender's message is written after its earlier ones
        (after their commit, if it was run elsewhere then).
        """
        owned = [p for p in self.owned if p not in self.leaving]
        if self._closed:
            return []
        found = []
        with self._arrivals_lock:
            # Batches written up to _committed are all seen by this scan, later ones not.
            self._scanned = (frozenset(owned), self._committed)
            if not owned:
                return []
            # The pending set is scanned by number only (the index holds them); the
            # messages are read for the new ones alone: a backlog the runtime already
            # holds costs little to look at again.
            known = self.known
            new = [
                seq
                for (seq,) in self._read(
                    "SELECT seq FROM pachyderm_inbox WHERE p = ANY(%s)", (owned,)
                )
                if seq not in known
            ]
            if not new:
                return []
            rows = self._read(
                "SELECT seq, p, eco, address, message, reply FROM pachyderm_inbox "
                "WHERE seq = ANY(%s) ORDER BY pos",
                (new,),
            )
            for seq, p, eco, address, message, reply in rows:
                known[seq] = p
                if reply:
                    self.reply_wanted.add(seq)
                found.append(PendingMessage(_ident(eco, address), seq, message))
        return found

    def timers_of(self, partitions: Iterable[int], before: tuple[float, int]) -> list[Timer]:
        """Timers of newly owned partitions, due before ``before``."""
        due, seq = before
        limit = 2**63 - 1 if math.isinf(due) else round(due * _MICROSECONDS)
        return [
            _timer(row)
            for row in self._read(
                "SELECT due, seq, eco, owner, name, recipient, message FROM pachyderm_timers "
                "WHERE p = ANY(%s) AND (due, seq) < (%s, %s) ORDER BY due, seq",
                (list(partitions), limit, seq),
            )
        ]

    def follow(self, entity: Ident) -> tuple[bytes | None, int]:
        """Have the owner of ``entity`` leave this process an update on each commit that
        changes it; return its record and version now (after any commit in flight)."""
        handle = self.handle(entity)
        connection = self._reader
        if self._closed or connection is None:
            raise EcosystemClosedError(f"{self.name} is closed")
        try:
            connection.execute(
                "INSERT INTO pachyderm_follows (eco, address, follower) VALUES (%s, %s, %s) "
                "ON CONFLICT (eco, address, follower) DO UPDATE SET seen = now()",
                (handle.eco, handle.address, self.identity),
            )
            with connection.transaction():
                # FOR SHARE waits for a commit in flight that changes the entity: its
                # update may have missed the follow row, but this read sees its record.
                rows = connection.execute(
                    "SELECT record, version FROM pachyderm_entities "
                    "WHERE eco = %s AND address = %s FOR SHARE",
                    (handle.eco, handle.address),
                ).fetchall()
        except psycopg.Error as error:
            raise StoreAccessError(f"{self.name}: following failed: {error}") from error
        self.following = True
        return (bytes(rows[0][0]), rows[0][1]) if rows else (None, 0)

    def updates(self) -> list[tuple[Ident, int, bytes]]:
        """Changes to followed entities committed by other processes, oldest first."""
        rows = self._read(
            "SELECT id, eco, address, version, record FROM pachyderm_updates "
            "WHERE follower = %s ORDER BY id",
            (self.identity,),
        )
        if rows:  # (read, then deleted: a version told twice is skipped by the runtime)
            self._read(
                "DELETE FROM pachyderm_updates WHERE id = ANY(%s) RETURNING 1",
                ([row[0] for row in rows],),
            )
        return [
            (_ident(eco, address), version, bytes(record))
            for _, eco, address, version, record in rows
        ]

    def touch_follows(self) -> None:
        """Say this process still follows (stale follows are dropped after a while)."""
        self._read(
            "UPDATE pachyderm_follows SET seen = now() WHERE follower = %s RETURNING 1",
            (self.identity,),
        )

    def answers(self, seqs: list[int]) -> list[tuple[int, bytes | None, int | None]]:
        """Replies to messages this process sent and waits on.

        Read, then deleted: a connection lost in between loses no reply (a
        reply read twice is told once; one left by a process that died is
        swept after an hour).
        """
        rows = self._read(
            "SELECT seq, record, dead_letter FROM pachyderm_replies WHERE seq = ANY(%s)", (seqs,)
        )
        if rows:
            self._read(
                "DELETE FROM pachyderm_replies WHERE seq = ANY(%s) RETURNING 1",
                ([row[0] for row in rows],),
            )
        return cast(list[tuple[int, bytes | None, int | None]], rows)

    # -- reading -------------------------------------------------------------

    def _read(self, query: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one statement on the reading connection; reconnect once if it failed.

        Only statements that may run twice come here (reads, and deletes of rows
        already handed over).
        """
        for attempt in range(2):
            reader = self._reader
            if self._closed or reader is None:
                raise EcosystemClosedError(f"{self.name} is closed")
            try:
                return reader.execute(query, parameters).fetchall()
            except psycopg.OperationalError as error:
                if attempt or self._closed:
                    raise StoreAccessError(f"{self.name}: reading failed: {error}") from error
                with contextlib.suppress(psycopg.Error):
                    reader.close()
                self._reader = self._connect(autocommit=True)
            except psycopg.Error as error:
                raise StoreAccessError(f"{self.name}: reading failed: {error}") from error
        raise AssertionError("unreachable")

    def handle(self, entity: Ident) -> PostgresEntity:
        eco, name, entity_id = entity
        address = layout.address_key(name, entity_id)
        return PostgresEntity(eco, address, partition_of(eco, address, self.partitions))

    def load(self, entity: PostgresEntity) -> bytes | None:
        rows = self._read(
            "SELECT record FROM pachyderm_entities WHERE eco = %s AND address = %s",
            (entity.eco, entity.address),
        )
        return bytes(rows[0][0]) if rows else None

    def pending(self) -> Iterator[PendingMessage]:
        return iter(self.arrivals())

    def timers(self, start: tuple[float, int] | None, limit: int) -> list[Timer]:
        owned = sorted(self._timer_partitions)
        if not owned:
            return []
        due, seq = (-1, -1) if start is None else (round(start[0] * _MICROSECONDS), start[1])
        return [
            _timer(row)
            for row in self._read(
                "SELECT due, seq, eco, owner, name, recipient, message FROM pachyderm_timers "
                "WHERE p = ANY(%s) AND (due, seq) >= (%s, %s) ORDER BY due, seq LIMIT %s",
                (owned, due, seq, limit),
            )
        ]

    def named_timers(self, entity: PostgresEntity) -> dict[str, tuple[float, int]]:
        return {
            name: (due / _MICROSECONDS, seq)
            for name, due, seq in self._read(
                "SELECT name, due, seq FROM pachyderm_timers "
                "WHERE eco = %s AND owner = %s AND name IS NOT NULL",
                (entity.eco, entity.address),
            )
        }

    def dead_letters(self, ecosystem: str) -> Iterator[tuple[int, bytes]]:
        for dead_letter_id, record in self._read(
            "SELECT id, record FROM pachyderm_dead_letters WHERE eco = %s ORDER BY id",
            (ecosystem,),
        ):
            yield dead_letter_id, bytes(record)

    def claim_dead_letter(self, ecosystem: str, dead_letter_id: int) -> bytes | None:
        """A dead letter to remove, claimed by a session advisory lock (keyed by its id,
        unique in the database) on the reading connection until the group removing it
        is written: another process claiming it meanwhile is told it is not there."""
        ((locked,),) = self._read("SELECT pg_try_advisory_lock(%s)", (dead_letter_id,))
        if not locked:
            return None
        record = self.dead_letter(ecosystem, dead_letter_id)  # (after the lock: current)
        if record is None:
            self.unclaim_dead_letter(ecosystem, dead_letter_id)
        return record

    def unclaim_dead_letter(self, ecosystem: str, dead_letter_id: int) -> None:
        self._read("SELECT pg_advisory_unlock(%s)", (dead_letter_id,))

    def dead_letter(self, ecosystem: str, dead_letter_id: int) -> bytes | None:
        rows = self._read(
            "SELECT record FROM pachyderm_dead_letters WHERE eco = %s AND id = %s",
            (ecosystem, dead_letter_id),
        )
        return bytes(rows[0][0]) if rows else None

    # -- writing -------------------------------------------------------------

    def batch(self) -> PostgresBatch:
        return PostgresBatch(self)

    def write(self, batch: Batch, *, sync: bool) -> None:
        """Apply a group in one fenced transaction; notify other processes after it commits.

        Raises:
            PartitionLostError: a partition it changes has moved to another
                worker: nothing was written.
            StoreAccessError: the server or the connection failed; whether the
                transaction committed is unknown.
        """
        changes = cast(PostgresBatch, batch)
        if self._closed or self._writer is None:
            raise EcosystemClosedError(f"{self.name} is closed")
        with self._arrivals_lock:
            for attempt in range(_WRITE_ATTEMPTS):
                try:
                    self._transaction(changes, sync)
                    break
                except PartitionLostError:
                    self.fenced_commits += 1
                    raise
                except psycopg.OperationalError as error:
                    # The connection failed, maybe during COMMIT: ask the server what
                    # became of the transaction, on a new connection.
                    if self._outcome() == "committed":
                        break
                    if attempt == _WRITE_ATTEMPTS - 1:
                        raise StoreAccessError(
                            f"{self.name}: writing a group failed {_WRITE_ATTEMPTS} times, "
                            f"nothing of it committed (last: {type(error).__name__}: {error})"
                        ) from error
                    self.rewrites += 1
                    log("postgres.rewrite", store=self.name, error=str(error))
                except psycopg.Error as error:
                    raise StoreAccessError(
                        f"{self.name}: writing a group failed ({type(error).__name__}: {error})"
                    ) from error
            self._committed = changes.serial
            known = self.known
            for seq in changes.consumed:
                known.pop(seq, None)
            self.reply_wanted.difference_update(changes.consumed)
            if changes.released:
                self._released(changes.released)
        for eco, dead_letter_id in changes.dead_removed:  # written: others may look now
            with contextlib.suppress(StoreAccessError, EcosystemClosedError):
                self.unclaim_dead_letter(eco, dead_letter_id)
        if changes.forwarded or changes.replies or changes.followed:
            self._notify(changes)

    def _notify(self, changes: PostgresBatch) -> None:
        """One notification after a commit, saying whom it concerns, so that only they look:
        the owners of partitions given messages, and (``r``) waiters and followers."""
        parts = []
        if changes.replies or changes.followed:
            parts.append("r")
        if changes.forwarded:
            partitions = sorted(changes.forwarded)
            parts.append("*" if len(partitions) > 256 else ",".join(map(str, partitions)))
        assert self._writer is not None
        try:
            with self._writer.transaction():
                self._writer.execute("SET LOCAL synchronous_commit = off")
                self._writer.execute("SELECT pg_notify(%s, %s)", (_CHANNEL, ";".join(parts)))
        except psycopg.Error:
            pass  # committed already: the others find it by polling

    def _transaction(self, changes: PostgresBatch, sync: bool) -> None:
        """One attempt at writing a group; its transaction id kept for :meth:`_outcome`.

        The first statement does what most groups need, in one round trip: takes
        the transaction's id, sets its durability, share-locks the partitions it
        changes (the fence) returning their epochs, and writes the records
        (with an update row for each other process following one of them). A
        fence that fails rolls it all back: the lock is held from that
        statement to the commit, so no owner change can come in between.
        """
        connection = self._writer
        assert connection is not None
        self._xid = None
        records = changes.records
        with connection.transaction(), connection.cursor() as cursor:
            rows = cursor.execute(
                "WITH f AS (SELECT p, epoch FROM pachyderm_partitions "
                "           WHERE p = ANY(%s) FOR SHARE), "
                "v AS (SELECT * FROM unnest(%s::text[], %s::bytea[], %s::int[], %s::bytea[]) "
                "      AS v(eco, address, p, record)), "
                "up AS (INSERT INTO pachyderm_entities AS e (eco, address, p, record) "
                "       SELECT eco, address, p, record FROM v "
                "       ON CONFLICT (eco, address) DO UPDATE "
                "       SET record = EXCLUDED.record, version = e.version + 1 "
                "       RETURNING eco, address, version, record), "
                "told AS (INSERT INTO pachyderm_updates (follower, eco, address, version, record) "
                "       SELECT w.follower, up.eco, up.address, up.version, up.record "
                "       FROM up JOIN pachyderm_follows AS w USING (eco, address) "
                "       WHERE w.follower <> %s RETURNING 1) "
                "SELECT txid_current(), set_config('synchronous_commit', %s, true), "
                "f.p, f.epoch, (SELECT count(*) FROM told) "
                "FROM (SELECT 1) AS one LEFT JOIN f ON true",
                (
                    sorted(changes.fenced),
                    [eco for eco, _ in records],
                    [address for _, address in records],
                    [p for p, _ in records.values()],
                    [record for _, record in records.values()],
                    self.identity,
                    "on" if sync else "off",
                ),
            ).fetchall()
            self._xid = rows[0][0]
            if rows[0][4]:
                changes.followed = True  # (a notification after the commit: followers wake)
            owned = self.owned
            for _, _, p, epoch, _ in rows:
                if p is not None and owned.get(p) != epoch:
                    raise PartitionLostError(
                        f"{self.name}: partition {p} moved to another worker (epoch {epoch}, "
                        f"this worker had {owned.get(p)}): this group was not written; "
                        f"its entities are run there now"
                    )
            _apply(cursor, changes)

    def _outcome(self) -> str:
        """After the writing connection failed: "committed" or "aborted", from the server.

        A backend still running the transaction (the connection cut, not the
        server) is terminated first, so the answer is final.
        """
        old = self._writer
        assert old is not None
        pid = old.info.backend_pid
        with contextlib.suppress(psycopg.Error):
            old.close()
        self._writer = connection = self._connect_writer()
        if self._xid is None:
            return "aborted"  # it failed before it began
        try:
            while True:
                (status,) = connection.execute(  # type: ignore[misc]
                    "SELECT txid_status(%s)", (self._xid,)
                ).fetchone()
                if status != "in progress":
                    connection.commit()
                    return "committed" if status == "committed" else "aborted"
                connection.execute("SELECT pg_terminate_backend(%s)", (pid,))
                connection.commit()
                time.sleep(0.01)
        except psycopg.Error as error:
            raise StoreAccessError(
                f"{self.name}: lost the connection while writing, and cannot learn whether "
                f"the group committed ({error}): its outcome is unknown"
            ) from error


def _apply(cursor: psycopg.Cursor[Any], changes: PostgresBatch) -> None:
    """The statements of one group after its first (which wrote the records), removals
    first (a named timer's replacement, say)."""
    if changes.consumed:
        cursor.execute("DELETE FROM pachyderm_inbox WHERE seq = ANY(%s)", (changes.consumed,))
    if changes.timers_removed:
        cursor.execute(
            "DELETE FROM pachyderm_timers WHERE seq = ANY(%s)", (changes.timers_removed,)
        )
    for eco, dead_letter_id in changes.dead_removed:
        cursor.execute(
            "DELETE FROM pachyderm_dead_letters WHERE eco = %s AND id = %s",
            (eco, dead_letter_id),
        )
        if cursor.rowcount != 1:
            raise UnknownDeadLetterError(
                f"dead letter {dead_letter_id} of ecosystem {eco!r} was taken by another "
                f"process (redelivered or discarded there) while this one did the same"
            )
    # One statement per table, the rows as arrays: never executemany(). It
    # pipelines, and after a pipeline the server does not arm
    # idle_in_transaction_session_timeout, so a worker paused there would hold
    # its partitions' share locks until it resumes (see PostgresStorage.open).
    if changes.reply_clears:
        cursor.execute(
            "UPDATE pachyderm_inbox SET reply = false WHERE seq = ANY(%s)", (changes.reply_clears,)
        )
    if changes.reply_marks:
        cursor.execute(
            "UPDATE pachyderm_inbox SET reply = true WHERE seq = ANY(%s)", (changes.reply_marks,)
        )
    if changes.released:
        cursor.execute(
            "UPDATE pachyderm_partitions SET owner = NULL, lease_until = NULL "
            "WHERE p = ANY(%s) AND owner = %s",
            (sorted(changes.released), changes.storage.identity),
        )
    accepted = [row for row in changes.accepted if row is not None]
    if accepted:  # (pos numbers them in this order)
        _insert(
            cursor,
            "pachyderm_inbox (seq, p, eco, address, message, reply)",
            ("bigint", "integer", "text", "bytea", "bytea", "boolean"),
            accepted,
        )
    if changes.timers_set:
        storage = changes.storage
        _insert(
            cursor,
            "pachyderm_timers (seq, due, p, eco, owner, name, recipient, message)",
            ("bigint", "bigint", "integer", "text", "bytea", "text", "bytea", "bytea"),
            [
                _timer_row(timer, storage.timer_partition(timer))
                for timer in changes.timers_set.values()
            ],
        )
    if changes.dead_added:
        _insert(
            cursor,
            "pachyderm_dead_letters (eco, id, record)",
            ("text", "bigint", "bytea"),
            [(eco, i, record) for (eco, i), record in changes.dead_added.items()],
        )
    if changes.replies:
        _insert(
            cursor,
            "pachyderm_replies (seq, record, dead_letter)",
            ("bigint", "bytea", "bigint"),
            changes.replies,
        )


def _insert(
    cursor: psycopg.Cursor[Any],
    table: str,
    types: tuple[str, ...],
    rows: list[Any],
    conflict: str = "",
) -> None:
    """Insert ``rows`` into ``table`` (with its column list) in one statement, in order."""
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    columns = [list(column) for column in zip(*rows, strict=True)]
    cursor.execute(f"INSERT INTO {table} SELECT * FROM unnest({arrays}){conflict}", columns)


def _ident(eco: str, address: bytes) -> Ident:
    name, entity_id = layout.parse_address(bytes(address))
    return eco, name, entity_id


def _timer_row(timer: Timer, p: int) -> tuple[Any, ...]:
    eco = timer.recipient[0]
    owner = None if timer.owner is None else layout.address_key(*timer.owner[1:])
    return (
        timer.seq,
        round(timer.due * _MICROSECONDS),
        p,
        eco,
        owner,
        timer.name,
        layout.address_key(*timer.recipient[1:]),
        timer.message,
    )


def _timer(row: tuple[Any, ...]) -> Timer:
    due, seq, eco, owner, name, recipient, message = row
    owner_ident = None if owner is None else _ident(eco, owner)
    return Timer(
        due / _MICROSECONDS, seq, owner_ident, name, _ident(eco, recipient), bytes(message)
    )
