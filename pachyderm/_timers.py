"""Pending timers: the earliest in memory, in due order; all of them stored.

An app may have a timer per entity and millions of entities, so only a
*window* of the earliest timers is kept in memory: every pending timer due
before the window's *horizon* is in the heap, none after it is. Timers set or
removed beyond the horizon go to storage only; until their group is durable,
an *overlay* remembers them, so that loading the next window sees them too.
A removed timer still in the heap is marked cancelled and skipped (the heap is
rebuilt once such entries outnumber the live ones by a window). When the heap
grows past two windows, its latest timers are evicted back to storage: the
horizon comes down to the first of them. It also comes down when a partition
taken over (Postgres) brings more than a window of timers; changes below a
lowered horizon that are not yet durable (fired or cancelled timers still in
storage) go back to the overlay, so a load does not bring them again.

Every method must be called with the runtime's lock held.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

from pachyderm._storage import Ident, Storage, Timer

__all__ = ["WINDOW", "Timers", "due_at"]

WINDOW = 1024
"""How many timers are loaded into memory at a time."""
_EVERYTHING = (math.inf, 0)
_MICROSECONDS = 1_000_000


def due_at(now: float, delay: float) -> float:
    """When a timer set at ``now`` for ``delay`` seconds is due, to the microsecond."""
    return round((now + delay) * _MICROSECONDS) / _MICROSECONDS


class Timers:
    """The pending timers of one runtime."""

    def __init__(self, storage: Storage, window: int = WINDOW) -> None:
        self.storage = storage
        self.window = window
        # (due, seq, entry number, timer): the number tells apart a timer taken back (its
        # partition regained) from its cancelled self still in the heap (Timers never compare).
        self._heap: list[tuple[float, int, int, Timer]] = []
        self._entries = itertools.count()
        self._loaded: dict[int, Timer] = {}  # seq -> timer, for those in the heap
        self._horizon: tuple[float, int] = (-math.inf, 0)  # nothing loaded yet
        # Changes beyond the horizon not yet durable: key -> (timer or None, group number).
        self._overlay: dict[tuple[float, int], tuple[Timer | None, int]] = {}
        self._by_group: dict[int, list[tuple[float, int]]] = {}
        # Changes to timers in the heap (or fired from it) not yet durable, should the
        # horizon come down below them:
        self._unwritten: dict[int, int] = {}  # seq -> group that sets it
        self._removals: dict[int, tuple[tuple[float, int], int]] = {}  # seq -> (key, group)

    def __len__(self) -> int:
        """How many timers are in memory (not how many are stored)."""
        return len(self._loaded)

    def add(self, timer: Timer, group: int) -> None:
        """A new pending timer, stored by the batch of group number ``group``."""
        key = timer.key
        if key < self._horizon:
            heapq.heappush(self._heap, (timer.due, timer.seq, next(self._entries), timer))
            self._loaded[timer.seq] = timer
            self._unwritten[timer.seq] = group
            if len(self._loaded) > 2 * self.window:
                self._evict()
        else:
            self._remember(key, timer, group)

    @property
    def horizon(self) -> tuple[float, int]:
        """Every pending timer due before this is in memory."""
        return self._horizon

    def gain(self, timer: Timer) -> None:
        """A stored timer this runtime may now fire (its partition was taken over)."""
        if timer.key < self._horizon and timer.seq not in self._loaded:
            heapq.heappush(self._heap, (timer.due, timer.seq, next(self._entries), timer))
            self._loaded[timer.seq] = timer
            if len(self._loaded) > 2 * self.window:
                self._evict()

    def drop(self, leaving: Callable[[Timer], bool]) -> None:
        """Forget the timers that ``leaving`` picks (another runtime fires them now): those
        in memory, and those set beyond the horizon whose group is not written yet (a
        load would bring them into memory here otherwise)."""
        for timer in [timer for timer in self._loaded.values() if leaving(timer)]:
            timer.cancelled = True  # skipped when it comes up in the heap
            del self._loaded[timer.seq]
        overlay = self._overlay
        for key in [k for k, (timer, _) in overlay.items() if timer is not None and leaving(timer)]:
            del overlay[key]
        self._compact()

    def remove(self, key: tuple[float, int], group: int) -> None:
        """A pending timer is gone (fired, cancelled, replaced) as of group ``group``."""
        timer = self._loaded.pop(key[1], None)
        if timer is not None:
            timer.cancelled = True
            self._removals[timer.seq] = (key, group)
            self._compact()
        elif key >= self._horizon:
            self._remember(key, None, group)

    def fired(self, timer: Timer, group: int) -> None:
        """A timer :meth:`pop_due` gave out is removed from storage by group ``group``.

        Until that is written, storage still has it: a horizon lowered below it
        (see :meth:`lower_horizon`) must not load it again.
        """
        self._removals[timer.seq] = (timer.key, group)

    def _remember(self, key: tuple[float, int], timer: Timer | None, group: int) -> None:
        self._overlay[key] = (timer, group)
        self._by_group.setdefault(group, []).append(key)

    def durable(self, group: int) -> None:
        """Group ``group`` is written: storage now has its timer changes."""
        if self._unwritten:
            for seq in [seq for seq, at in self._unwritten.items() if at == group]:
                del self._unwritten[seq]
        if self._removals:
            for seq in [seq for seq, (_, at) in self._removals.items() if at == group]:
                del self._removals[seq]
        keys = self._by_group.pop(group, None)
        if keys:
            overlay = self._overlay
            for key in keys:
                entry = overlay.get(key)
                if entry is not None and entry[1] == group:
                    del overlay[key]

    def next_due(self) -> float | None:
        """When the earliest pending timer is due; None if none is pending."""
        heap = self._heap
        while True:
            while heap and heap[0][3].cancelled:
                heapq.heappop(heap)
            if heap:
                return heap[0][0]
            if self._horizon == _EVERYTHING:
                return None
            self._load()

    def pop_due(self, now: float, limit: int) -> list[Timer]:
        """Up to ``limit`` timers due at ``now``, earliest first, taken out of memory.

        The caller fires them: removes each from storage and accepts its
        message, in one batch, and tells :meth:`fired`.
        """
        due: list[Timer] = []
        heap = self._heap
        while len(due) < limit:
            next_due = self.next_due()
            if next_due is None or next_due > now:
                break
            _, _, _, timer = heapq.heappop(heap)
            del self._loaded[timer.seq]
            due.append(timer)
        return due

    def lower_horizon(self, horizon: tuple[float, int]) -> None:
        """Promise less: only timers due before ``horizon`` are in memory (a partition
        taken over brought more than a window of them; the rest stay in storage)."""
        if horizon < self._horizon:
            self._evict_from(horizon)

    def _evict(self) -> None:
        """Keep the earliest ``window`` timers in memory; the rest go back to storage."""
        live = sorted(timer.key for timer in self._loaded.values())
        self._evict_from(live[self.window])

    def _evict_from(self, horizon: tuple[float, int]) -> None:
        """Timers due at ``horizon`` or later go back to storage; it is the new horizon.

        Those whose setting or removal is not yet written go to the overlay,
        so a later load from storage still sees them as they are.
        """
        for timer in [timer for timer in self._loaded.values() if timer.key >= horizon]:
            del self._loaded[timer.seq]
            group = self._unwritten.pop(timer.seq, None)
            if group is not None:
                self._remember(timer.key, timer, group)
        for seq, (key, group) in list(self._removals.items()):
            if key >= horizon:
                del self._removals[seq]
                self._remember(key, None, group)
        self._rebuild()
        self._horizon = horizon

    def _compact(self) -> None:
        """Rebuild the heap once cancelled entries outnumber the live ones: a timer
        replaced on every message would otherwise grow it until its first due time."""
        if len(self._heap) > 2 * len(self._loaded) + self.window:
            self._rebuild()

    def _rebuild(self) -> None:
        """The heap made anew of the timers in memory (no cancelled ones)."""
        entries = self._entries
        kept = self._loaded.values()
        self._heap[:] = [(timer.due, timer.seq, next(entries), timer) for timer in kept]
        heapq.heapify(self._heap)  # (in place: the list is shared)

    def _load(self) -> None:
        """Load the next window of timers from the horizon on."""
        start = None if self._horizon[0] == -math.inf else self._horizon
        stored = self.storage.timers(start, self.window + 1)
        horizon = _EVERYTHING
        if len(stored) > self.window:
            horizon = stored.pop().key
        found = {timer.key: timer for timer in stored}
        overlay = self._overlay
        unwritten: dict[tuple[float, int], int] = {}
        for key in [key for key in overlay if key < horizon]:
            timer, group = overlay.pop(key)
            if timer is None:
                found.pop(key, None)
                self._removals[key[1]] = (key, group)  # still stored until it is written
            else:
                found[key] = timer
                unwritten[key] = group
        for timer in found.values():
            self._heap.append((timer.due, timer.seq, next(self._entries), timer))
            self._loaded[timer.seq] = timer
            if timer.key in unwritten:
                self._unwritten[timer.seq] = unwritten[timer.key]
        heapq.heapify(self._heap)
        self._horizon = horizon

    def stub(self, owner: Ident, name: str, key: tuple[float, int]) -> Timer:
        """Enough of a named timer known only by its key to remove it from storage."""
        loaded = self._loaded.get(key[1])
        if loaded is not None:
            return loaded
        return Timer(key[0], key[1], owner, name, owner, b"")

    def describe(self) -> dict[str, Any]:
        """Figures for logs and tests."""
        return {
            "in_memory": len(self._loaded),
            "overlay": len(self._overlay),
            "heap": len(self._heap),  # with the cancelled entries not yet thrown away
        }
