"""One transition of a world: deliver, drop or duplicate a message; fire a timer.

Delivery runs the very activation step the live ecosystems run
(``pachyderm._step.activate``) and interprets its transition as they do: the
entity's new state, its sends put in flight, its timers set and cancelled, or,
if the activation failed, a dead letter while the entity keeps its state. So
what the simulation proves about a handler holds for them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pachyderm._codec import decode, encode_canonical
from pachyderm._entity import Entity
from pachyderm._step import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Activated,
    Failed,
    Send,
    SetTimer,
    activate,
    load_state,
)
from pachyderm._timers import due_at
from simulation._network import Network, arrange, deliverable
from simulation._world import (
    Envelope,
    PendingTimer,
    World,
    dead_letter,
    make_envelope,
    pending_timer,
    state_entry,
)

__all__ = ["Action", "enabled", "step", "still_asleep"]

_NOTHING: Any = object()

Kind = Literal["deliver", "drop", "duplicate", "fire"]
_PREFIX = {"deliver": b"de", "drop": b"dr", "duplicate": b"du", "fire": b"fi"}


class Action:
    """What happens next: ``kind`` applied to one message in flight, or one pending timer.

    ``key`` names the action the same way in every world where it is possible;
    actions are equal when their keys are. (A plain class: searches make
    millions, and a frozen dataclass is several times slower to create.)
    """

    __slots__ = ("envelope", "index", "key", "kind", "timer")

    def __init__(
        self,
        kind: Kind,
        envelope: Envelope | None = None,
        index: int = -1,
        timer: PendingTimer | None = None,
    ) -> None:
        self.kind = kind
        self.envelope = envelope
        self.timer = timer
        if envelope is not None:
            self.key = envelope.deliver_key if kind == "deliver" else _PREFIX[kind] + envelope.key
        else:
            assert timer is not None
            self.key = _PREFIX[kind] + timer.key
        self.index = index  # where it was in the world it was found in: a hint

    @property
    def recipient(self) -> Entity[Any, Any]:
        """The entity whose activation this action may cause."""
        if self.envelope is not None:
            return self.envelope.recipient
        assert self.timer is not None
        return self.timer.recipient

    @property
    def message(self) -> Any:
        """A fresh copy of the message this action is about."""
        item = self.envelope if self.envelope is not None else self.timer
        assert item is not None
        return item.message

    @property
    def activates(self) -> bool:
        """Whether the action runs a handler (a delivery, or a timer firing)."""
        return self.kind == "deliver" or self.kind == "fire"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Action) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Action({self.kind!r}, {self.envelope if self.timer is None else self.timer!r})"

    def __str__(self) -> str:
        if self.timer is not None:
            return f"fire {self.timer!r}"
        return f"{self.kind} {self.envelope!r}"


def enabled(world: World, network: Network) -> list[Action]:
    """Every action possible in ``world``, in a deterministic order.

    Deliveries first, then timers firing (each entity's earliest one: an
    entity's timers fire in due order), then faults: the order traces and
    shrinking rely on.
    """
    envelopes = world.envelopes
    heads = deliverable(network, envelopes)
    actions = [Action("deliver", envelopes[index], index) for index in heads]
    if world.pending:
        owner = None
        for index, timer in enumerate(world.pending):
            if timer.owner_key != owner:
                owner = timer.owner_key
                actions.append(Action("fire", None, index, timer))
    if world.drops_left:
        actions.extend(Action("drop", envelopes[index], index) for index in heads)
    if world.duplicates_left:
        actions.extend(Action("duplicate", envelopes[index], index) for index in heads)
    return actions


def still_asleep(sleepers: dict[bytes, Action], action: Action) -> dict[bytes, Action]:
    """The sleepers independent of ``action``, which stay asleep after it (sleep sets).

    Independent: they commute and neither disables the other, which holds for
    deliveries to different entities; anything touching the same entity does
    not, nor do two faults (they share budgets), nor a timer firing (it moves
    the virtual time every activation reads). Under FIFO a copy joins the end
    of its channel, after whatever the channel's sender sends meanwhile: a
    duplicate does not commute with a delivery to that sender either.
    """
    item = action.envelope
    if item is None or not sleepers:
        return {}
    target = item.recipient_key
    if action.kind == "deliver":
        return {
            key: sleeper
            for key, sleeper in sleepers.items()
            if sleeper.envelope is not None
            and sleeper.envelope.recipient_key != target
            and not (sleeper.kind == "duplicate" and sleeper.envelope.channel.startswith(target))
        }
    sender = item.channel[: len(item.channel) - len(target)] if action.kind == "duplicate" else b""
    return {
        key: sleeper
        for key, sleeper in sleepers.items()
        if sleeper.kind == "deliver"
        and sleeper.envelope is not None
        and sleeper.envelope.recipient_key != target
        and sleeper.envelope.recipient_key != sender
    }


def step(
    world: World,
    action: Action,
    network: Network,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> tuple[World, Failed | None]:
    """The world after ``action``, and the failure if its activation failed.

    A failed activation is a dead letter in the returned world, as live.
    """
    if action.timer is not None:
        return _fire(world, action.timer, action.index, network, max_message_bytes)
    target = action.envelope
    assert target is not None
    index = action.index
    envelopes = world.envelopes
    if not 0 <= index < len(envelopes) or envelopes[index].key != target.key:
        index = next(i for i, item in enumerate(envelopes) if item.key == target.key)
    rest = envelopes[:index] + envelopes[index + 1 :]
    if action.kind == "drop":
        return world.replace(envelopes=rest, drops_left=world.drops_left - 1), None
    if action.kind == "duplicate":
        sender_key = target.channel[: len(target.channel) - len(target.recipient_key)]
        copy = make_envelope(
            target.recipient,
            target.recipient_key,
            target.sender,
            sender_key,
            target.blob,
            target.canonical,
            world.next_order,
        )
        return world.replace(
            envelopes=arrange(network, (*envelopes, copy)),
            duplicates_left=world.duplicates_left - 1,
            next_order=world.next_order + 1,
        ), None
    return _activate(
        world,
        target.recipient,
        target.recipient_key,
        (target.blob, target.canonical),
        rest,
        world.pending,
        world.now,
        network,
        max_message_bytes,
    )


def _fire(
    world: World, timer: PendingTimer, index: int, network: Network, max_message_bytes: int
) -> tuple[World, Failed | None]:
    pending = world.pending
    if not 0 <= index < len(pending) or pending[index].key != timer.key:
        index = next(i for i, item in enumerate(pending) if item.key == timer.key)
    rest = pending[:index] + pending[index + 1 :]
    now = max(world.now, timer.due)
    return _activate(
        world,
        timer.recipient,
        timer.recipient_key,
        (timer.blob, timer.canonical),
        world.envelopes,
        rest,
        now,
        network,
        max_message_bytes,
    )


# msgpack's map headers and extension headers: a dict, or a set, tuple, address or
# registered value whose contents may need ordering. Without any of these bytes (a
# byte inside a string or binary only sends a value down the slow path), the plain
# encoding is already the canonical one.
_MAY_NEED_ORDER = re.compile(rb"[\x80-\x8f\xc7-\xc9\xd4-\xd8\xde\xdf]")


# Plain encodings already made canonical: a search meets the same states and messages
# in many worlds, and re-encoding one costs more than all the rest of a step as it
# grows. The plain bytes determine the value, so they determine its canonical bytes.
_canonical_of: dict[bytes, bytes] = {}
_REMEMBERED = 1 << 24  # bytes of encodings kept at most, then all forgotten at once
_remembered = 0


def _canonical(plain: bytes, value: Any = _NOTHING) -> bytes:
    """The canonical encoding of what ``plain`` encodes (``value``, when at hand)."""
    if _MAY_NEED_ORDER.search(plain) is None:
        return plain
    global _remembered
    canonical = _canonical_of.get(plain)
    if canonical is None:
        canonical = encode_canonical(decode(plain) if value is _NOTHING else value)
        _remembered += len(plain) + len(canonical)
        if _remembered > _REMEMBERED:
            _canonical_of.clear()
            _remembered = len(plain) + len(canonical)
        _canonical_of[plain] = canonical
    return canonical


def _activate(
    world: World,
    recipient: Entity[Any, Any],
    recipient_key: bytes,
    message_bytes: tuple[bytes, bytes],
    envelopes: tuple[Envelope, ...],
    pending: tuple[PendingTimer, ...],
    now: float,
    network: Network,
    max_message_bytes: int,
) -> tuple[World, Failed | None]:
    """Activate ``recipient`` on a message and interpret the transition into a world.

    ``message_bytes``: the message's plain and canonical encodings.
    """
    blob, canonical = message_bytes
    outcome: Activated | Failed
    try:
        state = load_state(recipient, world.record_at(recipient_key))
        message = decode(blob)
    except Exception as problem:  # init(), upgrade() and undecodable bytes fail like activate()
        outcome = Failed(None, problem, "")
    else:
        outcome = activate(recipient, state, message, max_message_bytes)
    if isinstance(outcome, Failed):
        error = outcome.error
        letter = dead_letter(
            recipient, recipient_key, blob, canonical, f"{type(error).__name__}: {error}"
        )
        dead = tuple(sorted((*world.dead, letter), key=lambda item: item.key))
        return world.replace(envelopes=envelopes, pending=pending, dead=dead, now=now), outcome
    state_bytes = outcome.state_bytes
    states = world.states_with(
        state_entry(recipient, recipient_key, state_bytes, _canonical(state_bytes, outcome.state))
    )
    order = world.next_order
    sent: list[Envelope] = []
    timers = list(pending)
    changed_timers = False
    for command in outcome.commands:
        if isinstance(command, Send):
            to, stored = command
            key = encode_canonical(to)
            sent.append(
                make_envelope(to, key, recipient, recipient_key, stored, _canonical(stored), order)
            )
            order += 1
        elif isinstance(command, SetTimer):
            name, delay, to, stored = command
            if name is not None:
                timers = _without(timers, recipient_key, name)
            due = due_at(now, delay)
            timers.append(
                pending_timer(recipient, recipient_key, name, due, to, stored, _canonical(stored))
            )
            changed_timers = True
        else:
            timers = _without(timers, recipient_key, command.name)
            changed_timers = True
    if changed_timers:
        # Each entity's timers in due order; ties in the order they were set (a stable sort).
        timers.sort(key=lambda timer: (timer.owner_key, timer.due))
    return World(
        states,
        arrange(network, (*envelopes, *sent)) if sent else envelopes,
        world.drops_left,
        world.duplicates_left,
        pending=tuple(timers) if changed_timers else pending,
        dead=world.dead,
        now=now,
        next_order=order,
    ), None


def _without(timers: list[PendingTimer], owner_key: bytes, name: str) -> list[PendingTimer]:
    return [t for t in timers if not (t.name == name and t.owner_key == owner_key)]
