"""What the runtime keeps in memory for a resident entity: its inbox, state and bookkeeping."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from pachyderm import _layout as layout
from pachyderm._entity import Entity

__all__ = [
    "RECENT_MESSAGES",
    "Envelope",
    "Ident",
    "Reply",
    "Resident",
    "ThreadReply",
    "TrioReply",
    "Wake",
    "wake_now",
]

Ident = tuple[bytes, str, Any]
"""How the runtime tells entities apart: (ecosystem key, entity name, id). Cheaper to
hash than to encode, and the same for a class defined again in a REPL."""

Wake = Callable[[Callable[[], object]], None]
"""Runs a trio wake-up (an ``Event.set``): now on the runtime's thread, or posted to it."""


def wake_now(wake_up: Callable[[], object]) -> None:
    wake_up()


RECENT_MESSAGES = 10
"""How many recent messages a resident entity remembers, for error reports."""


class Reply:
    """An outcome someone waits for: a state blob, or an error. Resolved once, by the runtime."""

    __slots__ = ("error", "resolved", "state_blob")

    def __init__(self) -> None:
        self.state_blob: bytes | None = None
        self.error: BaseException | None = None
        self.resolved = False

    def resolve(
        self, state_blob: bytes | None, error: BaseException | None, wake: Wake = wake_now
    ) -> None:
        if not self.resolved:
            self.resolved = True
            self.state_blob = state_blob
            self.error = error
            self._wake(wake)

    def _wake(self, wake: Wake) -> None:
        raise NotImplementedError

    def result(self) -> bytes | None:
        """The state blob, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.state_blob


class TrioReply(Reply):
    """A reply awaited by a task in the runtime's own trio run."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        super().__init__()
        self._event = trio.Event()

    def _wake(self, wake: Wake) -> None:
        wake(self._event.set)

    async def wait(self) -> bytes | None:
        await self._event.wait()
        return self.result()


class ThreadReply(Reply):
    """A reply waited for by another thread (the shell face), without entering trio."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._lock.acquire()  # released by _wake, from the runtime's thread

    def _wake(self, wake: Wake) -> None:
        self._lock.release()  # thread-safe: no need to go through the runtime's thread

    def wait(self) -> bytes | None:
        self._lock.acquire()
        return self.result()


class Envelope:
    """One accepted message in an inbox: its sequence number, its bytes, who waits on it."""

    __slots__ = ("blob", "group_number", "put_index", "reply", "seq")

    def __init__(
        self,
        seq: int,
        blob: bytes,
        reply: Reply | None,
        group_number: int = -1,
        put_index: int = -1,
    ) -> None:
        self.seq = seq
        self.blob = blob
        self.reply = reply
        # Where its inbox put sits in a commit group not yet written, if it does:
        # consuming it before that write cancels the put instead of adding a delete.
        self.group_number = group_number
        self.put_index = put_index


class Resident:
    """One resident entity (its single activation): state, inbox, run-queue membership."""

    __slots__ = (
        "address",
        "durable_blob",
        "eco",
        "ident",
        "inbox",
        "inbox_prefix",
        "key",
        "loaded",
        "parked_on",
        "recent",
        "scheduled",
        "state",
        "state_blob",
        "state_key",
        "uncommitted",
    )

    def __init__(self, ident: Ident, key: bytes, address: Entity[Any, Any] | None) -> None:
        self.ident = ident
        self.eco = eco = ident[0]
        self.key = key
        self.state_key = layout.state_key(eco, key)
        self.inbox_prefix = layout.inbox_prefix(eco, key)
        self.address = address
        self.inbox: deque[Envelope] = deque()
        self.loaded = False
        self.state: Any = None
        self.state_blob: bytes | None = None  # newest, maybe not yet durable
        self.durable_blob: bytes | None = None  # newest durable
        self.scheduled = False
        self.uncommitted = 0
        self.parked_on: str | None = None
        self.recent: list[bytes] = []  # a list is a tenth of an empty deque's size

    @property
    def idle(self) -> bool:
        return not self.inbox and not self.scheduled and not self.uncommitted
