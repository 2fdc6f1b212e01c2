"""Followers: the current state of an entity, then every committed change, in order.

A follower's buffer is bounded. Each update is a whole state, so when a slow
follower's buffer is full the *oldest* buffered update is dropped to make
room and counted in ``dropped``: memory stays bounded and the follower still
ends on the latest committed state.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import trio

from pachyderm._activation import load_state
from pachyderm._entity import Entity
from pachyderm._resident import Wake

__all__ = ["DEFAULT_FOLLOWER_BUFFER", "Follower", "ShellFollower", "Subscription"]

DEFAULT_FOLLOWER_BUFFER = 1000


class Subscription:
    """The runtime's side of a follower: a bounded, thread-safe buffer of state blobs."""

    def __init__(
        self,
        address: Entity[Any, Any],
        blob: bytes | None,
        capacity: int,
        on_close: Callable[[Subscription], None],
    ) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"a follower's buffer must be an int >= 1, got {capacity!r}")
        self.address = address
        self.capacity = capacity
        self.dropped = 0
        self.closed = False
        self._latest = blob
        self._updates: deque[bytes] = deque()
        self._condition = threading.Condition()
        self._on_close = on_close
        self.waiter: trio.Event | None = None

    def push(self, blob: bytes, wake: Wake) -> None:
        """Add a committed state (the runtime calls it with its state lock held)."""
        with self._condition:
            if len(self._updates) >= self.capacity:
                self._updates.popleft()
                self.dropped += 1
            self._updates.append(blob)
            self._latest = blob
            self._condition.notify_all()
        if self.waiter is not None:
            wake(self.waiter.set)

    def end(self) -> None:
        """No more updates will come (the follower or its ecosystem closed)."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()
        if self.waiter is not None:
            self.waiter.set()

    def close(self) -> None:
        if not self.closed:
            self._on_close(self)
            self.end()

    def latest(self) -> Any:
        with self._condition:
            blob = self._latest
        return load_state(self.address, blob)

    def take_nowait(self) -> list[tuple[Entity[Any, Any], Any]]:
        with self._condition:
            blobs = list(self._updates)
            self._updates.clear()
        return [(self.address, load_state(self.address, blob)) for blob in blobs]

    def take_one(self, timeout: float | None) -> bytes | None:
        """Block this thread for the next update; None when closed."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._updates or self.closed, timeout):
                raise TimeoutError(
                    f"no update of {self.address!r} within {timeout} s; "
                    f"use flush() to read without waiting"
                )
            return self._updates.popleft() if self._updates else None

    def pop_nowait(self) -> bytes | None:
        with self._condition:
            return self._updates.popleft() if self._updates else None


class _View:
    """What both faces of a follower show: the address, the latest state, what arrived."""

    _subscription: Subscription

    @property
    def address(self) -> Entity[Any, Any]:
        return self._subscription.address

    @property
    def state(self) -> Any:
        """The latest committed state this follower knows of."""
        return self._subscription.latest()

    @property
    def dropped(self) -> int:
        """How many intermediate updates were dropped because the buffer was full."""
        return self._subscription.dropped

    def flush(self) -> list[tuple[Entity[Any, Any], Any]]:
        """The updates received since the last read, without waiting."""
        return self._subscription.take_nowait()


class Follower(_View):
    """The trio face of a follower: ``async with eco.follow(address) as updates``.

    ``updates.state`` is the latest known state; ``async for address, state in
    updates`` yields every committed change; ``updates.flush()`` returns what
    has arrived without waiting. ``dropped`` counts updates skipped because the
    buffer was full (the newest is always kept).
    """

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> tuple[Entity[Any, Any], Any]:
        subscription = self._subscription
        while True:
            blob = subscription.pop_nowait()
            if blob is not None:
                return subscription.address, load_state(subscription.address, blob)
            if subscription.closed:
                raise StopAsyncIteration
            subscription.waiter = trio.Event()
            await subscription.waiter.wait()

    def close(self) -> None:
        """Stop receiving updates."""
        self._subscription.close()

    async def __aenter__(self) -> Follower:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class ShellFollower(_View):
    """The shell face of a follower, usable from any thread.

    ``.state`` (latest known state), ``.flush()`` (updates so far, no waiting),
    ``.get(timeout=None)`` (block for the next update), iteration (blocking,
    ends when closed), ``.close()`` and ``with``.
    """

    def __init__(self, subscription: Subscription, close: Callable[[], None]) -> None:
        self._subscription = subscription
        self._close = close

    def __repr__(self) -> str:
        return f"<ShellFollower of {self._subscription.address!r}>"

    def get(self, timeout: float | None = None) -> tuple[Entity[Any, Any], Any]:
        """Wait for the next update.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
            EOFError: the follower or its ecosystem was closed.
        """
        blob = self._subscription.take_one(timeout)
        if blob is None:
            raise EOFError(f"the follower of {self.address!r} is closed")
        return self.address, load_state(self.address, blob)

    def __iter__(self) -> Iterator[tuple[Entity[Any, Any], Any]]:
        while True:
            blob = self._subscription.take_one(None)
            if blob is None:
                return
            yield self.address, load_state(self.address, blob)

    def close(self) -> None:
        """Stop receiving updates."""
        if not self._subscription.closed:
            self._close()

    def __enter__(self) -> ShellFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
