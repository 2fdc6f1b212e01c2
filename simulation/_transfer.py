"""Worlds and traces across processes: pickle, with addresses and worlds by value.

A parallel search hands worlds, traces and violations from one worker
process to another. Entity classes defined in a function or in ``__main__``
cannot be pickled by reference, so addresses travel as their codec encoding
(every forked worker has the parent's registry of names); a world travels as
its parts and sums its fingerprint again on arrival.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from pachyderm._codec import decode, encode
from pachyderm._entity import Entity
from simulation._world import DeadLetter, Envelope, PendingTimer, State, World

__all__ = ["dumps", "loads"]

loads = pickle.loads


def dumps(value: Any) -> bytes:
    """``value`` pickled, with addresses and worlds by value (see the module's docstring)."""
    buffer = io.BytesIO()
    _Pickler(buffer, pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _world(
    states: tuple[State, ...],
    envelopes: tuple[Envelope, ...],
    drops_left: int,
    duplicates_left: int,
    pending: tuple[PendingTimer, ...],
    dead: tuple[DeadLetter, ...],
    now: float,
    next_order: int,
    fifo: bool,
) -> World:
    return World(
        states,
        envelopes,
        drops_left,
        duplicates_left,
        pending=pending,
        dead=dead,
        now=now,
        next_order=next_order,
        fifo=fifo,
    )


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Entity):
            return decode, (encode(obj),)
        if type(obj) is World:
            parts = (obj.states, obj.envelopes, obj.drops_left, obj.duplicates_left)
            return _world, (*parts, obj.pending, obj.dead, obj.now, obj.next_order, obj.fifo)
        return NotImplemented
