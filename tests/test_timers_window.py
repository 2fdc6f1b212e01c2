"""The timers kept in memory: a small window over storage, exact against a model."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ecosystems._memory import MemoryStore
from pachyderm._kv import KeyValueStorage
from pachyderm._storage import Timer
from pachyderm._timers import Timers

OWNER = ("eco", "tests.Owner", "o")

steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 40)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("write"), st.just(0)),
        st.tuples(st.just("fire"), st.integers(0, 40)),
        st.tuples(st.just("gain"), st.integers(0, 12)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 4))
def test_a_small_window_fires_exactly_what_is_due(
    actions: list[tuple[str, int]], window: int
) -> None:
    """Set, cancel, write, fire and take over partitions' timers in any order: each
    pending timer fires once, in due order."""
    storage = KeyValueStorage(MemoryStore(), "test")
    timers = Timers(storage, window=window)
    timers.next_due()  # loads the (empty) first window, as the runtime does on opening
    batch, group = storage.batch(), 0
    pending: dict[int, Timer] = {}  # the model: seq -> timer
    seq, now = 0, 100.0  # (dues are never negative: storage keys them unsigned)
    for action, number in actions:
        if action == "set":
            timer = Timer(now + number, seq, OWNER, None, OWNER, b"")
            batch.set_timer(timer)
            timers.add(timer, group)
            pending[seq] = timer
            seq += 1
        elif action == "cancel" and pending:
            victim = sorted(pending)[number % len(pending)]
            timer = pending.pop(victim)
            batch.remove_timer(timer)
            timers.remove(timer.key, group)
        elif action == "write":
            storage.write(batch, sync=False)
            timers.durable(group)
            batch, group = storage.batch(), group + 1
        elif action == "fire":
            now += number
            fired = timers.pop_due(now, limit=10**6)
            for timer in fired:
                batch.remove_timer(timer)
                timers.fired(timer, group)
            expected = sorted((t for t in pending.values() if t.due <= now), key=_key)
            assert [t.seq for t in fired] == [t.seq for t in expected]
            for timer in fired:
                del pending[timer.seq]
        elif action == "gain":
            # A partition taken over: its timers (some overdue), stored by another worker;
            # at most a window of them come into memory, as ecosystems.Postgres reads them.
            taken = [
                Timer(now - 40 + 7 * k, seq + k, OWNER, None, OWNER, b"") for k in range(number)
            ]
            seq += number
            theirs = storage.batch()
            for timer in taken:
                theirs.set_timer(timer)
                pending[timer.seq] = timer
            storage.write(theirs, sync=False)
            found = sorted((t for t in taken if t.key < timers.horizon), key=_key)
            found = found[: timers.window + 1]
            if len(found) > timers.window:
                timers.lower_horizon(found.pop().key)
            for timer in found:
                timers.gain(timer)
        assert len(timers) <= 2 * window + 1  # bounded, whatever happened
    rest = timers.pop_due(float("inf"), limit=10**6)
    assert [t.key for t in rest] == sorted(t.key for t in pending.values())


def _key(timer: Timer) -> Any:
    return timer.key


def test_a_partition_handed_over_takes_its_unwritten_timers_with_it() -> None:
    """A timer set beyond the horizon, in a group not yet written, of a partition handed
    over: the next load does not bring it into memory here (it did, from the overlay of
    unwritten changes, and the worker that handed the partition over fired it too)."""
    storage = KeyValueStorage(MemoryStore(), "test")
    timers = Timers(storage, window=4)
    stored = [Timer(10.0 + n, n, OWNER, None, OWNER, b"") for n in range(6)]
    batch = storage.batch()
    for timer in stored:
        batch.set_timer(timer)
    storage.write(batch, sync=False)
    assert timers.next_due() == 10.0  # the first window: four of the six
    late = Timer(20.0, 6, OWNER, None, OWNER, b"late")  # beyond the horizon, in group 7
    timers.add(late, 7)
    timers.drop(lambda timer: True)  # handed over: every timer here is of that partition
    # The new owner fires the stored ones (group 7, and late with it, is not written yet).
    theirs = storage.batch()
    for timer in stored:
        theirs.remove_timer(timer)
    storage.write(theirs, sync=False)
    assert timers.next_due() is None
    assert timers.pop_due(100.0, limit=10) == []
