"""Followers: the current state of an entity, then every committed change, in order.

A follower's buffer is bounded. Each update is a whole state, so when a slow
follower's buffer is full the *oldest* buffered update is dropped to make
room and counted in ``dropped``: memory stays bounded and the follower still
ends on the latest committed state. A follower that is dropped without being
closed is released when it is garbage collected.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import trio

from pachyderm._arguments import check_timeout
from pachyderm._commit import Wake
from pachyderm._entity import Entity
from pachyderm._step import load_state
from pachyderm._storage import Ident
from pachyderm.errors import InvalidArgumentError, describe

__all__ = [
    "DEFAULT_FOLLOWER_BUFFER",
    "Follower",
    "Followers",
    "ShellFollower",
    "Subscription",
    "check_buffer",
    "waiting_on_followers",
]

DEFAULT_FOLLOWER_BUFFER = 1000

_waiting: dict[int, int] = {}  # threads blocked for a follower's next update: how many waits


def waiting_on_followers(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked waiting for a follower's next update."""
    return _waiting.get(thread.ident or 0, 0) > 0


StateT = TypeVar("StateT")


def check_buffer(capacity: object) -> None:
    """Refuse a follower's buffer size that is not an int >= 1."""
    if type(capacity) is not int or capacity < 1:
        raise InvalidArgumentError(
            f"a follower's buffer must be an int >= 1, got {describe(capacity)}"
        )


class Subscription:
    """The runtime's side of a follower: a bounded, thread-safe buffer of stored records."""

    def __init__(
        self, address: Entity[Any, Any], record: bytes | None, capacity: int, since: int = 0
    ) -> None:
        """``capacity`` passed :func:`check_buffer` (the runtime checks it first)."""
        self.address = address
        self.since = since  # the stored version ``record`` is (0: not known)
        self.capacity = capacity
        self.dropped = 0
        self.closed = False
        self._latest = record
        self._updates: deque[bytes] = deque()
        self._condition = threading.Condition()
        self.waiter: trio.Event | None = None

    def push(self, record: bytes, wake: Wake) -> None:
        """Add a committed record (the runtime calls it with its lock held)."""
        with self._condition:
            if len(self._updates) >= self.capacity:
                self._updates.popleft()
                self.dropped += 1
            self._updates.append(record)
            self._latest = record
            self._condition.notify_all()
        waiter = self.waiter
        if waiter is not None:
            wake(waiter.set)

    def end(self, wake: Wake) -> None:
        """No more updates will come (the follower or its ecosystem closed)."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()
        waiter = self.waiter
        if waiter is not None:
            wake(waiter.set)

    def forget(self) -> None:
        """Mark closed without waking anyone: the follower was garbage collected."""
        self.closed = True

    def latest(self) -> Any:
        with self._condition:
            record = self._latest
        return load_state(self.address, record)

    def take_nowait(self) -> list[tuple[Entity[Any, Any], Any]]:
        with self._condition:
            records = list(self._updates)
            self._updates.clear()
        return [(self.address, load_state(self.address, record)) for record in records]

    def take_one(self, timeout: float | None) -> bytes | None:
        """Block this thread for the next update; None when closed."""
        with self._condition:
            if not (self._updates or self.closed):
                thread = threading.get_ident()
                _waiting[thread] = _waiting.get(thread, 0) + 1  # (seen at interpreter exit)
                try:
                    if not self._condition.wait_for(lambda: self._updates or self.closed, timeout):
                        raise TimeoutError(
                            f"no update of {self.address!r} within {timeout} s; "
                            f"use flush() to read without waiting"
                        )
                finally:
                    if _waiting[thread] == 1:
                        del _waiting[thread]
                    else:
                        _waiting[thread] -= 1
            return self._updates.popleft() if self._updates else None

    def pending(self) -> bool:
        """Whether updates are waiting to be read."""
        return bool(self._updates)

    def pop_nowait(self) -> bytes | None:
        with self._condition:
            return self._updates.popleft() if self._updates else None


class Followers:
    """Every open subscription of a runtime, by entity. Call with the runtime's lock held."""

    def __init__(self) -> None:
        self._by_entity: dict[Ident, list[Subscription]] = {}
        self._count = 0
        self._swept_at = 64

    def __bool__(self) -> bool:
        return bool(self._by_entity)

    def add(self, ident: Ident, subscription: Subscription) -> None:
        self._by_entity.setdefault(ident, []).append(subscription)
        self._count += 1
        if self._count >= 2 * self._swept_at:
            self._sweep()

    def push(self, ident: Ident, record: bytes, wake: Wake, version: int = 0) -> None:
        """Tell the entity's followers about its newly committed record (``version``: its
        stored version, when it comes from another process; not told to followers that
        started at it or later)."""
        subscriptions = self._by_entity.get(ident)
        if subscriptions is None:
            return
        closed = False
        for subscription in subscriptions:
            if subscription.closed:
                closed = True
            elif not version or version > subscription.since:
                subscription.push(record, wake)
        if closed:
            self._prune(ident, subscriptions)

    def end_all(self, wake: Wake) -> None:
        for subscriptions in self._by_entity.values():
            for subscription in subscriptions:
                subscription.end(wake)
        self._by_entity.clear()
        self._count = 0

    def forsake(self) -> None:
        """In a forked child: end every follower without waking (or locking) anything.

        Their updates would come from the parent's runtime thread, which the child
        does not have: a follower's ``get()`` there raises EOFError instead of waiting.
        """
        for subscriptions in self._by_entity.values():
            for subscription in subscriptions:
                subscription._condition = threading.Condition()  # its holder may be gone
                subscription.closed = True

    def _prune(self, ident: Ident, subscriptions: list[Subscription]) -> None:
        open_ones = [s for s in subscriptions if not s.closed]
        self._count -= len(subscriptions) - len(open_ones)
        if open_ones:
            self._by_entity[ident] = open_ones
        else:
            del self._by_entity[ident]

    def _sweep(self) -> None:
        """Drop closed subscriptions of entities that never changed again."""
        for ident, subscriptions in list(self._by_entity.items()):
            if any(s.closed for s in subscriptions):
                self._prune(ident, subscriptions)
        self._swept_at = max(64, self._count)


class _View(Generic[StateT]):
    """What both faces of a follower show: the address, the latest state, what arrived."""

    _subscription: Subscription

    def _watch(self, subscription: Subscription) -> None:
        self._subscription = subscription
        # Dropped without close(): the runtime stops buffering for it.
        weakref.finalize(self, subscription.forget)

    @property
    def address(self) -> Entity[Any, StateT]:
        """The entity followed."""
        return self._subscription.address

    @property
    def state(self) -> StateT:
        """The latest committed state this follower knows of."""
        return self._subscription.latest()  # type: ignore[no-any-return]

    @property
    def dropped(self) -> int:
        """How many intermediate updates were dropped because the buffer was full."""
        return self._subscription.dropped

    def flush(self) -> list[tuple[Entity[Any, StateT], StateT]]:
        """The updates received since the last read, without waiting."""
        return self._subscription.take_nowait()

    def _decode(self, record: bytes) -> tuple[Entity[Any, StateT], StateT]:
        address = self._subscription.address
        return address, load_state(address, record)


class Follower(_View[StateT]):
    """The trio face of a follower: ``async with eco.follow(address) as updates``.

    ``updates.state`` is the latest known state; ``async for address, state in
    updates`` yields every committed change; ``updates.flush()`` returns what
    has arrived without waiting. ``dropped`` counts updates skipped because the
    buffer was full (the newest is always kept).
    """

    def __init__(self, subscription: Subscription) -> None:
        self._watch(subscription)

    def __repr__(self) -> str:
        return f"<Follower of {self._subscription.address!r}>"

    def __aiter__(self) -> Follower[StateT]:
        return self

    async def __anext__(self) -> tuple[Entity[Any, StateT], StateT]:
        subscription = self._subscription
        while True:
            record = subscription.pop_nowait()
            if record is not None:
                return self._decode(record)
            if subscription.closed:
                raise StopAsyncIteration
            subscription.waiter = waiter = trio.Event()
            # An update pushed between pop_nowait and here set no event of ours: look again.
            if not subscription.pending() and not subscription.closed:
                await waiter.wait()

    def close(self) -> None:
        """Stop receiving updates."""
        self._subscription.end(_now)

    async def __aenter__(self) -> Follower[StateT]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class ShellFollower(_View[StateT]):
    """The shell face of a follower, usable from any thread.

    ``.state`` (latest known state), ``.flush()`` (updates so far, no waiting),
    ``.get(timeout=None)`` (block for the next update), iteration (blocking,
    ends when closed), ``.close()`` and ``with``. Once the main thread has
    returned and every other non-daemon thread has ended or waits on a
    follower, every shell follower ends, so that the process can exit.
    """

    def __init__(self, subscription: Subscription) -> None:
        self._watch(subscription)

    def __repr__(self) -> str:
        return f"<ShellFollower of {self._subscription.address!r}>"

    def get(self, timeout: float | None = None) -> tuple[Entity[Any, StateT], StateT]:
        """Wait for the next update.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
            EOFError: the follower or its ecosystem was closed.
            InvalidArgumentError: ``timeout`` is not None or a finite number >= 0.
        """
        record = self._subscription.take_one(check_timeout(timeout))
        if record is None:
            raise EOFError(f"the follower of {self.address!r} is closed")
        return self._decode(record)

    def __iter__(self) -> Iterator[tuple[Entity[Any, StateT], StateT]]:
        while True:
            record = self._subscription.take_one(None)
            if record is None:
                return
            yield self._decode(record)

    def close(self) -> None:
        """Stop receiving updates."""
        self._subscription.end(_now)

    def __enter__(self) -> ShellFollower[StateT]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _now(wake_up: Any) -> None:
    wake_up()
