"""The seam for ecosystem authors: what it takes to host entities somewhere new.

Most stores need only :class:`Store`: an ordered key-value store with atomic
batches (LevelDB, dicts, a SQL table of keys and values). Wrap it in
:class:`KeyValueStorage` and hand an opener to :class:`EcosystemKind`:

    def open_storage(location):
        return KeyValueStorage(MyStore(location), name=f"Mine({location!r})")

    Mine = EcosystemKind("Mine", open_storage, default_location=lambda: "mine.db")

``Mine`` then has both faces (``Mine.send_sync(...)``, ``async with
Mine.open(...)``) and every guarantee of ``LocalDisk``, provided the store
keeps its promises: ``write`` applies a batch atomically and in order,
durably when asked to sync; ``scan`` returns keys in byte order.
``examples/sqlite_kind.py`` does this with SQLite in about 100 lines.

A store that is not a key-value store (SQL tables for entities, inboxes and
timers, say) implements :class:`Storage` and :class:`Batch` instead; one that
many processes share, each running the entities of the partitions it owns,
implements :class:`SharedStorage` and :class:`SharedBatch` (as
``ecosystems.Postgres`` does).
A host that runs activations its own way (a simulator, a worker pool) uses
the step: :func:`activate` turns an entity, its state and a message into a
transition value (:class:`Activated` or :class:`Failed`), whose commands
(:class:`Send`, :class:`SetTimer`, :class:`CancelTimer`) the host carries
out; :func:`record_bytes` and :func:`load_state` are the stored form of state.

Importing this module starts nothing; it brings in trio, which the live runtime needs.
"""

from pachyderm._clock import Clock, WallClock
from pachyderm._kind import EcosystemKind, StorageOpener
from pachyderm._kv import KeyValueStorage
from pachyderm._step import (
    Activated,
    CancelTimer,
    Command,
    Failed,
    Send,
    SetTimer,
    Transition,
    activate,
    encode_message,
    load_state,
    record_bytes,
)
from pachyderm._storage import (
    Batch,
    Ident,
    PendingMessage,
    SharedBatch,
    SharedStorage,
    Storage,
    Timer,
)
from pachyderm._store import Operation, Store

__all__ = [
    "Activated",
    "Batch",
    "CancelTimer",
    "Clock",
    "Command",
    "EcosystemKind",
    "Failed",
    "Ident",
    "KeyValueStorage",
    "Operation",
    "PendingMessage",
    "Send",
    "SetTimer",
    "SharedBatch",
    "SharedStorage",
    "Storage",
    "StorageOpener",
    "Store",
    "Timer",
    "Transition",
    "WallClock",
    "activate",
    "encode_message",
    "load_state",
    "record_bytes",
]
