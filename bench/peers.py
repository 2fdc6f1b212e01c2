"""Against a peer: Pykka 4, actors in threads, fire-and-forget and request/response.

The same work on both sides, from one thread (the main one, as in a script):
a counter that counts its messages. Pykka's ``tell`` and ``ask`` to a
ThreadingActor; InMemory's shell face ``send`` and ``send_sync`` to an entity.
Pykka passes references and keeps nothing; InMemory encodes every message and
state, so each survives as it would on disk. ``tell`` figures include the
actor working through its queue (the run ends with an ``ask``), as ``send``
figures include ``settle()``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pykka

from bench._entities import Tally
from bench._measure import PAYLOAD, RUNS, Row, interleaved, progress
from ecosystems import InMemory

_ecosystems = itertools.count()


class _Counter(pykka.ThreadingActor):
    """Counts its messages: the Tally entity, as a Pykka actor."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> int:
        self.count += 1
        return self.count


def pykka_tell(count: int) -> float:
    """Messages per second told to one actor, until the actor has handled them all."""
    actor = _Counter.start()
    try:
        started = _now()
        for _ in range(count):
            actor.tell(PAYLOAD)
        handled = actor.ask(PAYLOAD)  # waits behind everything told before it
        elapsed = _now() - started
    finally:
        actor.stop()
    if handled != count + 1:
        raise AssertionError(f"the actor handled {handled}, expected {count + 1}")
    return count / elapsed


def pykka_ask(count: int) -> float:
    """Round trips per second of ask to one actor, one at a time."""
    actor = _Counter.start()
    try:
        started = _now()
        for _ in range(count):
            actor.ask(PAYLOAD)
        elapsed = _now() - started
    finally:
        actor.stop()
    return count / elapsed


def in_memory_send(count: int) -> float:
    """Messages per second of shell send to one entity, until all are processed."""
    eco = InMemory.participate(f"peers-{next(_ecosystems)}")
    started = _now()
    for _ in range(count):
        eco.send(Tally("t"), PAYLOAD)
    eco.settle()
    elapsed = _now() - started
    if eco.state_of(Tally("t")) != count:
        raise AssertionError("not every message was applied")
    return count / elapsed


def in_memory_send_sync(count: int) -> float:
    """Round trips per second of shell send_sync to one entity, one at a time."""
    eco = InMemory.participate(f"peers-{next(_ecosystems)}")
    started = _now()
    for _ in range(count):
        eco.send_sync(Tally("t"), PAYLOAD)
    return count / (_now() - started)


_now = time.perf_counter


def rows(quick: bool) -> list[Row]:
    runs = 3 if quick else RUNS
    tells = 20_000 if quick else 100_000
    asks = 2_000 if quick else 5_000
    progress(
        f"peers: Pykka tell/ask vs InMemory shell send/send_sync, {tells:,} and {asks:,} "
        f"messages; {runs} rounds, interleaved"
    )
    figures = interleaved(
        runs,
        {
            "tell": lambda: pykka_tell(tells),
            "send": lambda: in_memory_send(tells),
            "ask": lambda: pykka_ask(asks),
            "send_sync": lambda: in_memory_send_sync(asks),
        },
    )
    InMemory.close()
    return [
        Row(
            "InMemory shell send, one thread (fire and forget)",
            figures["send"],
            "Pykka 4 tell, one thread",
            figures["tell"],
            "msg/s",
            1.0,
        ),
        Row(
            "InMemory shell send_sync, one thread (request/response)",
            figures["send_sync"],
            "Pykka 4 ask, one thread",
            figures["ask"],
            "msg/s",
            1.0,
        ),
    ]
