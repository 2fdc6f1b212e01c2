"""One transition of a world: deliver, drop or duplicate a message; fire a timer.

Delivery runs the very activation step the live ecosystems run
(``pachyderm._step.activate``) and interprets its transition as they do: the
entity's new state, its sends put in flight, its timers set and cancelled, or,
if the activation failed, a dead letter while the entity keeps its state. So
what the simulation proves about a handler holds for them.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any, Literal, NamedTuple

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
from pachyderm.errors import exception_text, shown
from simulation._network import Network, arrange, deliverable
from simulation._world import (
    MASK,
    Envelope,
    PendingTimer,
    State,
    World,
    assemble,
    dead_letter,
    header,
    make_envelope,
    pending_timer,
    pending_total,
    power,
    powers,
    state_entry,
)

__all__ = [
    "PACK_FROM",
    "Action",
    "Activations",
    "Planned",
    "SleepMasks",
    "actions_after",
    "enabled",
    "make_planned",
    "packed",
    "plan_delivery",
    "step",
    "unpacked",
]

_NOTHING: Any = object()
_new = tuple.__new__

Kind = Literal["deliver", "drop", "duplicate", "fire"]
_PREFIX = {"deliver": b"de", "drop": b"dr", "duplicate": b"du", "fire": b"fi"}


class Action:
    """What happens next: ``kind`` applied to one message in flight, or one pending timer.

    ``key`` names the action the same way in every world where it is possible;
    actions are equal when their keys are. (A plain class: searches make
    millions, and a frozen dataclass is several times slower to create.)
    """

    __slots__ = ("bit", "copier", "envelope", "index", "key", "kind", "lane", "timer")

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
        # For sleep sets: the entity a message action touches (None: a timer, which touches
        # the clock every activation reads), and whose sends a duplicate's copy joins.
        self.lane: bytes | None = None
        self.copier: bytes | None = None
        if envelope is not None:
            self.key = envelope.deliver_key if kind == "deliver" else _PREFIX[kind] + envelope.key
            self.lane = envelope.recipient_key
            if kind == "duplicate":
                channel = envelope.channel
                self.copier = channel[: len(channel) - len(envelope.recipient_key)]
        else:
            assert timer is not None
            self.key = _PREFIX[kind] + timer.key
        self.index = index  # where it was in the world it was found in: a hint
        self.bit = 0  # its bit in the sleep sets of the search that made it (SleepMasks)

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


def enabled(
    world: World, network: Network, known: dict[bytes, Action] | None = None
) -> list[Action]:
    """Every action possible in ``world``, in a deterministic order.

    Deliveries first, then timers firing (each entity's earliest one: an
    entity's timers fire in due order), then faults: the order traces and
    shrinking rely on. ``known``: a search's deliveries made so far, by key,
    handed out again instead of made anew.
    """
    envelopes = world.envelopes
    if known is None:
        heads = deliverable(network, envelopes)
        actions = [Action("deliver", envelopes[index], index) for index in heads]
    else:
        heads = []
        actions = []
        previous = None
        # Unordered: identical messages are adjacent (sorted), one choice. FIFO: the head of
        # each channel (channels are contiguous).
        field = 6 if network == "fifo" else 4  # Envelope.channel, Envelope.key
        for index, item in enumerate(envelopes):
            if item[field] == previous:
                continue
            previous = item[field]
            heads.append(index)
            action = known.get(item.deliver_key)
            if action is None:
                if len(known) >= _KNOWN_ACTIONS:
                    known.clear()
                action = known[item.deliver_key] = Action("deliver", item, index)
            actions.append(action)
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


def actions_after(
    world: World, actions: list[Action], action: Action, child: World
) -> list[Action] | None:
    """``child``'s enabled actions from ``world``'s, when the step between them was a
    delivery on an unordered network that sent nothing (no timers, no faults): the
    same, less the delivery if no copy of its message waits. None otherwise."""
    if (
        action.kind != "deliver"
        or child.fifo
        or world.pending
        or child.pending
        or child.drops_left
        or child.duplicates_left
        or len(child.envelopes) != len(world.envelopes) - 1
    ):
        return None
    assert action.envelope is not None
    key = action.envelope.key
    envelopes = child.envelopes
    place = bisect_left(envelopes, key, key=_KEY)
    if place < len(envelopes) and envelopes[place].key == key:
        return actions  # a copy waits: the same choices
    return [other for other in actions if other is not action]


_KNOWN_ACTIONS = 1 << 16  # deliveries a search keeps to hand out again, then forgets at once


class SleepMasks:
    """Sleep sets as ints for one search: each action a bit, numbered by its key.

    A sleeper stays asleep after an action independent of it in the world at
    hand. Independent: they commute and neither disables the other, which holds
    for deliveries to different entities; anything touching the same entity
    does not, nor do two faults (they share budgets), nor a timer firing (it
    moves the virtual time every activation reads). Under FIFO a copy joins the
    end of its channel, after whatever the channel's sender sends meanwhile: a
    duplicate does not commute with a delivery to that sender either.

    Two deliveries to the same entity commute in this world when, on an
    unordered network, either order ends in the same state with the same sends
    and neither fails or sets timers (a counter, a set, a maximum):
    independence conditional on the world (Godefroid and Pirottin, "Refining
    dependencies improves partial-order verification methods", 1993), known
    from the search's ``activations``, which remember the answer.

    The rules are kept as masks (the actions touching each entity, the
    duplicates copying each sender's messages), so that a step's sleepers are
    a few operations on ints. ``tests/oracle.still_asleep`` states them plainly,
    over dicts, and a test holds the two to agree.
    """

    __slots__ = (
        "activations",
        "by_number",
        "commuting",
        "copying",
        "deliveries",
        "lanes",
        "numbers",
    )

    def __init__(self, activations: Activations) -> None:
        self.activations = activations
        self.numbers: dict[bytes, int] = {}  # action key -> its bit
        self.by_number: list[Action] = []  # an action of each bit, by the bit's position
        self.lanes: dict[bytes | None, int] = {}  # entity -> bits of actions touching it
        self.copying: dict[bytes, int] = {}  # sender -> bits of duplicates of its messages
        self.deliveries = 0  # bits of deliveries
        # (stored state, delivery's bit, sleeping deliveries to its entity) -> those of
        # them that commute with it there
        self.commuting: dict[tuple[bytes | None, int, int], int] = {}

    def number(self, actions: list[Action]) -> None:
        """Give each of ``actions`` its bit: the one its key has had in this search."""
        numbers = self.numbers
        for action in actions:
            if action.bit:
                continue
            bit = numbers.get(action.key)
            if bit is None:
                bit = numbers[action.key] = 1 << len(self.by_number)
                self.by_number.append(action)
                self.lanes[action.lane] = self.lanes.get(action.lane, 0) | bit
                if action.copier is not None:
                    self.copying[action.copier] = self.copying.get(action.copier, 0) | bit
                if action.kind == "deliver":
                    self.deliveries |= bit
            action.bit = bit

    def after(self, sleep: int, action: Action, world: World, plan: Planned | None) -> int:
        """The sleepers in ``sleep`` that stay asleep after ``action`` in ``world``
        (``plan``: the action's, if planned)."""
        target = action.lane
        if target is None or not sleep:
            return 0
        lanes = self.lanes
        if action.kind != "deliver":  # a fault: deliveries elsewhere, and not to the sender
            kept = sleep & self.deliveries & ~lanes[target]
            if action.copier is not None:
                kept &= ~lanes.get(action.copier, 0)
            return kept
        same = sleep & lanes[target]
        kept = sleep & ~(same | lanes.get(None, 0) | self.copying.get(target, 0))
        same &= self.deliveries
        if not same or world.fifo:
            return kept
        state = _state_at(world.states, target)[1] if plan is None else plan.old
        record = None if state is None else state.record
        key = (record, action.bit, same)
        commuting = self.commuting.get(key)
        if commuting is None:
            commuting = self._commuting(action, target, record, same)
            if len(self.commuting) >= _COMMUTING_MASKS:
                self.commuting.clear()
            self.commuting[key] = commuting
        return kept | commuting

    def _commuting(self, action: Action, target: bytes, record: bytes | None, same: int) -> int:
        """The deliveries among ``same`` that commute with ``action`` at ``record``."""
        delivered = action.envelope
        assert delivered is not None
        commute, by_number = self.activations.commute, self.by_number
        commuting = 0
        while same:
            bit = same & -same  # the lowest
            same ^= bit
            waiting = by_number[bit.bit_length() - 1].envelope
            assert waiting is not None
            if commute(delivered.recipient, target, record, delivered.blob, waiting.blob):
                commuting |= bit
        return commuting


# Masks of commuting deliveries remembered, then all forgotten at once: their keys hold
# ints as wide as the actions a search has numbered.
_COMMUTING_MASKS = 1 << 12
PACK_FROM = 1 << 1024  # sleep sets as large as this are stored as their bits' positions


def packed(sleep: int) -> int | tuple[int, ...]:
    """``sleep`` as a search stores it: an int, unless one of its bits is so high (a search
    that has numbered thousands of actions) that the positions of its few bits are
    smaller than the int."""
    if sleep < PACK_FROM:
        return sleep
    positions = []
    while sleep:
        bit = sleep & -sleep
        sleep ^= bit
        positions.append(bit.bit_length() - 1)
    return tuple(positions)


def unpacked(stored: int | tuple[int, ...]) -> int:
    """The sleep set :func:`packed` stored."""
    if isinstance(stored, int):
        return stored
    sleep = 0
    for position in stored:
        sleep |= 1 << position
    return sleep


def step(
    world: World,
    action: Action,
    network: Network,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    activations: Activations | None = None,
) -> tuple[World, Failed | None]:
    """The world after ``action``, and the failure if its activation failed.

    A failed activation is a dead letter in the returned world, as live.
    ``activations``: a search's memory of the activations it has run.
    """
    fifo = network == "fifo"
    if world.fifo is not fifo:  # a world made elsewhere: its channels' order now counts
        world = world.replace(fifo=fifo, envelopes=arrange(network, world.envelopes))
    if action.timer is not None:
        return _fire(world, action.timer, action.index, max_message_bytes, activations)
    target = action.envelope
    assert target is not None
    index = action.index
    envelopes = world.envelopes
    # The hint is from the world the action was found in. Under FIFO an identical copy
    # further down the channel is not the message to take: the head is.
    if (
        not 0 <= index < len(envelopes)
        or envelopes[index].key != target.key
        or (fifo and index and envelopes[index - 1].channel == target.channel)
    ):
        index = _find(envelopes, target, fifo)
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
    if fifo:  # the channel's later messages move up a place
        total = world.total - _fifo_removal(envelopes, target)
    else:
        total = world.total - target.digest
    return _activate(
        world,
        target.recipient,
        target.recipient_key,
        (target.blob, target.canonical),
        rest,
        world.pending,
        world.now,
        total,
        max_message_bytes,
        activations,
    )


class Planned(NamedTuple):
    """A delivery worked out but not made: the new world's fingerprint, and how to make it."""

    fingerprint: bytes
    total: int  # the new world's fingerprint sum (the fingerprint as a number)
    position: int  # where the recipient's state goes among the world's states
    old: State | None  # the recipient's state before
    outcome: _Outcome


def plan_delivery(
    world: World,
    action: Action,
    activations: Activations,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Planned | None:
    """The fingerprint of the world ``step`` would make, without making it.

    For a delivery whose activation (remembered in ``activations``) succeeded
    and set no timers: a few additions (under FIFO, a pass over the delivered
    message's channel). None for anything else, which ``step`` itself must
    fingerprint. A search asks this first, and makes (:func:`make_planned`)
    only the worlds it has not been to, or must go on from.
    """
    if action.kind != "deliver":
        return None
    target = action.envelope
    assert target is not None
    key = target.recipient_key
    states = world.states
    position = bisect_left(states, key, key=_STATE_KEY)  # _state_at, without the call
    if position < len(states) and states[position].key == key:
        old: State | None = states[position]
        record = states[position].record
    else:
        old = record = None
    outcome = activations.known.get((key, record, target.blob))
    if outcome is None:
        outcome = activations.outcome(target.recipient, key, record, target.blob, max_message_bytes)
    entry = outcome.entry
    if entry is None or outcome.timers:
        return None
    if world.fifo:
        total = world.total - _fifo_removal(world.envelopes, target)
        final = total + _fifo_sends(world.envelopes, target.channel, outcome.sends)
    else:
        total = world.total - target.digest
        final = total
        for template in outcome.sends:
            final += template[_DIGEST]
    final += entry.digest
    if old is not None:
        final -= old.digest
    final &= MASK
    return _new(Planned, (final.to_bytes(16, "little"), final, position, old, outcome))


def _state_at(states: tuple[State, ...], key: bytes) -> tuple[int, State | None]:
    """Where the entity whose key is ``key`` has (or would have) its state, and that state."""
    position = bisect_left(states, key, key=_STATE_KEY)
    if position < len(states) and states[position].key == key:
        return position, states[position]
    return position, None


def _fifo_removal(envelopes: tuple[Envelope, ...], target: Envelope) -> int:
    """What the fingerprint loses when the head of ``target``'s FIFO channel is delivered:
    the head, and a place for each message behind it."""
    channel = target.channel
    start = bisect_left(envelopes, channel, key=_CHANNEL)
    end = bisect_right(envelopes, channel, key=_CHANNEL)
    if end - start == 1:
        return target.digest  # alone in its channel: nothing moves up
    weights = powers(end - start)
    lost = 0
    for place, item in enumerate(envelopes[start:end]):
        # At its place before, less at the place it moves up to.
        lost += item.digest * (weights[place] - (weights[place - 1] if place else 0))
    return lost


def _fifo_sends(
    envelopes: tuple[Envelope, ...], delivered: bytes | None, sends: tuple[tuple[Any, ...], ...]
) -> int:
    """What sends add to a FIFO world's fingerprint, each at the end of its channel, once
    the head of channel ``delivered`` is gone (None: ``envelopes`` are without it)."""
    added = 0
    lengths: dict[bytes, int] = {}
    for template in sends:
        channel = template[_CHANNEL_FIELD]
        length = lengths.get(channel)
        if length is None:
            length = bisect_right(envelopes, channel, key=_CHANNEL) - bisect_left(
                envelopes, channel, key=_CHANNEL
            )
            if channel == delivered:
                length -= 1
        added += template[_DIGEST] * power(length)
        lengths[channel] = length + 1
    return added


def make_planned(
    world: World, action: Action, plan: Planned, actions: list[Action] | None = None
) -> tuple[World, list[Action] | None]:
    """The world :func:`plan_delivery` planned: ``action`` delivered in ``world``; and,
    given ``world``'s enabled ``actions``, the new world's, as :func:`actions_after`
    finds them (without looking for a copy again), else None."""
    target = action.envelope
    assert target is not None
    envelopes = world.envelopes
    fifo = world.fifo
    if fifo:  # the head of its channel
        index = bisect_left(envelopes, target.channel, key=_CHANNEL)
    else:  # sorted by key: the first of its identical copies
        index = bisect_left(envelopes, target.key, key=_KEY)
    envelopes = envelopes[:index] + envelopes[index + 1 :]
    outcome = plan.outcome
    following = None
    if (
        actions is not None
        and not fifo
        and not outcome.sends
        and not world.pending
        and not world.drops_left
        and not world.duplicates_left
    ):
        if index < len(envelopes) and envelopes[index].key == target.key:
            following = actions  # a copy waits: the same choices
        elif index < len(actions) and actions[index] is action:
            # Deliveries come first, one per key in key order: with no copies in flight
            # (most worlds), the message's place is its delivery's.
            following = actions[:index] + actions[index + 1 :]
        else:
            following = [other for other in actions if other is not action]
    entry = outcome.entry
    assert entry is not None
    states = world.states
    position = plan.position
    if plan.old is None:
        states = (*states[:position], entry, *states[position:])
    else:
        states = (*states[:position], entry, *states[position + 1 :])
    order = world.next_order
    if outcome.sends:
        envelopes, order = _sent(envelopes, outcome.sends, order, fifo)
    child = assemble(
        states,
        envelopes,
        world.pending,
        world.dead,
        world.now,
        world.drops_left,
        world.duplicates_left,
        order,
        fifo,
        plan.total,
        fingerprint=plan.fingerprint,
    )
    return child, following


def _sent(
    envelopes: tuple[Envelope, ...], sends: tuple[tuple[Any, ...], ...], order: int, fifo: bool
) -> tuple[tuple[Envelope, ...], int]:
    """``envelopes`` with ``sends`` put in flight, numbered from ``order``: each at the end
    of its channel (FIFO) or in key order; and the next number."""
    for template in sends:
        item = _new(Envelope, (*template, order))
        order += 1
        if fifo:
            place = bisect_right(envelopes, item.channel, key=_CHANNEL)
        else:
            place = bisect_right(envelopes, item.key, key=_KEY)
        envelopes = (*envelopes[:place], item, *envelopes[place:])
    return envelopes, order


_DIGEST = 8  # Envelope.digest, in a send's template
_KEY_FIELD = 4  # Envelope.key, in a send's template
_CHANNEL_FIELD = 6  # Envelope.channel, in a send's template


def _find(envelopes: tuple[Envelope, ...], target: Envelope, fifo: bool) -> int:
    """Where ``target`` is in ``envelopes`` (the first of its identical copies; under FIFO,
    the first in its channel): its action was found in another world."""
    if fifo:
        index = bisect_left(envelopes, target.channel, key=_CHANNEL)
    else:
        index = bisect_left(envelopes, target.key, key=_KEY)
    if index < len(envelopes) and envelopes[index].key == target.key:
        return index
    return next(i for i, item in enumerate(envelopes) if item.key == target.key)


def _fire(
    world: World,
    timer: PendingTimer,
    index: int,
    max_message_bytes: int,
    activations: Activations | None,
) -> tuple[World, Failed | None]:
    pending = world.pending
    if not 0 <= index < len(pending) or pending[index].key != timer.key:
        index = next(i for i, item in enumerate(pending) if item.key == timer.key)
    rest = pending[:index] + pending[index + 1 :]
    now = max(world.now, timer.due)
    drops, duplicates = world.drops_left, world.duplicates_left
    total = (
        world.total
        - pending_total(pending)
        + pending_total(rest)
        - header(drops, duplicates, world.now)
    )
    return _activate(
        world,
        timer.recipient,
        timer.recipient_key,
        (timer.blob, timer.canonical),
        world.envelopes,
        rest,
        now,
        total + header(drops, duplicates, now),
        max_message_bytes,
        activations,
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


# A transition that may skip timer orders: the entity, the message (as stored), the
# timer it held, and the shorter delay it set (see timer_gap_in).
Gap = tuple[Entity[Any, Any], bytes, PendingTimer, float]


class Activations:
    """What activations returned in one search, by entity, stored state and message.

    Handlers are pure (no I/O, no clock, no randomness), so an activation is a
    function of the entity, its stored record and the message: a search meets
    the same one in many worlds, and runs the handler once for all of them.
    ``calls`` counts the handler runs. Bounded: past ``limit`` entries, all are
    forgotten at once, so a long search's memory stays with its worlds.
    """

    __slots__ = ("calls", "commuting", "known", "limit", "timer_gap", "timer_gaps")

    def __init__(self, limit: int = 1 << 16) -> None:
        self.known: dict[tuple[bytes, bytes | None, bytes], _Outcome] = {}
        # Pairs of messages to one entity in one state: whether they commute.
        self.commuting: dict[tuple[bytes, bytes | None, bytes, bytes], bool] = {}
        self.calls = 0
        self.limit = limit
        # Transitions that set a timer for less time than one its entity holds from an
        # earlier activation (see timer_gap_in), and the latest of them, as parts: the
        # search tells (told_gap) only the one it calls first.
        self.timer_gaps = 0
        self.timer_gap: Gap | None = None

    def outcome(
        self,
        recipient: Entity[Any, Any],
        recipient_key: bytes,
        record: bytes | None,
        blob: bytes,
        max_message_bytes: int,
    ) -> _Outcome:
        """The activation of ``recipient`` (stored as ``record``) on the message ``blob``."""
        known = self.known
        key = (recipient_key, record, blob)
        outcome = known.get(key)
        if outcome is None:
            self.calls += 1
            outcome = _run(recipient, recipient_key, record, blob, max_message_bytes)
            if len(known) >= self.limit:
                known.clear()
            known[key] = outcome
        return outcome

    def commute(
        self,
        recipient: Entity[Any, Any],
        recipient_key: bytes,
        record: bytes | None,
        first: bytes,
        second: bytes,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> bool:
        """Whether messages ``first`` and ``second``, delivered in either order to
        ``recipient`` stored as ``record``, end in the same state with the same sends,
        neither failing nor setting timers."""
        if second < first:
            first, second = second, first
        key = (recipient_key, record, first, second)
        found = self.commuting.get(key)
        if found is None:
            one = self._both(recipient, recipient_key, record, first, second, max_message_bytes)
            found = one is not None and one == self._both(
                recipient, recipient_key, record, second, first, max_message_bytes
            )
            if len(self.commuting) >= self.limit:
                self.commuting.clear()
            self.commuting[key] = found
        return found

    def _both(
        self,
        recipient: Entity[Any, Any],
        recipient_key: bytes,
        record: bytes | None,
        first: bytes,
        second: bytes,
        max_message_bytes: int,
    ) -> tuple[bytes, list[bytes]] | None:
        """The state (canonically) and sends (keys, sorted) after ``first`` then ``second``;
        None if either fails or touches timers."""
        one = self.outcome(recipient, recipient_key, record, first, max_message_bytes)
        if one.entry is None or one.timers:
            return None
        two = self.outcome(recipient, recipient_key, one.entry.record, second, max_message_bytes)
        if two.entry is None or two.timers:
            return None
        return two.entry.canonical, sorted(send[_KEY_FIELD] for send in (*one.sends, *two.sends))


class _Outcome(NamedTuple):
    """An activation, ready to apply to any world: its entry, sends and timer commands."""

    entry: State | None  # None: the activation failed
    sends: tuple[tuple[Any, ...], ...]  # each an Envelope but for its order
    timers: tuple[tuple[str | None, float, Entity[Any, Any], bytes, bytes] | str, ...]
    failed: Failed | None
    error: str  # the failure as a dead letter tells it: "ValueError: boom"


def _run(
    recipient: Entity[Any, Any],
    recipient_key: bytes,
    record: bytes | None,
    blob: bytes,
    max_message_bytes: int,
) -> _Outcome:
    """Run the activation step and encode what it returned for worlds."""
    outcome: Activated | Failed
    try:
        state = load_state(recipient, record)
        message = decode(blob)
    except Exception as problem:  # init(), upgrade() and undecodable bytes fail like activate()
        outcome = Failed(None, problem, "")
    else:
        outcome = activate(recipient, state, message, max_message_bytes)
    if isinstance(outcome, Failed):
        error = outcome.error
        if isinstance(error, KeyboardInterrupt):
            # Ctrl-C landing in a handler (where a search spends its time) is the
            # caller's: it stops the search. Whatever else a handler raises, SystemExit
            # included, fails the activation as live: a dead letter in the world.
            raise error
        return _Outcome(None, (), (), outcome, exception_text(error))  # (storable, always)
    state_bytes = outcome.state_bytes
    entry = state_entry(
        recipient, recipient_key, state_bytes, _canonical(state_bytes, outcome.state)
    )
    sends: list[tuple[Any, ...]] = []
    timers: list[tuple[str | None, float, Entity[Any, Any], bytes, bytes] | str] = []
    for command in outcome.commands:
        if isinstance(command, Send):
            to, stored = command
            item = make_envelope(
                to, encode_canonical(to), recipient, recipient_key, stored, _canonical(stored)
            )
            sends.append(item[:-1])
        elif isinstance(command, SetTimer):
            name, delay, to, stored = command
            timers.append((name, delay, to, stored, _canonical(stored)))
        else:
            timers.append(command.name)
    return _Outcome(entry, tuple(sends), tuple(timers), None, "")


def _activate(
    world: World,
    recipient: Entity[Any, Any],
    recipient_key: bytes,
    message_bytes: tuple[bytes, bytes],
    envelopes: tuple[Envelope, ...],
    pending: tuple[PendingTimer, ...],
    now: float,
    total: int,
    max_message_bytes: int,
    activations: Activations | None,
) -> tuple[World, Failed | None]:
    """Activate ``recipient`` on a message and interpret the transition into a world.

    ``message_bytes``: the message's plain and canonical encodings. ``envelopes``,
    ``pending`` and ``now``: the world's, the message taken out; ``total``: the
    fingerprint sum of ``world`` with those in place of its own.
    """
    blob, canonical = message_bytes
    states = world.states
    position, old = _state_at(states, recipient_key)
    record = None if old is None else old.record
    if activations is None:
        outcome = _run(recipient, recipient_key, record, blob, max_message_bytes)
    else:
        outcome = activations.outcome(recipient, recipient_key, record, blob, max_message_bytes)
    if outcome.entry is None:
        letter = dead_letter(recipient, recipient_key, blob, canonical, outcome.error)
        dead = tuple(sorted((*world.dead, letter), key=lambda item: item.key))
        return World(
            states,
            envelopes,
            world.drops_left,
            world.duplicates_left,
            pending=pending,
            dead=dead,
            now=now,
            next_order=world.next_order,
            fifo=world.fifo,
        ), outcome.failed
    if outcome.timers and activations is not None and pending:
        gap = timer_gap_in(pending, recipient_key, outcome.timers)
        if gap is not None:
            activations.timer_gaps += 1
            activations.timer_gap = (recipient, blob, *gap)
    return _apply(
        world, recipient, recipient_key, position, old, outcome, envelopes, pending, now, total
    ), None


def told_gap(gap: Gap) -> str:
    """A transition that may skip timer orders (see :func:`timer_gap_in`), in words."""
    recipient, blob, held, delay = gap
    return (
        f"{recipient!r}, on {shown(decode(blob))}, set a timer for {delay:g} s "
        f"while holding {held!r}, set for {held.delay:g} s by an earlier message"
    )


def timer_gap_in(
    pending: tuple[PendingTimer, ...],
    owner_key: bytes,
    commands: tuple[tuple[str | None, float, Entity[Any, Any], bytes, bytes] | str, ...],
) -> tuple[PendingTimer, float] | None:
    """A timer the activation's ``commands`` set for a shorter delay than one its entity
    holds from an earlier activation (and keeps): that timer, and the new one's delay;
    else None.

    Exploration takes each activation as coming as early as it could (virtual
    time moves only when a timer fires, to its due time), which fixes which of
    the two fires first. Live, the later activation can come at any time after
    the earlier one, and, the later timer being the shorter, either can fire
    first: this search may take only one order. Where no such pair is ever held,
    an owner's timers fire in the order they were set, live as explored, and no
    order is missed. Timers of one activation share a set time, and fire by
    delay both ways.
    """
    held = [timer for timer in pending if timer.owner_key == owner_key]
    if not held:
        return None
    new: list[tuple[str | None, float]] = []
    for command in commands:
        name = command if isinstance(command, str) else command[0]
        if name is not None:  # cancelled, or replaced: neither is held any more
            held = [timer for timer in held if timer.name != name]
            new = [entry for entry in new if entry[0] != name]
        if not isinstance(command, str):
            new.append((name, command[1]))
    if not held or not new:
        return None
    longest = max(held, key=lambda timer: timer.delay)
    shortest = min(delay for _, delay in new)
    return (longest, shortest) if shortest < longest.delay else None


def _apply(
    world: World,
    recipient: Entity[Any, Any],
    recipient_key: bytes,
    position: int,
    old: State | None,
    outcome: _Outcome,
    envelopes: tuple[Envelope, ...],
    pending: tuple[PendingTimer, ...],
    now: float,
    total: int,
) -> World:
    """The world after a successful activation: its new state at ``position`` (in place of
    ``old``), its sends and timers. The arguments as for :func:`_activate`."""
    entry = outcome.entry
    assert entry is not None
    states = world.states
    fifo = world.fifo
    if old is None:
        states = (*states[:position], entry, *states[position:])
    else:
        states = (*states[:position], entry, *states[position + 1 :])
        total -= old.digest
    total += entry.digest
    order = world.next_order
    if outcome.sends:
        if fifo:  # each at the end of its channel, weighted by its place there
            total += _fifo_sends(envelopes, None, outcome.sends)
        else:
            for template in outcome.sends:
                total += template[_DIGEST]
        envelopes, order = _sent(envelopes, outcome.sends, order, fifo)
    if outcome.timers:
        timers = list(pending)
        for command in outcome.timers:
            if isinstance(command, str):
                timers = _without(timers, recipient_key, command)
                continue
            name, delay, to, stored, canonical_message = command
            if name is not None:
                timers = _without(timers, recipient_key, name)
            due = due_at(now, delay)
            timers.append(
                pending_timer(
                    recipient, recipient_key, name, due, delay, to, stored, canonical_message
                )
            )
        # Each entity's timers in due order; ties in the order they were set (a stable sort).
        timers.sort(key=lambda timer: (timer.owner_key, timer.due))
        total += pending_total(timers) - pending_total(pending)
        pending = tuple(timers)
    return assemble(
        states,
        envelopes,
        pending,
        world.dead,
        now,
        world.drops_left,
        world.duplicates_left,
        order,
        fifo,
        total,
    )


_KEY = itemgetter(4)  # Envelope.key
_CHANNEL = itemgetter(6)  # Envelope.channel
_STATE_KEY = itemgetter(0)  # State.key


def _without(timers: list[PendingTimer], owner_key: bytes, name: str) -> list[PendingTimer]:
    return [t for t in timers if not (t.name == name and t.owner_key == owner_key)]
