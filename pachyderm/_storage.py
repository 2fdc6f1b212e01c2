"""The host/store boundary: what the live runtime asks of whatever keeps its data.

The runtime speaks of entities, inboxes, records, timers and dead letters,
never of keys or tables. A :class:`Storage` reads them back and writes a
:class:`Batch` of changes atomically. :class:`~pachyderm._kv.KeyValueStorage`
implements it over any ordered key-value :class:`~pachyderm._store.Store`
(LevelDB, dicts); a SQL database implements it with tables. Entities are
named by :data:`Ident`; a storage may attach a *handle* of its own to each
(precomputed keys, say), which the runtime keeps and passes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

__all__ = [
    "WAITING_FOR_CLASS",
    "Batch",
    "Ident",
    "PendingMessage",
    "SharedBatch",
    "SharedStorage",
    "Storage",
    "Timer",
]

Ident = tuple[str, str, Any]
"""An entity as stored data names it: ``(ecosystem id, entity name, entity id)``.

It needs no registered class, so data of classes this process has not
imported can still be read, kept and written."""


class PendingMessage(NamedTuple):
    """An accepted, unprocessed message found when a store opens."""

    entity: Ident
    seq: int
    message: bytes


class Timer:
    """A pending timer: deliver ``message`` to ``recipient`` at ``due``.

    ``owner`` set it (and, with a ``name``, may cancel or replace it);
    ``seq`` orders timers due at the same time and identifies this one.
    """

    __slots__ = ("cancelled", "due", "message", "name", "owner", "recipient", "seq")

    def __init__(
        self,
        due: float,
        seq: int,
        owner: Ident | None,
        name: str | None,
        recipient: Ident,
        message: bytes,
    ) -> None:
        self.due = due
        self.seq = seq
        self.owner = owner
        self.name = name
        self.recipient = recipient
        self.message = message
        self.cancelled = False  # the runtime's mark: replaced or cancelled before it fired

    @property
    def key(self) -> tuple[float, int]:
        """Its place in due order."""
        return self.due, self.seq

    def __repr__(self) -> str:
        return (
            f"Timer(due={self.due!r}, seq={self.seq}, owner={self.owner!r}, "
            f"name={self.name!r}, recipient={self.recipient!r})"
        )


class Batch(Protocol):
    """Changes to write in one atomic transaction, in the order they were made."""

    def accept(self, entity: Any, seq: int, message: bytes) -> int:
        """Add ``message`` to the inbox of ``entity`` (a handle); returns a token for it."""
        ...

    def unaccept(self, token: int) -> None:
        """Take back an :meth:`accept` of this batch: consumed before written, it never is."""
        ...

    def consume(self, entity: Any, seq: int) -> None:
        """Remove message ``seq``, accepted by an earlier batch, from the inbox of ``entity``."""
        ...

    def set_record(self, entity: Any, record: bytes) -> None:
        """Store the entity's new record (its versioned state)."""
        ...

    def set_timer(self, timer: Timer) -> None:
        """Add a pending timer (a named one replaces its owner's timer of that name)."""
        ...

    def remove_timer(self, timer: Timer) -> None:
        """Remove a pending timer: it fired, or was cancelled or replaced."""
        ...

    def add_dead_letter(self, ecosystem: str, dead_letter_id: int, record: bytes) -> None:
        """Keep a failed message and why it failed."""
        ...

    def remove_dead_letter(self, ecosystem: str, dead_letter_id: int) -> None:
        """Forget a dead letter (discarded, or redelivered in this same batch)."""
        ...

    def next_sequence(self, seq: int) -> None:
        """Record the next unused sequence number, so a restart never reuses one."""
        ...

    def __len__(self) -> int:
        """How many changes were recorded (taken-back ones included)."""
        ...


class Storage(Protocol):
    """Where the live runtime keeps its entities, inboxes, timers and dead letters."""

    #: How the store is named in messages and logs.
    name: str
    #: True if :meth:`write` blocks on I/O (the runtime may run it in a worker thread).
    blocking: bool
    #: True if a write adds no durability to what the runtime holds in memory (the
    #: store lives in the same process): a message is then durably accepted as soon
    #: as it is accepted, and a ``send`` need not wait for the write.
    volatile: bool

    def open(self) -> int:
        """Check (or create) the storage's format; return the next unused sequence number.

        Raises:
            StoreCorruptedError: the data is not of a format this code reads.
        """
        ...

    def handle(self, entity: Ident) -> Any:
        """The storage's handle for an entity, which the runtime keeps and passes back."""
        ...

    def load(self, entity: Any) -> bytes | None:
        """The entity's stored record (``None``: never stored)."""
        ...

    def pending(self) -> Iterator[PendingMessage]:
        """Every accepted, unprocessed message: each entity's in acceptance order."""
        ...

    def timers(self, start: tuple[float, int] | None, limit: int) -> list[Timer]:
        """Up to ``limit`` pending timers in due order: from ``start`` on, if given."""
        ...

    def named_timers(self, entity: Any) -> dict[str, tuple[float, int]]:
        """The entity's pending named timers: ``{name: (due, seq)}``."""
        ...

    def dead_letters(self, ecosystem: str) -> Iterator[tuple[int, bytes]]:
        """Every dead letter of an ecosystem as ``(id, record)``, oldest first."""
        ...

    def dead_letter(self, ecosystem: str, dead_letter_id: int) -> bytes | None:
        """One dead letter's record, or ``None``."""
        ...

    def batch(self) -> Batch:
        """A new, empty batch of changes."""
        ...

    def write(self, batch: Batch, *, sync: bool) -> None:
        """Apply ``batch`` atomically; durably (fsync or the like) if ``sync``."""
        ...

    def close(self) -> None:
        """Release the storage; later calls are errors."""
        ...


WAITING_FOR_CLASS = -1
"""The dead letter id of a reply that says: the message waits for a class to be registered
where it runs (the reply's record is then the class's stored name)."""


class SharedBatch(Batch, Protocol):
    """A batch of a :class:`SharedStorage`: it can also write to entities run elsewhere."""

    def tell_waiting(self, seq: int, name: str) -> bool:
        """If a sender elsewhere waits on stored message ``seq``, reply that it waits for
        class ``name`` (and no other reply follows); whether one did."""
        ...

    def forward(self, entity: Ident, seq: int, message: bytes, reply: bool) -> None:
        """Add ``message`` to the stored inbox of an entity another process runs;
        ``reply``: the sender waits for the state after its activation."""
        ...

    def hand_over(self, partitions: list[int]) -> None:
        """Release these partitions in this batch's transaction."""
        ...

    def want_reply(self, token: int | None, seq: int) -> None:
        """A sender here waits on message ``seq`` of an entity being handed over: its
        next owner answers. ``token``: its acceptance in this batch; None: stored."""
        ...

    def answers_others(self) -> bool:
        """Whether other processes wait on this batch: replies to their senders, or
        partitions it releases."""
        ...


class SharedStorage(Storage, Protocol):
    """A storage that many processes share (Postgres): each runs the entities of the
    partitions it owns, and hears from the store what the others did.

    The runtime waits for news in a worker thread (:meth:`wait_news`), then
    takes it under its lock: messages that arrived for its entities, partitions
    gained or to hand over, replies to messages it forwarded, and changes to
    entities it follows.
    """

    shared: bool
    #: Seconds between looks at the store when no notification comes.
    poll: float
    #: Seconds a write waits, at most, for replies due to this process's last write.
    linger: float
    #: Set when this process lost a partition it owned: the runtime must stop.
    lost: BaseException | None
    #: Whether this process follows any entity (through :meth:`follow`).
    following: bool
    #: The largest stored state an activation may leave (a larger one fails it).
    max_state_bytes: int

    def owns(self, entity: Ident) -> bool:
        """Whether this process runs ``entity``'s activations now."""
        ...

    def check_address(self, name: str, entity_id: Any) -> object:
        """Raise a PachydermError if this entity's address cannot be stored here."""
        ...

    def load_many(self, entities: list[Any]) -> list[bytes | None]:
        """The stored records of several entities (handles), in their order: one read."""
        ...

    def sent_waiting(self, below: int) -> bool:
        """Whether a message this process accepted (with a sequence number below
        ``below``) still waits in an inbox of an entity another process runs."""
        ...

    def partition(self, entity: Any) -> int:
        """The partition of an entity (a handle)."""
        ...

    def timer_partition(self, timer: Timer) -> int:
        """The partition a timer lives in."""
        ...

    def wait_news(self, timeout: float) -> None:
        """Block until something may have happened, or ``timeout`` passes."""
        ...

    def arrivals(self) -> list[PendingMessage]:
        """Stored messages of entities this process runs that it does not hold yet."""
        ...

    def take_gained(self) -> tuple[list[int], list[tuple[PendingMessage, Batch, int]]]:
        """Partitions that join this process's now (their timers are the runtime's), and
        the messages it forwarded to them that its stored inboxes do not show yet:
        ``(message, the batch holding it, its token there)``, to run after those found."""
        ...

    def take_releases(self) -> list[int]:
        """Partitions to hand over; nothing of them runs here from now on."""
        ...

    def timers_of(
        self, partitions: list[int], before: tuple[float, int], limit: int
    ) -> list[Timer]:
        """The first ``limit`` timers of ``partitions`` due before ``before``, in due order."""
        ...

    def answers(self, seqs: list[int]) -> list[tuple[int, bytes | None, int | None]]:
        """``(seq, record, dead letter id)`` replies to forwarded messages, if there."""
        ...

    def follow(self, entity: Ident) -> tuple[bytes | None, int]:
        """Be told of the entity's commits by others; its record and version now."""
        ...

    def updates(self) -> list[tuple[Ident, int, bytes]]:
        """``(entity, version, record)`` changes by others to followed entities, in order."""
        ...

    def touch_follows(self) -> None:
        """Say this process still follows what it follows."""
        ...

    def claim_dead_letter(self, ecosystem: str, dead_letter_id: int) -> bytes | None:
        """Read a dead letter to remove it, claimed against other processes until the
        group removing it is written; None if it is gone or another process claims it."""
        ...

    def unclaim_dead_letter(self, ecosystem: str, dead_letter_id: int) -> None:
        """Give up a claim whose removal will not be written after all."""
        ...
