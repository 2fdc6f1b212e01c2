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

import math
import os
import socket
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import psycopg

from ecosystems._postgres_leases import Leases
from ecosystems._postgres_schema import DEFAULT_PARTITIONS, ensure_schema
from pachyderm import _layout as layout
from pachyderm._storage import Batch, Ident, PendingMessage, Timer
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
_CHANNEL = "pachyderm"


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
        "forwarded",
        "outcome",
        "records",
        "replies",
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
        self.forwarded = False
        # The last activation's outcome (its record, or its dead letter id): the
        # dispatcher records it before consuming the message it ran on.
        self.outcome: tuple[bytes | None, int | None] = (None, None)

    def __len__(self) -> int:
        return self.writes

    def accept(self, entity: PostgresEntity, seq: int, message: bytes) -> int:
        self.writes += 1
        self.accepted.append((seq, entity.p, entity.eco, entity.address, message, False))
        self.storage.known.add(seq)  # resident here: the arrivals scan must not bring it again
        return len(self.accepted) - 1

    def forward(self, entity: Ident, seq: int, message: bytes, reply: bool) -> None:
        """Write a message to the inbox of an entity this process does not run."""
        self.writes += 1
        storage = self.storage
        handle = storage.handle(entity)
        self.accepted.append((seq, handle.p, handle.eco, handle.address, message, reply))
        self.forwarded = True
        if storage.worker:  # this worker may take the partition over before a scan sees it
            storage.forwards.append((self, len(self.accepted) - 1))

    def unaccept(self, token: int) -> None:
        accepted = self.accepted[token]
        assert accepted is not None
        self.storage.known.discard(accepted[0])
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
        self.known: set[int] = set()  # pending seqs of owned entities the runtime holds
        self.reply_wanted: set[int] = set()  # pending seqs whose sender waits for a reply
        self.lost: BaseException | None = None  # a lease lost: the runtime must stop
        self.fenced_commits = 0  # commits refused because a partition moved on
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
        self._limit = 0
        self._news = threading.Event()
        self._arrivals_lock = threading.Lock()  # an arrivals scan never overlaps a write
        self._closed = False
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
        self._writer = self._connect(autocommit=False)
        self._reader = self._connect(autocommit=True)
        self._writer.autocommit = True
        # A worker paused in the middle of a group holds the share locks of its
        # partitions, and takeovers skip locked partitions: the server must end
        # such a transaction, or the partitions stay unserved while it is paused.
        idle = round(max(self.lease, 1.0) * 1000)
        self._writer.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (str(idle),)
        )
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
        identity = f"{socket.gethostname()}:{os.getpid()}:{self._incarnation}"
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
        self._closed = True
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
        return partition_of(eco, layout.address_key(name, entity_id), self.partitions) in (
            self._active
        )

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
                self.known.add(seq)  # a later scan must not bring it again
                taken.append((PendingMessage(_ident(eco, address), seq, message), batch, token))
            else:
                kept.append((batch, token))
        self.forwards = kept
        return gained, taken

    def _on_gained(self, partitions: list[int]) -> None:
        self._news.set()

    def _on_lost(self, error: BaseException) -> None:
        self.lost = error
        self._news.set()

    # -- news: notifications and polling ------------------------------------

    def _listen(self) -> None:
        """Turn notifications into news until closed; reconnect when the connection drops."""
        while not self._closed:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {_CHANNEL}")
                    while not self._closed:
                        for _ in connection.notifies(timeout=self.poll, stop_after=1):
                            self._news.set()
            except psycopg.Error:
                self._news.wait(self.poll)

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
        owned = list(self.owned)
        if self._closed:
            return []
        found = []
        with self._arrivals_lock:
            # Batches written up to _committed are all seen by this scan, later ones not.
            self._scanned = (frozenset(owned), self._committed)
            if not owned:
                return []
            rows = self._read(
                "SELECT seq, eco, address, message, reply FROM pachyderm_inbox "
                "WHERE p = ANY(%s) ORDER BY pos",
                (owned,),
            )
            known = self.known
            for seq, eco, address, message, reply in rows:
                if seq in known:
                    continue
                known.add(seq)
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

    def answers(self, seqs: list[int]) -> list[tuple[int, bytes | None, int | None]]:
        """Replies to messages this process sent and waits on (each handed over once)."""
        return cast(
            list[tuple[int, bytes | None, int | None]],
            self._read(
                "DELETE FROM pachyderm_replies WHERE seq = ANY(%s) "
                "RETURNING seq, record, dead_letter",
                (seqs,),
            ),
        )

    # -- reading -------------------------------------------------------------

    def _read(self, query: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._closed or self._reader is None:
            raise EcosystemClosedError(f"{self.name} is closed")
        try:
            return self._reader.execute(query, parameters).fetchall()
        except psycopg.Error as error:
            raise StoreAccessError(f"{self.name}: reading failed: {error}") from error

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
        connection = self._writer
        if self._closed or connection is None:
            raise EcosystemClosedError(f"{self.name} is closed")
        with self._arrivals_lock:
            try:
                with connection.transaction(), connection.cursor() as cursor:
                    if not sync:
                        cursor.execute("SET LOCAL synchronous_commit = off")
                    if changes.fenced:
                        self._fence(cursor, changes.fenced)
                    _apply(cursor, changes)
            except PartitionLostError:
                self.fenced_commits += 1
                raise
            except psycopg.Error as error:
                raise StoreAccessError(
                    f"{self.name}: writing a group failed ({type(error).__name__}: {error}); "
                    f"whether it committed is unknown"
                ) from error
            self._committed = changes.serial
            self.known.difference_update(changes.consumed)
            self.reply_wanted.difference_update(changes.consumed)
        if changes.forwarded or changes.replies:
            try:
                connection.execute("SELECT pg_notify(%s, '')", (_CHANNEL,))
                connection.commit()
            except psycopg.Error:
                pass  # committed already: the others find it by polling

    def _fence(self, cursor: psycopg.Cursor[Any], partitions: set[int]) -> None:
        owned = self.owned
        rows = cursor.execute(
            "SELECT p, epoch FROM pachyderm_partitions WHERE p = ANY(%s) FOR SHARE",
            (sorted(partitions),),
        ).fetchall()
        for p, epoch in rows:
            if owned.get(p) != epoch:
                raise PartitionLostError(
                    f"{self.name}: partition {p} moved to another worker (epoch {epoch}, "
                    f"this worker had {owned.get(p)}): this group was not written; "
                    f"its entities are run there now"
                )


def _apply(cursor: psycopg.Cursor[Any], changes: PostgresBatch) -> None:
    """The statements of one group, removals first (a named timer's replacement, say)."""
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
    if changes.records:
        _insert(
            cursor,
            "pachyderm_entities (eco, address, p, record)",
            ("text", "bytea", "integer", "bytea"),
            [(eco, address, p, record) for (eco, address), (p, record) in changes.records.items()],
            " ON CONFLICT (eco, address) DO UPDATE SET record = EXCLUDED.record",
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
