"""What the runtime keeps in memory for a resident entity: its inbox, state and bookkeeping."""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from pachyderm._entity import Entity

__all__ = ["RECENT_MESSAGES", "Envelope", "Reply", "Resident"]

RECENT_MESSAGES = 10
"""How many recent messages a resident entity remembers, for error reports."""


class Reply:
    """Where ``send_sync`` waits for the outcome of its message's activation."""

    __slots__ = ("done", "error", "state_blob")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.state_blob: bytes | None = None
        self.error: BaseException | None = None


class Envelope:
    """One accepted message in an inbox: its sequence number, its bytes, who waits on it."""

    __slots__ = ("blob", "reply", "seq")

    def __init__(self, seq: int, blob: bytes, reply: Reply | None) -> None:
        self.seq = seq
        self.blob = blob
        self.reply = reply


class Resident:
    """One resident entity (its single activation): state, inbox, run-queue membership."""

    __slots__ = (
        "address",
        "durable_blob",
        "eco",
        "inbox",
        "key",
        "loaded",
        "parked_on",
        "recent",
        "scheduled",
        "state",
        "state_blob",
        "uncommitted",
    )

    def __init__(self, eco: bytes, key: bytes, address: Entity[Any, Any] | None) -> None:
        self.eco = eco
        self.key = key
        self.address = address
        self.inbox: deque[Envelope] = deque()
        self.loaded = False
        self.state: Any = None
        self.state_blob: bytes | None = None  # newest, maybe not yet durable
        self.durable_blob: bytes | None = None  # newest durable
        self.scheduled = False
        self.uncommitted = 0
        self.parked_on: str | None = None
        self.recent: deque[bytes] = deque(maxlen=RECENT_MESSAGES)

    @property
    def idle(self) -> bool:
        return not self.inbox and not self.scheduled and not self.uncommitted
