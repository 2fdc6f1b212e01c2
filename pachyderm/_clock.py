"""Clocks for durable timers: the wall clock, and a manual one for tests that skip time.

Timers are stored with the absolute time they are due (seconds since the
epoch on the wall clock), so they survive restarts. A :class:`ManualClock`
stands still until told to move: ``clock.advance(3600)`` makes an hour pass
at once, and every ecosystem using it fires what became due.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from pachyderm.errors import InvalidArgumentError, describe

__all__ = ["Clock", "ManualClock", "WallClock", "check_clock"]


class Clock(Protocol):
    """What an ecosystem asks of its clock."""

    def now(self) -> float:
        """The current time, in seconds."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (from any thread) whenever time jumps; returns an unsubscribe.

        A clock whose time only flows (the wall clock) never calls it.
        """
        ...


class WallClock:
    """The system's clock: ``time.time()``."""

    def now(self) -> float:
        return time.time()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        return _nothing

    def __repr__(self) -> str:
        return "WallClock()"


def _nothing() -> None:
    pass


class ManualClock:
    """A clock that moves only when told: time skipping for tests.

        >>> clock = ManualClock()
        >>> clock.advance(60)          # timers due in the next minute fire now
        >>> clock.now()
        60.0

    Pass it as ``clock=`` to ``InMemory.open``, ``LocalDisk.open`` or
    ``connect``. Thread-safe: advance it from any thread or task.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = _check_time(start, "start")
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"

    def now(self) -> float:
        """The current (manual) time, in seconds."""
        return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward; every ecosystem on this clock fires the timers now due.

        The timers fire in the ecosystems' own tasks: ``settle()`` waits until
        their messages are processed.

        Raises:
            InvalidArgumentError: ``seconds`` is negative, not finite, or not a number.
        """
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        step = _check_time(seconds, "seconds")
        with self._lock:
            self._now += step
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe


def _check_time(value: object, what: str) -> float:
    # bounded by the largest float, not isfinite(): 10**400 is refused, not an OverflowError
    if (type(value) is not int and type(value) is not float) or not (
        0 <= value <= sys.float_info.max  # type: ignore[operator, unused-ignore]
    ):
        raise InvalidArgumentError(
            f"ManualClock {what} must be a finite number of seconds >= 0, got {describe(value)}"
        )
    return float(value)  # type: ignore[arg-type, unused-ignore]


def check_clock(clock: object) -> Clock:
    """``clock`` if it is one; :class:`InvalidArgumentError` otherwise."""
    if not (callable(getattr(clock, "now", None)) and callable(getattr(clock, "subscribe", None))):
        raise InvalidArgumentError(
            f"clock must be a pachyderm.ManualClock (or have now() and subscribe()), got "
            f"{describe(clock)}"
        )
    return clock  # type: ignore[return-value]
