"""Outbox commands beyond sending: durable timers, as values a handler returns.

A handler stays pure: ``after(...)`` and ``cancel(...)`` only describe what
should happen; the ecosystem stores the timer in the same atomic commit as
the activation that returned it, and delivers its message once it is due.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from pachyderm._arguments import MAX_NAME_BYTES, storable_name
from pachyderm._entity import Entity
from pachyderm.errors import InvalidArgumentError, describe

__all__ = ["MAX_DELAY", "After", "Cancel", "Outbox", "after", "cancel", "check_timer_name"]

MessageT = TypeVar("MessageT")


class TimerCommand:
    """What :func:`after` and :func:`cancel` return: an outbox command that is not a send.

    ``Outbox`` names this base rather than ``After[Any]``: mypy would take
    ``After[Any]`` as the context of an ``after(...)`` in an outbox and stop
    checking its message against its address.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class After(TimerCommand, Generic[MessageT]):
    """An outbox command: deliver ``message`` to ``address`` once ``delay`` seconds passed.

    Made by :func:`after`; ``name`` (if any) makes it replace the pending
    timer of that name set by the same entity.
    """

    delay: float
    address: Entity[MessageT, Any]
    message: MessageT
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel(TimerCommand):
    """An outbox command: remove the entity's pending timer called ``name``, if any."""

    name: str


Outbox = Iterable[tuple[Entity[Any, Any], Any] | TimerCommand]
"""What ``activate`` returns first: ``(address, message)`` pairs to send, and timer commands."""


MAX_DELAY = 1_000 * 365 * 86_400
"""The longest a timer may wait, in seconds: 1,000 years. Longer is a mistake, not a plan."""


def check_timer_name(name: object) -> str:
    if type(name) is not str or not name or not storable_name(name):
        raise InvalidArgumentError(
            f"timer names are non-empty str that can be stored (UTF-8, at most "
            f"{MAX_NAME_BYTES} bytes, no lone surrogates, no NUL), got {describe(name)}; "
            f"e.g. name='expiry'"
        )
    return name


def _seconds(delay: object) -> float:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif type(delay) is int or type(delay) is float:
        # an int too big for a float is out of range too, not an OverflowError
        seconds = float(delay) if abs(delay) <= MAX_DELAY else math.inf  # type: ignore[arg-type, unused-ignore]
    else:
        raise InvalidArgumentError(
            f"a timer's delay is seconds (int or float) or a datetime.timedelta, got "
            f"{describe(delay)}"
        )
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY:
        raise InvalidArgumentError(
            f"a timer's delay must be between 0 and {MAX_DELAY:,} seconds (1,000 years), got "
            f"{describe(delay)}"
        )
    return seconds


def after(
    delay: float | timedelta,
    address: Entity[MessageT, Any],
    message: MessageT,
    *,
    name: str | None = None,
) -> After[MessageT]:
    """Deliver ``message`` to ``address`` once ``delay`` has passed: return it in the outbox.

    The timer is stored in the same atomic commit as the activation that set
    it, survives restarts (one overdue when a store opens fires promptly) and
    fires exactly once. With ``name``, at most one timer of that name is
    pending per entity: setting it again replaces it, ``cancel(name)`` removes it.

    Raises:
        InvalidArgumentError: ``delay`` is not a finite number of seconds >= 0 (or a
            ``timedelta``), ``address`` is not an entity, or ``name`` is not a
            non-empty str.
    """
    if not isinstance(address, Entity):
        raise InvalidArgumentError(
            f"after() delivers to an entity address, like Order('o-1'); got {describe(address)}"
        )
    return After(
        _seconds(delay), address, message, None if name is None else check_timer_name(name)
    )


def cancel(name: str) -> Cancel:
    """Remove this entity's pending timer called ``name``: return it in the outbox.

    Cancelling a timer that is not pending (never set, already fired) does nothing.
    """
    return Cancel(check_timer_name(name))
