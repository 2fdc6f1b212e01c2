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
