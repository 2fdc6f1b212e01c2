"""``KeyValueStorage``: the runtime's storage over any ordered key-value store.

LocalDisk (LevelDB) and InMemory (dicts) are both this over their own
:class:`~pachyderm._store.Store`; where each thing lives is ``_layout``'s business.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from pachyderm import _layout as layout
from pachyderm._codec import decode, encode
from pachyderm._storage import Batch, Ident, PendingMessage, Timer
from pachyderm._store import Operation, Store
from pachyderm.errors import PachydermError, StoreCorruptedError

__all__ = ["KeyValueBatch", "KeyValueEntity", "KeyValueStorage", "restore_after_repair"]

_encode_seq = layout.encode_seq


class KeyValueEntity:
    """An entity's keys, computed once while it is resident."""

    __slots__ = ("address", "ecosystem", "inbox_prefix", "state_key")

    def __init__(self, ecosystem: bytes, address: bytes) -> None:
        self.ecosystem = ecosystem
        self.address = address
        self.state_key = layout.state_key(ecosystem, address)
        self.inbox_prefix = layout.inbox_prefix(ecosystem, address)


class KeyValueBatch:
    """A batch as a list of key-value operations; taken-back puts become ``None``.

    An entity activated many times in one batch has its record written once:
    each new record replaces the previous one's operation in place.
    """

    __slots__ = ("cancelled", "operations", "records")

    def __init__(self) -> None:
        self.operations: list[Operation | None] = []
        self.cancelled = 0
        self.records: dict[bytes, int] = {}  # state key -> its operation's index

    def __len__(self) -> int:
        return len(self.operations)

    def accept(self, entity: KeyValueEntity, seq: int, message: bytes) -> int:
        operations = self.operations
        operations.append((entity.inbox_prefix + _encode_seq(seq), message))
        return len(operations) - 1

    def unaccept(self, token: int) -> None:
        self.operations[token] = None
        self.cancelled += 1

    def consume(self, entity: KeyValueEntity, seq: int) -> None:
        self.operations.append((entity.inbox_prefix + _encode_seq(seq), None))

    def set_record(self, entity: KeyValueEntity, record: bytes) -> None:
        key = entity.state_key
        operations = self.operations
        index = self.records.get(key)
        if index is None:
            self.records[key] = len(operations)
            operations.append((key, record))
        else:
            operations[index] = (key, record)

    def set_timer(self, timer: Timer) -> None:
        position = layout.due_and_seq(timer.due, timer.seq)
        self.operations.append((layout.TIMER + position, layout.encode_timer(timer)))
        if timer.name is not None and timer.owner is not None:
            self.operations.append((_named_key(timer.owner, timer.name), position))

    def remove_timer(self, timer: Timer) -> None:
        self.operations.append((layout.timer_key(timer.due, timer.seq), None))
        if timer.name is not None and timer.owner is not None:
            self.operations.append((_named_key(timer.owner, timer.name), None))

    def add_dead_letter(self, ecosystem: str, dead_letter_id: int, record: bytes) -> None:
        key = layout.dead_letter_key(layout.ecosystem_key(ecosystem), dead_letter_id)
        self.operations.append((key, record))

    def remove_dead_letter(self, ecosystem: str, dead_letter_id: int) -> None:
        key = layout.dead_letter_key(layout.ecosystem_key(ecosystem), dead_letter_id)
        self.operations.append((key, None))

    def next_sequence(self, seq: int) -> None:
        self.operations.append((layout.NEXT_SEQ, _encode_seq(seq)))

    def writes(self) -> list[Operation]:
        """The operations to apply, without the taken-back ones."""
        if not self.cancelled:
            return self.operations  # type: ignore[return-value]
        return [operation for operation in self.operations if operation is not None]


def _named_key(owner: Ident, name: str) -> bytes:
    eco, entity_name, entity_id = owner
    return layout.named_timer_key(
        layout.ecosystem_key(eco), layout.address_key(entity_name, entity_id), name
    )


class KeyValueStorage:
    """The runtime's :class:`~pachyderm._storage.Storage` over an ordered key-value store."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.blocking = store.blocking
        self.volatile = store.volatile

    def __repr__(self) -> str:
        return f"KeyValueStorage({self.name})"

    def open(self) -> int:
        """Check (or, in an empty store, write) the format marker; return the next seq.

        Raises:
            StoreCorruptedError: the store holds data that Pachyderm did not
                write, or data of a format this code does not read.
        """
        store = self.store
        stored = store.get(layout.FORMAT)
        if stored is None:
            if next(iter(store.scan(b"")), None) is not None:
                raise StoreCorruptedError(
                    f"{self.name} holds data but no Pachyderm format marker: it is not a "
                    f"Pachyderm store, or it is damaged. Open an empty directory instead."
                )
            store.write([(layout.FORMAT, encode(layout.FORMAT_VERSION))], sync=True)
            return 0
        try:
            version = decode(stored)
        except PachydermError:
            version = stored
        if version not in layout.READABLE_FORMATS:
            raise StoreCorruptedError(
                f"{self.name} has storage format {version!r}, but this Pachyderm reads formats "
                f"{layout.READABLE_FORMATS}; open it with the version that wrote it"
            )
        if version != layout.FORMAT_VERSION:
            # Format 2 only adds tables: a format 1 store is one with no timers.
            store.write([(layout.FORMAT, encode(layout.FORMAT_VERSION))], sync=True)
        next_seq = store.get(layout.NEXT_SEQ)
        return layout.decode_seq(next_seq) if next_seq is not None else 0

    def handle(self, entity: Ident) -> KeyValueEntity:
        ecosystem, name, entity_id = entity
        return KeyValueEntity(layout.ecosystem_key(ecosystem), layout.address_key(name, entity_id))

    def load(self, entity: KeyValueEntity) -> bytes | None:
        return self.store.get(entity.state_key)

    def pending(self) -> Iterator[PendingMessage]:
        for key, message in self.store.scan(layout.INBOX):
            ident, seq = layout.parse_inbox_key(key)
            yield PendingMessage(ident, seq, message)

    def timers(self, start: tuple[float, int] | None, limit: int) -> list[Timer]:
        first = None if start is None else layout.timer_key(*start)
        found = []
        for key, value in self.store.scan(layout.TIMER, start=first):
            found.append(layout.decode_timer(key, value))
            if len(found) >= limit:
                break
        return found

    def named_timers(self, entity: KeyValueEntity) -> dict[str, tuple[float, int]]:
        prefix = layout.named_timer_prefix(entity.ecosystem, entity.address)
        return dict(
            layout.parse_named_timer(prefix, key, value) for key, value in self.store.scan(prefix)
        )

    def dead_letters(self, ecosystem: str) -> Iterator[tuple[int, bytes]]:
        for key, record in self.store.scan(
            layout.dead_letter_prefix(layout.ecosystem_key(ecosystem))
        ):
            yield layout.parse_dead_letter_key(key), record

    def dead_letter(self, ecosystem: str, dead_letter_id: int) -> bytes | None:
        return self.store.get(
            layout.dead_letter_key(layout.ecosystem_key(ecosystem), dead_letter_id)
        )

    def batch(self) -> KeyValueBatch:
        return KeyValueBatch()

    def write(self, batch: Batch, *, sync: bool) -> None:
        self.store.write(cast(KeyValueBatch, batch).writes(), sync=sync)

    def close(self) -> None:
        self.store.close()


def restore_after_repair(store: Store) -> None:
    """Put back the meta records a repair may have lost with a damaged block.

    The next sequence number must stay above every one in use (inboxes, dead
    letters and timers all end with theirs), or new messages would overwrite
    pending ones; the format marker, written once when the store was created,
    is put back if the store holds data.
    """
    if next(iter(store.scan(b"")), None) is None:
        return  # nothing left: it opens as a new store
    highest = -1
    for tag in (layout.INBOX, layout.DEAD_LETTER, layout.TIMER):
        for key, _ in store.scan(tag):
            highest = max(highest, layout.decode_seq(key[-8:]))
    stored = store.get(layout.NEXT_SEQ)
    next_seq = layout.decode_seq(stored) if stored is not None and len(stored) == 8 else -1
    writes: list[Operation] = []
    if highest + 1 > next_seq:
        writes.append((layout.NEXT_SEQ, _encode_seq(highest + 1)))
    if store.get(layout.FORMAT) is None:
        writes.append((layout.FORMAT, encode(layout.FORMAT_VERSION)))
    if writes:
        store.write(writes, sync=True)
