"""Resident entities: what the runtime keeps in memory for the entities it is working on.

A resident has its inbox, its state (once loaded), its recent messages and
its place in the run queue. Idle residents beyond a bound are passivated
(forgotten: their state is stored) least recently used first. Entities whose
class, or whose messages' classes, this process has not registered are
*parked* until it registers them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from pachyderm._entity import Entity
from pachyderm._storage import Ident, Storage

if TYPE_CHECKING:
    from pachyderm._commit import Group, Reply

__all__ = ["RECENT_BYTES", "RECENT_MESSAGES", "Envelope", "Resident", "Residents"]

RECENT_MESSAGES = 10
"""How many recent messages a resident entity remembers, for error reports."""
RECENT_BYTES = 64 << 10
"""And how many bytes of them at most: big messages are not kept for long."""


class Envelope:
    """One accepted message in an inbox: its sequence number, its bytes, who waits on it."""

    __slots__ = ("blob", "group", "reply", "seq", "token")

    def __init__(
        self, seq: int, blob: bytes, reply: Reply | None, group: Group | None, token: int
    ) -> None:
        self.seq = seq
        self.blob = blob
        self.reply = reply
        # The open group whose batch holds its acceptance, while unwritten:
        # consuming it then takes the acceptance back instead of adding a removal.
        self.group = group
        self.token = token


class Resident:
    """One resident entity (its single activation): state, inbox, run-queue membership."""

    __slots__ = (
        "address",
        "durable",
        "handle",
        "ident",
        "inbox",
        "loaded",
        "parked_on",
        "recent",
        "recent_bytes",
        "record",
        "scheduled",
        "state",
        "timers",
        "uncommitted",
    )

    def __init__(self, ident: Ident, handle: Any, address: Entity[Any, Any] | None) -> None:
        self.ident = ident
        self.handle = handle  # the storage's own handle (precomputed keys, say)
        self.address = address  # None while its class is not registered here
        self.inbox: deque[Envelope] = deque()
        self.loaded = False
        self.state: Any = None
        self.record: bytes | None = None  # newest stored form, maybe not yet durable
        self.durable: bytes | None = None  # newest durable stored form
        self.scheduled = False
        self.uncommitted = 0  # activations (and timer changes) not yet durable
        self.parked_on: str | None = None
        self.recent: list[bytes] = []  # a list is a tenth of an empty deque's size
        self.recent_bytes = 0
        self.timers: dict[str, tuple[float, int]] | None = None  # named timers, once loaded

    @property
    def idle(self) -> bool:
        return not self.inbox and not self.scheduled and not self.uncommitted

    def remember(self, blob: bytes) -> None:
        """Add a message to the recent ones, within the count and byte bounds."""
        recent = self.recent
        recent.append(blob)
        size = self.recent_bytes + len(blob)
        if len(recent) > RECENT_MESSAGES:  # (one over at most: the usual case, once full)
            size -= len(recent.pop(0))
        if size > RECENT_BYTES:
            while size > RECENT_BYTES and len(recent) > 1:
                size -= len(recent.pop(0))
        self.recent_bytes = size


class Residents:
    """The resident entities of one runtime, least recently used first."""

    def __init__(self, storage: Storage, max_resident: int) -> None:
        self.storage = storage
        self.max_resident = max_resident
        self.table: OrderedDict[Ident, Resident] = OrderedDict()
        self.parked: dict[str, list[Resident]] = {}
        self.passivated = 0

    def __len__(self) -> int:
        return len(self.table)

    def get(self, ident: Ident) -> Resident | None:
        return self.table.get(ident)

    def add(self, ident: Ident, address: Entity[Any, Any] | None) -> Resident:
        record = Resident(ident, self.storage.handle(ident), address)
        self.table[ident] = record
        return record

    def park(self, record: Resident, name: str) -> bool:
        """Set ``record`` aside until ``name`` is registered; False if it already was."""
        if record.parked_on is not None:
            return False
        record.parked_on = name
        self.parked.setdefault(name, []).append(record)
        return True

    def unpark(self, name: str) -> list[Resident]:
        """The records that waited for ``name``, no longer parked."""
        records = self.parked.pop(name, [])
        for record in records:
            record.parked_on = None
        return records

    def forget(self, record: Resident) -> None:
        """Stop hosting ``record`` here (its entity is run elsewhere from now on)."""
        del self.table[record.ident]
        if record.parked_on is not None:
            self.parked[record.parked_on].remove(record)
            record.parked_on = None

    def passivate(self) -> None:
        """Forget idle entities beyond ``max_resident``, least recently used first."""
        excess = len(self.table) - self.max_resident
        if excess <= 0:
            return
        victims = []
        for ident, record in self.table.items():
            if record.idle and record.parked_on is None:
                victims.append(ident)
                if len(victims) >= excess:
                    break
        for ident in victims:
            del self.table[ident]
        self.passivated += len(victims)
