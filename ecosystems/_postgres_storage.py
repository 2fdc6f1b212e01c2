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
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar, cast

import psycopg

from ecosystems._postgres import DEFAULT_LINGER, MAX_STATE_BYTES
from ecosystems._postgres_arrays import blobs, int4s, int8s, texts
from ecosystems._postgres_leases import WRITER_NAME, Leases, writer_name
from ecosystems._postgres_schema import (
    DEAD_LETTER_TAKEN,
    DEFAULT_PARTITIONS,
    FENCED,
    ensure_schema,
)
from pachyderm import _layout as layout
from pachyderm._log import log
from pachyderm._storage import WAITING_FOR_CLASS, Batch, Ident, PendingMessage, Timer
from pachyderm.errors import (
    EcosystemClosedError,
    InvalidArgumentError,
    InvalidIdError,
    PartitionLostError,
    StoreAccessError,
    StoreCorruptedError,
    UnknownDeadLetterError,
    shown,
)

__all__ = [
    "CLAIM_SECONDS",
    "INCARNATION_BITS",
    "PostgresBatch",
    "PostgresEntity",
    "PostgresStorage",
]

INCARNATION_BITS = 36
"""Sequence numbers per open: 2**36; the incarnation is the high bits."""
MAX_ADDRESS_BYTES = 2048
"""An entity's stored address (class name and id) at most: a key of a btree index, whose
entries PostgreSQL caps at about 2.7 kB."""
CLAIM_SECONDS = 30.0
"""A dead letter's claim lapses after this long, if its process's writing session is gone
(its group goes out right after the claim, in milliseconds)."""
_STATEMENT_BYTES = MAX_STATE_BYTES  # a group's rows in one statement at most, the rest in more
T = TypeVar("T")
_MICROSECONDS = 1_000_000
_LAST_DUE = 2**63 - 1  # microseconds: the largest bigint, about 292,000 years after the epoch
_WRITE_ATTEMPTS = 3  # a group whose write failed, and did not commit, is written again
# Notifications: partitions given messages go to the channel of the workers; replies
# and followers' updates to the channel of the process they concern (its incarnation).
_CHANNEL = "pachyderm"
_NOTIFY = (
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify(channel, payload) "
    "FROM unnest(%b::text[], %b::text[]) AS n(channel, payload)"
)
_LISTEN_TICK = 0.25  # seconds between the listener's looks at whether it is closed
# A condition on each row a reading statement deletes (replies and updates already
# told): its transaction then commits without waiting for the WAL flush. Such a
# delete lost in a server crash leaves a row told already: an update is read again
# and skipped (by version); a reply is not read again (nobody waits on it), and is
# deleted when its process closes, or swept after an hour. Waiting for the flush
# put one on the critical path of every client's send_sync.
_NO_FLUSH = "set_config('synchronous_commit', 'off', true) IS NOT NULL"


# What a server answers a role without the rights a store needs, or a read-only server.
_REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


class PostgresEntity:
    """An entity's row key and partition, computed once while it is resident."""

    __slots__ = ("address", "eco", "p")

    def __init__(self, eco: str, address: bytes, p: int) -> None:
        self.eco = eco
        self.address = address
        self.p = p


def shown_dsn(dsn: str) -> str:
    """``dsn`` as errors and logs show it: any password masked, in either form
    (``postgresql://user:secret@host/db``, ``password=secret``, ``?password=secret``)."""
    dsn = re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", dsn)


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
        "followers",
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
        "waiters",
        "writes",
    )

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        storage.batches += 1
        self.serial = storage.batches  # groups are written in the order they were made
        self.writes = 0
        self.records: dict[tuple[str, bytes], tuple[int, bytes]] = {}
        # (seq, partition, eco, address, message, the incarnation waiting on it or None)
        self.accepted: list[tuple[int, int, str, bytes, bytes, int | None] | None] = []
        self.consumed: list[int] = []
        self.timers_set: dict[int, Timer] = {}
        self.timers_removed: list[int] = []
        self.dead_added: dict[tuple[str, int], bytes] = {}
        self.dead_removed: list[tuple[str, int]] = []
        self.replies: list[tuple[int, bytes | None, int | None]] = []
        self.fenced: set[int] = set()
        self.released: dict[int, int] = {}  # partitions released, with their epochs
        self.reply_marks: list[int] = []  # stored inbox rows whose sender now waits remotely
        self.reply_clears: list[int] = []  # stored inbox rows whose sender was answered
        self.forwarded: set[int] = set()  # partitions given messages: their owners are told
        self.waiters: set[int] = set()  # processes (incarnations) answered: told after commit
        self.followers: list[str] = []  # processes whose followers the commit left updates
        # The last activation's outcome (its record, or its dead letter id): the
        # dispatcher records it before consuming the message it ran on.
        self.outcome: tuple[bytes | None, int | None] = (None, None)

    def __len__(self) -> int:
        return self.writes

    def accept(self, entity: PostgresEntity, seq: int, message: bytes) -> int:
        self.writes += 1
        self.accepted.append((seq, entity.p, entity.eco, entity.address, message, None))
        self.storage.known[seq] = entity.p  # resident here: the arrivals scan must not bring it
        return len(self.accepted) - 1

    def forward(self, entity: Ident, seq: int, message: bytes, reply: bool) -> None:
        """Write a message to the inbox of an entity this process does not run."""
        self.writes += 1
        storage = self.storage
        handle = storage.handle(entity)
        waiter = storage.incarnation if reply else None
        self.accepted.append((seq, handle.p, handle.eco, handle.address, message, waiter))
        self.forwarded.add(handle.p)
        if storage.worker:  # this worker may take the partition over before a scan sees it
            storage.forwards.append((self, len(self.accepted) - 1))

    def hand_over(self, partitions: list[int]) -> None:
        """Release these partitions' leases in this group's transaction."""
        self.writes += 1
        owned = self.storage.owned
        self.released.update((p, owned.get(p, -1)) for p in partitions)
        self.fenced.update(partitions)

    def want_reply(self, token: int | None, seq: int) -> None:
        """A message of a leaving entity whose sender waits here: its reply comes from the
        next owner. ``token``: its acceptance in this batch; None: already stored."""
        self.writes += 1
        if token is not None:
            accepted = self.accepted[token]
            assert accepted is not None
            self.accepted[token] = (*accepted[:5], self.storage.incarnation)
        else:
            self.reply_marks.append(seq)

    def answers_others(self) -> bool:
        return bool(self.waiters or self.released)

    def tell_waiting(self, seq: int, name: str) -> bool:
        storage = self.storage
        waiter = storage.reply_wanted.pop(seq, None)  # its activation, later, answers nobody
        if waiter is None:
            return False
        self.writes += 1
        # Fenced: a worker that lost the partition must not answer for the new owner
        # (which runs the message, and answers it, if it has the class).
        p = storage.known.get(seq)
        if p is not None:
            self.fenced.add(p)
        self.waiters.add(waiter)
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
        waiter = self.storage.reply_wanted.get(seq)
        if waiter is not None:
            record, dead_letter = self.outcome
            self.replies.append((seq, record, dead_letter))
            self.waiters.add(waiter)

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
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self.dsn = dsn
        self.worker = worker
        self.lease = lease
        self.poll = poll
        self.linger = linger
        self.partitions = partitions
        self.name = f"Postgres({shown_dsn(dsn)!r})"  # in every error and log event
        self.known: dict[int, int] = {}  # pending seqs the runtime holds -> their partition
        # Pending seqs whose sender waits for a reply: the process (incarnation) to tell.
        self.reply_wanted: dict[int, int] = {}
        self.lost: BaseException | None = None  # a lease lost: the runtime must stop
        self.leaving: set[int] = set()  # owned, being handed over: nothing of them runs here
        self.following = False  # whether this process follows any entity
        self.max_state_bytes = MAX_STATE_BYTES
        self.fenced_commits = 0  # commits refused because a partition moved on
        self.rewrites = 0  # groups written again after a connection failed mid-write
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
        # The last scan's snapshot (xmax, in-progress xids): a scan of the same
        # partitions reads only rows written by transactions it did not see.
        self._snapshot: tuple[int, list[int]] = (0, [])
        self._told: list[int] = []  # replies read: deleted with the next read (or on close)
        self._seen_updates: list[int] = []  # the same for updates of followed entities
        self.forwards: list[tuple[PostgresBatch, int]] = []  # maybe unseen by the last scan
        self.incarnation = 0
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
            # In UTF-8 whatever $PGCLIENTENCODING or the DSN say: the group's arrays are
            # packed in UTF-8 by us (_postgres_arrays), and lookups must send the same bytes.
            return psycopg.connect(self.dsn, autocommit=autocommit, client_encoding="UTF8")
        except psycopg.Error as error:
            raise StoreAccessError(
                f"cannot connect to PostgreSQL with dsn {shown_dsn(self.dsn)!r}: {error}".strip()
                + " (is the server running, and is the dsn right?)"
            ) from error

    def _connect_writer(self) -> psycopg.Connection[Any]:
        connection = self._connect(autocommit=True)
        # A group's transaction never waits on this process (its COMMIT goes with
        # it) except when refused, until the ROLLBACK: a worker paused just then
        # would hold its partitions' share locks, and takeovers skip locked
        # partitions. The server ends a transaction idle for a lease.
        idle = round(max(self.lease, 1.0) * 1000)
        connection.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (str(idle),)
        )
        if self.incarnation:
            _name_writer(connection, self.incarnation)
        return connection  # (in autocommit: a group sends its own BEGIN and COMMIT)

    def open(self) -> int:
        try:
            return self._open()
        except _REFUSED as error:  # (a sequence or a table the tables' owner made)
            raise self._refused(error) from error
        except psycopg.OperationalError as error:
            # The connection dropped or the server went away: nothing is wrong
            # with the data, and opening again may well succeed.
            raise StoreAccessError(
                f"{self.name}: the connection to the server failed while opening: {error}"
            ) from error

    def _open(self) -> int:
        self._writer = self._connect_writer()
        self._reader = self._connect(autocommit=True)
        self._check_encoding(self._writer)
        try:
            self.partitions = ensure_schema(self._writer, self.name, self.partitions)
        except psycopg.OperationalError:
            raise
        except _REFUSED as error:
            raise self._refused(error) from error
        except psycopg.Error as error:
            raise StoreCorruptedError(
                f"{self.name}: creating the schema failed: {error}"
            ) from error
        (self.incarnation,) = self._writer.execute(
            "SELECT nextval('pachyderm_incarnation')"
        ).fetchone()  # type: ignore[misc]
        if self.incarnation >= 1 << (63 - INCARNATION_BITS):
            raise StoreCorruptedError(f"{self.name}: the incarnation sequence is exhausted")
        first = self.incarnation << INCARNATION_BITS
        self._limit = first + (1 << INCARNATION_BITS)
        self.identity = identity = f"{socket.gethostname()}:{os.getpid()}:{self.incarnation}"
        _name_writer(self._writer, self.incarnation)
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

    def _refused(self, error: psycopg.Error) -> StoreAccessError:
        return StoreAccessError(
            f"{self.name}: the server refused this role what a store needs: {error}. The "
            f"first open creates the tables (the role needs CREATE on its schema, e.g. "
            f"GRANT CREATE ON SCHEMA public TO app, or let the tables' owner open it "
            f"first); every process then reads and writes them (GRANT SELECT, INSERT, "
            f"UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app; GRANT USAGE ON ALL "
            f"SEQUENCES IN SCHEMA public TO app), on a server that accepts writes"
        )

    def _check_encoding(self, connection: psycopg.Connection[Any]) -> None:
        """Refuse a database that cannot hold every text as given: one in another encoding
        than UTF8 (or SQL_ASCII, which stores bytes as sent) converts ecosystem ids and
        timer names to it, and a character it lacks ('☃' in LATIN1) failed the group's
        write and stopped the worker."""
        (encoding,) = connection.execute("SHOW server_encoding").fetchone()  # type: ignore[misc]
        if encoding not in ("UTF8", "SQL_ASCII"):
            raise InvalidArgumentError(
                f"{self.name}: the database's encoding is {encoding}, which cannot hold "
                f"every ecosystem id and timer name: use a database in UTF8, made with "
                f"CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0"
            )

    def close(self) -> None:
        if self._closed:
            return
        if self._reader is not None:
            self._tidy()
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

    def _tidy(self) -> None:
        """At close, delete what only this process would read: its write mark, the replies
        to its messages (read or not: who waited is gone), its follows and their updates;
        and withdraw its wait on its messages not run yet, so that their owners write no
        reply for it. The reading connection is made again once if it was cut (an idle
        process's may have been); what fails is left to the workers' sweeps. (An owner
        that took such a message before the withdrawal still answers: swept after an
        hour.)"""
        first = self.incarnation << INCARNATION_BITS
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM pachyderm_replies WHERE seq >= %s AND seq < %s", (first, self._limit)),
            (
                "UPDATE pachyderm_inbox SET waiter = NULL "
                "WHERE seq >= %s AND seq < %s AND waiter = %s",
                (first, self._limit, self.incarnation),
            ),
        ]
        if self._committed:
            statements.append(
                ("DELETE FROM pachyderm_writes WHERE incarnation = %s", (self.incarnation,))
            )
        if self.following:
            statements.append(
                ("DELETE FROM pachyderm_follows WHERE follower = %s", (self.identity,))
            )
            statements.append(
                ("DELETE FROM pachyderm_updates WHERE follower = %s", (self.identity,))
            )
        for attempt in range(2):
            try:
                if attempt:
                    self._reader = self._connect(autocommit=True)
                reader = self._reader
                assert reader is not None
                for query, parameters in statements:
                    reader.execute(query, parameters)
                return
            except psycopg.OperationalError:
                if self._reader is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._reader.close()
            except (psycopg.Error, StoreAccessError):
                return

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

    def _released(self, released: dict[int, int]) -> None:
        """A group that released these partitions (with these epochs) committed: forget
        them (arrivals lock held)."""
        assert self._leases is not None
        self._leases.drop(released)
        partitions = set(released)
        self.leaving.difference_update(partitions)
        self._active.difference_update(partitions)
        scanned, committed = self._scanned  # (taken again, each is scanned whole)
        self._scanned = (scanned - partitions, committed)
        # (a copy, made at once: the runtime's thread may add to it meanwhile)
        for seq, p in self.known.copy().items():
            if p in partitions:
                self.known.pop(seq, None)
                self.reply_wanted.pop(seq, None)

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
        own = _channel(self.incarnation)
        while not self._closed:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {own}")
                    if self.worker:
                        connection.execute(f"LISTEN {_CHANNEL}")
                    self._news.set()
                    while not self._closed:
                        for notification in connection.notifies(timeout=tick, stop_after=1):
                            if notification.channel == own or self._concerns_me(
                                notification.payload
                            ):
                                self._news.set()
            except psycopg.Error:
                self._stopping.wait(tick)

    def _concerns_me(self, partitions: str) -> bool:
        """Whether partitions given messages (a list, or ``*``: many) are owned here."""
        if partitions == "*":
            return True
        owned = self.owned
        return any(int(p) in owned for p in partitions.split(","))

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

        A partition the last scan covered is read from that scan's snapshot on:
        only rows of transactions it did not see (an index range on ``xid``),
        so a backlog, or the dead rows of a busy inbox, is not read again. A
        partition new to this scan is read whole.
        """
        if not self.worker or self._closed:
            # A client owns no partition: nothing arrives for it. Not even the lock:
            # its writes hold it through their commit, and its news (replies) would wait.
            return []
        owned = [p for p in self.owned if p not in self.leaving]
        found = []
        with self._arrivals_lock:
            scanned = self._scanned[0]
            # Batches written up to _committed are all seen by this scan, later ones not.
            self._scanned = (frozenset(owned), self._committed)
            if not owned:
                return []
            xmax, running = self._snapshot
            again = [p for p in owned if p in scanned]
            rows = self._read(
                "SELECT seq, p, eco, address, message, waiter, pos, NULL FROM pachyderm_inbox "
                "WHERE p = ANY(%b::int[]) "
                "UNION ALL SELECT seq, p, eco, address, message, waiter, pos, NULL "
                "FROM pachyderm_inbox WHERE p = ANY(%b::int[]) AND xid >= %s "
                "AND (xid >= %s OR xid = ANY(%b::bigint[])) "
                "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                "pg_current_snapshot()::text "
                "ORDER BY pos NULLS FIRST",
                (
                    int4s([p for p in owned if p not in scanned]),
                    int4s(again),
                    min(running, default=xmax),  # (one index range: the xids at hand are recent)
                    xmax,
                    int8s(running),
                ),
            )
            # xmin:xmax:running (the statement's own snapshot, that of every row here)
            _, top, listed = rows[0][7].split(":")
            self._snapshot = (int(top), [int(xid) for xid in listed.split(",") if xid])
            known = self.known
            for seq, p, eco, address, message, waiter, _, _ in rows[1:]:
                if seq in known:
                    continue  # held already (accepted here, or found before)
                known[seq] = p
                if waiter is not None:
                    self.reply_wanted[seq] = waiter
                found.append(PendingMessage(_ident(eco, address), seq, bytes(message)))
        return found

    def timers_of(
        self, partitions: Iterable[int], before: tuple[float, int], limit: int
    ) -> list[Timer]:
        """The first ``limit`` timers of newly owned partitions due before ``before``."""
        due, seq = before
        last = _LAST_DUE if math.isinf(due) else _microseconds(due)
        return [
            _timer(row)
            for row in self._read(
                "SELECT due, seq, eco, owner, name, recipient, message FROM pachyderm_timers "
                "WHERE p = ANY(%b::int[]) AND (due, seq) < (%s, %s) ORDER BY due, seq LIMIT %s",
                (int4s(list(partitions)), last, seq, limit),
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
        """Changes to followed entities committed by other processes, oldest first.

        Read, and deleted with the next read (a version told twice is skipped by
        the runtime; what is left at close is deleted then).
        """
        rows = self._read(
            "WITH gone AS (DELETE FROM pachyderm_updates WHERE id = ANY(%b::bigint[]) "
            f"AND {_NO_FLUSH}) "
            "SELECT id, eco, address, version, record FROM pachyderm_updates "
            "WHERE follower = %s AND NOT id = ANY(%b::bigint[]) ORDER BY id",
            (int8s(self._seen_updates), self.identity, int8s(self._seen_updates)),
        )
        self._seen_updates = [row[0] for row in rows]
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

        Read, and deleted with the next read, in one round trip: a connection
        lost in between loses no reply (a reply read twice is told once; one
        left by a process that died is swept after an hour).
        """
        rows = self._read(
            "WITH gone AS (DELETE FROM pachyderm_replies WHERE seq = ANY(%b::bigint[]) "
            f"AND {_NO_FLUSH}) "
            "SELECT seq, record, dead_letter FROM pachyderm_replies WHERE seq = ANY(%b::bigint[])",
            (int8s(self._told), int8s(seqs)),
        )
        self._told = [row[0] for row in rows]
        return cast(list[tuple[int, bytes | None, int | None]], rows)

    # -- reading -------------------------------------------------------------

    def sent_waiting(self, below: int) -> bool:
        """Whether a message this process accepted (its sequence number below ``below``)
        waits in a partition it does not run.

        Only there: the runtime knows the messages of its own partitions (those
        of a paused runtime, or of a class still to be registered, included).
        """
        first = self.incarnation << INCARNATION_BITS
        return bool(
            self._read(
                "SELECT 1 FROM pachyderm_inbox WHERE seq >= %s AND seq < %s "
                "AND NOT p = ANY(%b::int[]) LIMIT 1",
                (first, min(below, self._limit), int4s(list(self.owned))),
            )
        )

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
                return reader.execute(query, parameters, binary=True).fetchall()
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
        address = self.check_address(name, entity_id)
        return PostgresEntity(eco, address, partition_of(eco, address, self.partitions))

    def check_address(self, name: str, entity_id: object) -> bytes:
        """An entity's stored address; refused if it cannot be a key here.

        Raises:
            InvalidIdError: over :data:`MAX_ADDRESS_BYTES`.
        """
        address = layout.address_key(name, entity_id)
        if len(address) > MAX_ADDRESS_BYTES:
            raise InvalidIdError(
                f"the entity {name}({shown(entity_id, 60)}) has an "
                f"address of {len(address):,} bytes (class name and id), over Postgres' "
                f"limit of {MAX_ADDRESS_BYTES:,}: use a shorter id, e.g. a digest of this "
                f"one (hashlib.sha256(...).digest())"
            )
        return address

    def load(self, entity: PostgresEntity) -> bytes | None:
        rows = self._read(
            "SELECT record FROM pachyderm_entities WHERE eco = %s AND address = %s",
            (entity.eco, entity.address),
        )
        return bytes(rows[0][0]) if rows else None

    def load_many(self, entities: list[PostgresEntity]) -> list[bytes | None]:
        # Looked up by key (OFFSET 0: never a join over a scan of every entity).
        rows = self._read(
            "SELECT r.i, x.record FROM unnest(%b::text[], %b::bytea[]) WITH ORDINALITY "
            "AS r (eco, address, i) CROSS JOIN LATERAL (SELECT record FROM "
            "pachyderm_entities AS e WHERE e.eco = r.eco AND e.address = r.address "
            "OFFSET 0) AS x",
            (texts([entity.eco for entity in entities]), blobs([e.address for e in entities])),
        )
        found: list[bytes | None] = [None] * len(entities)
        for ordinal, record in rows:
            found[ordinal - 1] = bytes(record)
        return found

    def pending(self) -> Iterator[PendingMessage]:
        return iter(self.arrivals())

    def timers(self, start: tuple[float, int] | None, limit: int) -> list[Timer]:
        owned = sorted(self._timer_partitions)
        if not owned:
            return []
        due, seq = (-1, -1) if start is None else (_microseconds(start[0]), start[1])
        return [
            _timer(row)
            for row in self._read(
                "SELECT due, seq, eco, owner, name, recipient, message FROM pachyderm_timers "
                "WHERE p = ANY(%b::int[]) AND (due, seq) >= (%s, %s) ORDER BY due, seq LIMIT %s",
                (int4s(owned), due, seq, limit),
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
        """A dead letter to remove, claimed in its row for this process until the group
        removing it is written; None if it is not there, or another process claimed
        it. The claim outlives reconnects, so no other process can take the letter
        meanwhile; it lapses after :data:`CLAIM_SECONDS` if its process's writing
        session is gone by then (the process died, or is cut off).
        """
        me = self.incarnation
        rows = self._read(_CLAIM, (me, CLAIM_SECONDS, ecosystem, dead_letter_id, me, WRITER_NAME))
        return bytes(rows[0][0]) if rows else None

    def unclaim_dead_letter(self, ecosystem: str, dead_letter_id: int) -> None:
        self._read(
            "UPDATE pachyderm_dead_letters SET claimed_by = NULL, claimed_until = NULL "
            "WHERE eco = %s AND id = %s AND claimed_by = %s RETURNING id",
            (ecosystem, dead_letter_id, self.incarnation),
        )

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
                except psycopg.OperationalError as error:
                    # The connection failed, maybe during COMMIT: ask the server what
                    # became of the transaction, on a new connection.
                    if self._outcome(changes.serial) == "committed":
                        break
                    if attempt == _WRITE_ATTEMPTS - 1:
                        raise StoreAccessError(
                            f"{self.name}: writing a group failed {_WRITE_ATTEMPTS} times, "
                            f"nothing of it committed (last: {type(error).__name__}: {error})"
                        ) from error
                    self.rewrites += 1
                    log("postgres.rewrite", store=self.name, error=str(error))
                except psycopg.Error as error:
                    self._roll_back()
                    if error.sqlstate == FENCED:
                        self.fenced_commits += 1
                        raise PartitionLostError(f"{self.name}: {_message(error)}") from None
                    if error.sqlstate == DEAD_LETTER_TAKEN:
                        raise UnknownDeadLetterError(_message(error)) from None
                    raise StoreAccessError(
                        f"{self.name}: writing a group failed ({type(error).__name__}: {error})"
                    ) from error
            self._committed = changes.serial
            known = self.known
            for seq in changes.consumed:
                known.pop(seq, None)
            for seq in changes.consumed:
                self.reply_wanted.pop(seq, None)
            if changes.released:
                self._released(changes.released)
        if changes.followers:  # (known only now: rare)
            self._notify_followers(changes.followers)

    def _notify_followers(self, followers: list[str]) -> None:
        """Tell processes following entities that their updates are there (after the commit)."""
        assert self._writer is not None
        channels = [_channel(int(identity.rsplit(":", 1)[1])) for identity in followers]
        with contextlib.suppress(psycopg.Error):  # committed already: polling finds it
            self._writer.execute(_NOTIFY, (texts(channels), texts([""] * len(channels))))

    def _transaction(self, changes: PostgresBatch, sync: bool) -> None:
        """One attempt at writing a group, in one round trip.

        Its statement (:func:`_group`, with the group's rare changes after it),
        its COMMIT and then its notification go to the server together (a
        pipeline), so no lock is held while this process waits: a worker paused
        in the middle of a group holds nothing. The notification is a
        transaction of its own after the commit (in the group's own, it would
        hold a database-wide lock through the commit's flush), and goes only to
        whom it concerns: to the workers, which partitions were given messages
        (each looks if it owns one), and to each process a reply is for.
        """
        connection = self._writer
        assert connection is not None
        with connection.pipeline(), connection.cursor() as cursor:
            cursor.execute("BEGIN", prepare=False)
            for statement in _statements(changes, self.owned, sync):
                cursor.execute(*statement)
            told = None
            if changes.records:
                told = connection.cursor()
                told.execute(
                    _TOLD,
                    (
                        texts([eco for eco, _ in changes.records]),
                        blobs([address for _, address in changes.records]),
                        self.identity,
                    ),
                )
            _apply_rare(cursor, changes)
            cursor.execute("COMMIT", prepare=False)  # (its text on the wire: tests cut there)
            channels = [_channel(waiter) for waiter in sorted(changes.waiters)]
            payloads = [""] * len(channels)
            if changes.forwarded:
                partitions = sorted(changes.forwarded)
                channels.append(_CHANNEL)
                payloads.append("*" if len(partitions) > 256 else ",".join(map(str, partitions)))
            if channels:
                cursor.execute(_NOTIFY, (texts(channels), texts(payloads)))
        if told is not None:
            row = told.fetchone()
            assert row is not None
            changes.followers = row[0] or []

    def _roll_back(self) -> None:
        """End a group the server refused (its transaction is in error)."""
        assert self._writer is not None
        with contextlib.suppress(psycopg.Error):
            self._writer.execute("ROLLBACK")

    def _outcome(self, serial: int) -> str:
        """After the writing connection failed: whether group ``serial`` committed.

        A backend still running the transaction (the connection cut, not the
        server) is terminated first, so the answer is final; then the mark the
        group's transaction leaves in ``pachyderm_writes`` says.
        """
        old = self._writer
        assert old is not None
        pid = old.info.backend_pid
        with contextlib.suppress(psycopg.Error):
            old.close()
        self._writer = connection = self._connect_writer()
        try:
            while connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchall():
                time.sleep(0.01)
            rows = connection.execute(
                "SELECT serial FROM pachyderm_writes WHERE incarnation = %s", (self.incarnation,)
            ).fetchall()
        except psycopg.Error as error:
            raise StoreAccessError(
                f"{self.name}: lost the connection while writing, and cannot learn whether "
                f"the group committed ({error}): its outcome is unknown"
            ) from error
        return "committed" if rows and rows[0][0] >= serial else "aborted"


def _statements(
    changes: PostgresBatch, owned: dict[int, int], sync: bool
) -> list[tuple[str, list[Any]]]:
    """The statements that write what most groups change: one (:func:`_group`), unless
    its rows pass ``_STATEMENT_BYTES``. PostgreSQL takes at most 1 GB in one statement
    (a burst of a thousand 1 MB messages, say, made one too big, and the runtime
    stopped): then the group's statement goes without its rows, and they follow in
    statements of at most ``_STATEMENT_BYTES`` each (a row is at most
    ``MAX_STATE_BYTES``, or a message), all in the group's one transaction."""
    records = list(changes.records.items())
    accepted = [row for row in changes.accepted if row is not None]
    timers = (
        [
            _timer_row(timer, changes.storage.timer_partition(timer))
            for timer in changes.timers_set.values()
        ]
        if changes.timers_set
        else []
    )
    replies = changes.replies
    if len(records) + len(accepted) + len(timers) + len(replies) < 2 or (
        sum(len(record) for _, (_, record) in records)
        + sum(len(row[4]) for row in accepted)
        + sum(len(row[7]) for row in timers)
        + sum(len(row[1] or b"") for row in replies)
        <= _STATEMENT_BYTES
    ):  # (one row is never split: the sums only when there are more)
        return [_group(changes, owned, sync, records, accepted, timers, replies)]
    return [
        _group(changes, owned, sync, [], [], [], []),
        *map(_upserted, _chunks(records, [len(record) for _, (_, record) in records])),
        *map(_sent, _chunks(accepted, [len(row[4]) for row in accepted])),
        *map(_timed, _chunks(timers, [len(row[7]) for row in timers])),
        *map(_answered, _chunks(replies, [len(row[1] or b"") for row in replies])),
    ]


def _chunks(rows: list[T], sizes: list[int]) -> Iterator[list[T]]:
    """``rows`` in runs whose ``sizes`` add up to ``_STATEMENT_BYTES`` at most (a row
    alone may be more)."""
    chunk: list[T] = []
    taken = 0
    for row, size in zip(rows, sizes, strict=True):
        if chunk and taken + size > _STATEMENT_BYTES:
            yield chunk
            chunk, taken = [], 0
        chunk.append(row)
        taken += size
    if chunk:
        yield chunk


def _upserted(records: list[tuple[tuple[str, bytes], tuple[int, bytes]]]) -> tuple[str, list[Any]]:
    """Records written: each entity's new state (its version counts up)."""
    return (
        "INSERT INTO pachyderm_entities AS e (eco, address, p, record) "
        "SELECT * FROM unnest(%b::text[], %b::bytea[], %b::int[], %b::bytea[]) "
        "ON CONFLICT (eco, address) DO UPDATE "
        "SET record = EXCLUDED.record, version = e.version + 1",
        [
            texts([eco for (eco, _), _ in records]),
            blobs([address for (_, address), _ in records]),
            int4s([p for _, (p, _) in records]),
            blobs([record for _, (_, record) in records]),
        ],
    )


def _sent(accepted: list[tuple[int, int, str, bytes, bytes, int | None]]) -> tuple[str, list[Any]]:
    """Inbox rows written, numbered (pos) in this order."""
    seqs, partitions, ecos, addresses, messages, waiters = zip(*accepted, strict=True)
    return (
        "INSERT INTO pachyderm_inbox (seq, p, eco, address, message, waiter) "
        "SELECT * FROM unnest(%b::bigint[], %b::int[], %b::text[], %b::bytea[], "
        "%b::bytea[], %b::bigint[])",
        [
            int8s(seqs),
            int4s(partitions),
            texts(ecos),
            blobs(addresses),
            blobs(messages),
            int8s(waiters),
        ],
    )


def _timed(rows: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """Timers set (a named timer's replacement has a seq of its own)."""
    seqs, dues, partitions, ecos, owners, names, recipients, messages = zip(*rows, strict=True)
    return (
        "INSERT INTO pachyderm_timers (seq, due, p, eco, owner, name, recipient, message) "
        "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::int[], %b::text[], "
        "%b::bytea[], %b::text[], %b::bytea[], %b::bytea[])",
        [
            int8s(seqs),
            int8s(dues),
            int4s(partitions),
            texts(ecos),
            blobs(owners),
            texts(names),
            blobs(recipients),
            blobs(messages),
        ],
    )


def _answered(replies: list[tuple[int, bytes | None, int | None]]) -> tuple[str, list[Any]]:
    """Replies for senders waiting in other processes."""
    seqs, records, dead_letters = zip(*replies, strict=True)
    return (
        "INSERT INTO pachyderm_replies (seq, record, dead_letter) "
        "SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::bigint[])",
        [int8s(seqs), blobs(records), int8s(dead_letters)],
    )


def _group(
    changes: PostgresBatch,
    owned: dict[int, int],
    sync: bool,
    records: list[tuple[tuple[str, bytes], tuple[int, bytes]]],
    accepted: list[tuple[int, int, str, bytes, bytes, int | None]],
    timers: list[tuple[Any, ...]],
    replies: list[tuple[int, bytes | None, int | None]],
) -> tuple[str, list[Any]]:
    """The statement that writes what most groups change, with these rows, and its
    parameters.

    One statement, its parts as data-modifying CTEs, the rows as arrays (one
    round trip of the server's executor, and of psycopg's, per group). The
    fence (``pachyderm_fence``) share-locks the partitions the group changes,
    to the commit, so that no owner change comes in between, and raises if one
    has moved on (a partition not owned here has epoch -1): the server rolls
    the group back. It writes the records, this process's write mark, the
    consumed and the new inbox rows, timers and replies (the followers' update
    rows come after, see ``_TOLD``). No two parts touch one row. It answers
    the durability it set.
    """
    storage = changes.storage
    parts = []
    parameters: list[Any] = []
    fenced = sorted(changes.fenced)
    if fenced:
        parts.append("fence AS (SELECT pachyderm_fence(%b::int[], %b::bigint[]))")
        parameters += [int4s(fenced), int8s([owned.get(p, -1) for p in fenced])]
    if records:
        query, values = _upserted(records)
        parts.append(f"up AS ({query})")
        parameters += values
    parts.append(
        "mark AS (INSERT INTO pachyderm_writes (incarnation, serial) VALUES (%s, %s) "
        "       ON CONFLICT (incarnation) DO UPDATE SET serial = EXCLUDED.serial, at = now())"
    )
    parameters += [storage.incarnation, changes.serial]
    if changes.consumed:
        parts.append("consumed AS (DELETE FROM pachyderm_inbox WHERE seq = ANY(%b::bigint[]))")
        parameters.append(int8s(changes.consumed))
    if changes.timers_removed:  # (a named timer's replacement has a seq of its own)
        parts.append("unset AS (DELETE FROM pachyderm_timers WHERE seq = ANY(%b::bigint[]))")
        parameters.append(int8s(changes.timers_removed))
    if accepted:
        query, values = _sent(accepted)
        parts.append(f"sent AS ({query})")
        parameters += values
    if timers:
        query, values = _timed(timers)
        parts.append(f"timed AS ({query})")
        parameters += values
    if replies:
        query, values = _answered(replies)
        parts.append(f"answered AS ({query})")
        parameters += values
    checks = "(SELECT count(*) FROM fence)" if fenced else "0"
    parameters.append("on" if sync else "off")
    query = f"WITH {', '.join(parts)} SELECT set_config('synchronous_commit', %s, true), {checks}"
    return query, parameters


# The update rows of a group's records for the other processes following them. A
# statement of its own, after the group's: its snapshot is taken once the group holds
# the records' row locks, so it sees every follow row committed before a follower's
# read of the record (which waits for those locks): in the group's statement, a follow
# committed between its start and its upsert would be missed, and the follower, having
# read the record before the group, would never hear of the group's version.
# Each record is looked up by key, follows first (usually none): "OFFSET 0" keeps the
# planner from turning the lookups into joins, which it would hash over a scan of
# every entity when it guesses the tables small (a generic plan, fresh statistics).
_TOLD = (
    "WITH told AS (INSERT INTO pachyderm_updates (follower, eco, address, version, record) "
    "       SELECT w.follower, r.eco, r.address, e.version, e.record "
    "       FROM unnest(%b::text[], %b::bytea[]) AS r (eco, address) "
    "       CROSS JOIN LATERAL (SELECT follower FROM pachyderm_follows AS f "
    "           WHERE f.eco = r.eco AND f.address = r.address AND f.follower <> %s "
    "           OFFSET 0) AS w "
    "       CROSS JOIN LATERAL (SELECT version, record FROM pachyderm_entities AS x "
    "           WHERE x.eco = r.eco AND x.address = r.address OFFSET 0) AS e "
    "       RETURNING follower) "
    "SELECT array_agg(DISTINCT follower) FROM told"
)


# A dead letter claimed for this process (its incarnation): if unclaimed, claimed by it
# already (a statement run again after a reconnect), or claimed by a process whose claim
# lapsed with no writing session of it left in this database. Not the session alone: a
# live process's writing session may be cut while idle, and is made again only when it
# next writes (a group goes out right after its claims).
_CLAIM = (
    "UPDATE pachyderm_dead_letters AS d "
    "SET claimed_by = %s, claimed_until = now() + make_interval(secs => %s) "
    "WHERE eco = %s AND id = %s AND (claimed_by IS NULL OR claimed_by = %s "
    "    OR claimed_until < now() AND NOT EXISTS (SELECT 1 FROM pg_stat_activity "
    "        WHERE datname = current_database() "
    "        AND application_name = " + writer_name("d.claimed_by::text") + ")) "
    "RETURNING record"
)


def _apply_rare(cursor: psycopg.Cursor[Any], changes: PostgresBatch) -> None:
    """A group's rare changes, each a statement after the group's own (:func:`_group`)."""
    if changes.dead_removed:  # (each claimed by this process: see claim_dead_letter)
        cursor.execute(
            "SELECT pachyderm_take_claimed_dead_letters(%b::text[], %b::bigint[], %s)",
            (
                texts([eco for eco, _ in changes.dead_removed]),
                int8s([i for _, i in changes.dead_removed]),
                changes.storage.incarnation,
            ),
        )
    added = list(changes.dead_added.items())
    for chunk in _chunks(added, [len(record) for _, record in added]):  # (see _statements)
        cursor.execute(
            "INSERT INTO pachyderm_dead_letters (eco, id, record) "
            "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bytea[])",
            [
                texts([eco for (eco, _), _ in chunk]),
                int8s([i for (_, i), _ in chunk]),
                blobs([record for _, record in chunk]),
            ],
        )
    if changes.reply_clears:
        cursor.execute(
            "UPDATE pachyderm_inbox SET waiter = NULL WHERE seq = ANY(%b::bigint[])",
            (int8s(changes.reply_clears),),
        )
    if changes.reply_marks:
        cursor.execute(
            "UPDATE pachyderm_inbox SET waiter = %s WHERE seq = ANY(%b::bigint[])",
            (changes.storage.incarnation, int8s(changes.reply_marks)),
        )
    if changes.released:
        cursor.execute(
            "UPDATE pachyderm_partitions SET owner = NULL, lease_until = NULL "
            "WHERE p = ANY(%b::int[]) AND owner = %s",
            (int4s(sorted(changes.released)), changes.storage.identity),
        )


def _name_writer(connection: psycopg.Connection[Any], incarnation: int) -> None:
    """Name the session that writes groups after its process (see ``Leases``: a worker
    taking over partitions ends the writing session of their owner, past its lease)."""
    connection.execute(
        "SELECT set_config('application_name', " + writer_name("%s::text") + ", false)",
        (WRITER_NAME, incarnation),
    )


def _channel(incarnation: int) -> str:
    """The notification channel of one process: its replies and followers' updates."""
    return f"{_CHANNEL}_{incarnation}"


def _message(error: psycopg.Error) -> str:
    """The message a Pachyderm function raised on the server."""
    diagnostic = error.diag.message_primary
    return diagnostic if diagnostic is not None else str(error)


def _ident(eco: str, address: bytes) -> Ident:
    name, entity_id = layout.parse_address(bytes(address))
    return eco, name, entity_id


def _microseconds(due: float) -> int:
    """A due time as stored: microseconds, clamped to a bigint's range as LocalDisk clamps
    to its key's. A clock may be set far ahead (a ManualClock at 10**13 s, say): a due time
    over the column's range failed the group's write and stopped the worker."""
    return min(max(0, round(due * _MICROSECONDS)), _LAST_DUE)


def _timer_row(timer: Timer, p: int) -> tuple[Any, ...]:
    eco = timer.recipient[0]
    owner = None if timer.owner is None else layout.address_key(*timer.owner[1:])
    return (
        timer.seq,
        _microseconds(timer.due),
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
