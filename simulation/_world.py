"""``World``: a simulated ecosystem as a plain immutable value.

A world is the entity states, the messages in flight, the pending timers, the
dead letters and the virtual time. Handlers are handed states and messages
decoded from their *stored* form (the codec's plain encoding, which keeps dict
order): the same values a live ecosystem hands them. Worlds are compared,
identified by the *canonical* encoding of those values, so that equal worlds
are one. The fingerprint is incremental: every part of a world (a state, a
message in flight, a timer, a dead letter) carries a 128-bit BLAKE2b digest of
its canonical bytes, made once, and a world's fingerprint is their sum (in a
FIFO channel, each message weighted by its place, and each timer by its place
among its owner's), so a step that changes one
state and a message or two fingerprints the new world in a few additions,
whatever the world's size, and its canonical bytes are made only when asked
for. Fingerprints are stable across processes, unlike ``hash()``. Which
messages may be delivered next is the network's business (see ``_network``),
not the world's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from pachyderm._codec import decode, encode, encode_canonical
from pachyderm._entity import Entity
from pachyderm._step import load_state, record_bytes
from pachyderm.errors import InvalidAddressError, describe, safe_repr, shown

__all__ = [
    "MASK",
    "WEIGHT",
    "DeadLetter",
    "Envelope",
    "PendingTimer",
    "State",
    "World",
    "assemble",
    "dead_letter",
    "digest",
    "envelope",
    "envelope_total",
    "header",
    "make_envelope",
    "pending_timer",
    "pending_total",
    "power",
    "powers",
    "state_entry",
    "world_from",
]

StateT = TypeVar("StateT")

MASK = (1 << 128) - 1  # fingerprints are sums modulo 2**128
WEIGHT = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: a FIFO message's weight is WEIGHT**place
_powers = [1]


def power(place: int) -> int:
    """``WEIGHT ** place`` modulo 2**128: the weight of the message at ``place`` in its channel."""
    return powers(place + 1)[place]


def powers(count: int) -> list[int]:
    """The weights of the first ``count`` places, at least (one shared list: read it only)."""
    while len(_powers) < count:
        _powers.append(_powers[-1] * WEIGHT & MASK)
    return _powers


def digest(data: bytes) -> int:
    """A part's 128-bit digest, from bytes that say what kind of part it is and what it holds."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")


_headers: dict[tuple[int, int, float], int] = {}


def header(drops_left: int, duplicates_left: int, now: float) -> int:
    """The digest of what a world holds besides its parts: fault budgets and the time."""
    key = (drops_left, duplicates_left, now)
    found = _headers.get(key)
    if found is None:
        if len(_headers) > 4096:
            _headers.clear()
        found = _headers[key] = digest(b"h%d:%d:%r" % key)
    return found


class State(NamedTuple):
    """An entity's state in a world: as stored, and canonically for the fingerprint."""

    key: bytes  # the address, canonically encoded: orders the states
    address: Entity[Any, Any]
    record: bytes  # the stored record, encode([version, state]): what handlers get
    canonical: bytes  # key + the record encoded canonically: what identifies it
    digest: int  # of the canonical bytes: its share of the world's fingerprint


class Envelope(NamedTuple):
    """A message in flight: from ``sender`` (None: from outside) to ``recipient``.

    (Tuples: searches make millions, and a frozen dataclass is several times
    slower to create.)
    """

    recipient: Entity[Any, Any]
    sender: Entity[Any, Any] | None
    blob: bytes  # the message as stored (plain encoding): what the recipient gets
    canonical: bytes  # the message, canonically encoded
    key: bytes  # recipient, sender and message, canonically encoded: orders and names it
    recipient_key: bytes  # the recipient, canonically encoded
    channel: bytes  # sender and recipient, canonically encoded: its FIFO channel
    deliver_key: bytes  # the key of the action that delivers it, made once
    digest: int  # of the key: its share of the world's fingerprint (weighted in a FIFO channel)
    order: int = 0  # when it was sent, in this world's history: not part of its identity

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        origin = "outside" if self.sender is None else repr(self.sender)
        return f"{origin} -> {self.recipient!r}: {shown(self.message)}"


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A timer set by ``owner`` and not yet fired: ``message`` for ``recipient`` at ``due``."""

    owner_key: bytes
    owner: Entity[Any, Any]
    name: str | None
    due: float
    # Seconds it was set for: exploration takes it as set as early as it could be, and
    # two timers of one owner, the later with the shorter delay, can fire in either
    # order live (see simulation._step.timer_gap_in).
    delay: float
    recipient: Entity[Any, Any]
    recipient_key: bytes
    blob: bytes  # the message as stored
    canonical: bytes  # the message, canonically encoded
    key: bytes  # owner, name, due, delay, recipient and message, canonically: its name anywhere
    digest: int  # of the key: its share of the fingerprint (weighted by place among its owner's)

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        name = "" if self.name is None else f" {self.name!r}"
        return (
            f"timer{name} of {self.owner!r} at {self.due:g} -> {self.recipient!r}: "
            f"{shown(self.message)}"
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message whose activation failed: the entity kept its state."""

    address: Entity[Any, Any]
    blob: bytes
    error: str  # the exception's type and text, e.g. "ValueError: boom"
    key: bytes  # recipient, message and error, canonically encoded: orders them
    digest: int  # of the key: its share of the world's fingerprint

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        return f"{self.address!r} failed on {shown(self.message)}: {self.error}"


def pending_timer(
    owner: Entity[Any, Any],
    owner_key: bytes,
    name: str | None,
    due: float,
    delay: float,
    recipient: Entity[Any, Any],
    blob: bytes,
    canonical: bytes,
) -> PendingTimer:
    """A pending timer from parts already encoded (``canonical``: the message's)."""
    recipient_key = encode_canonical(recipient)
    key = encode_canonical([owner_key, name, due, delay, recipient_key]) + canonical
    return PendingTimer(
        owner_key,
        owner,
        name,
        due,
        delay,
        recipient,
        recipient_key,
        blob,
        canonical,
        key,
        digest(b"t" + key),
    )


def dead_letter(
    recipient: Entity[Any, Any], recipient_key: bytes, blob: bytes, canonical: bytes, error: str
) -> DeadLetter:
    """A dead letter from parts already encoded (``canonical``: the message's)."""
    key = recipient_key + canonical + encode_canonical(error)
    return DeadLetter(recipient, blob, error, key, digest(b"d" + key))


def envelope(
    recipient: Any, message: Any, sender: Entity[Any, Any] | None = None, *, order: int = 0
) -> Envelope:
    """An envelope for ``message``; refuses what the live ecosystems would refuse."""
    if not isinstance(recipient, Entity):
        raise InvalidAddressError(
            f"envelopes are (address, message) pairs whose address is an entity, like "
            f"(Counter('c'), 'inc'); got {describe(recipient)}"
        )
    return make_envelope(
        recipient,
        encode_canonical(recipient),
        sender,
        encode_canonical(sender),
        encode(message),
        encode_canonical(message),
        order,
    )


def make_envelope(
    recipient: Entity[Any, Any],
    recipient_key: bytes,
    sender: Entity[Any, Any] | None,
    sender_key: bytes,
    blob: bytes,
    canonical: bytes,
    order: int = 0,
) -> Envelope:
    """An envelope from parts already encoded (msgpack items delimit themselves)."""
    key = recipient_key + sender_key + canonical
    channel = sender_key + recipient_key
    return _new(
        Envelope,
        (
            recipient,
            sender,
            blob,
            canonical,
            key,
            recipient_key,
            channel,
            b"de" + key,
            digest(b"m" + key),
            order,
        ),
    )


_new = tuple.__new__  # a NamedTuple without its Python-level __new__


class World:
    """States, messages in flight, pending timers, dead letters and the virtual time.

    An immutable value, equal to another iff the same fingerprint and the same
    canonical bytes. ``entities`` maps every entity that has been activated to
    its state; ``in_flight`` lists the messages not yet delivered as
    ``(address, message)``; ``timers`` the pending timers; ``dead_letters``
    the failed activations; ``now`` the virtual time (seconds). ``fifo``: its
    messages travel in per-channel order, so a channel's order is part of it.
    Its attributes cannot be set: every change makes a new world.
    """

    __slots__ = (
        "_canonical",
        "dead",
        "drops_left",
        "duplicates_left",
        "envelopes",
        "fifo",
        "fingerprint",
        "next_order",
        "now",
        "pending",
        "states",
        "total",
    )

    states: tuple[State, ...]
    envelopes: tuple[Envelope, ...]
    pending: tuple[PendingTimer, ...]
    dead: tuple[DeadLetter, ...]
    now: float
    drops_left: int
    duplicates_left: int
    next_order: int
    fifo: bool
    total: int  # the fingerprint as a number: the sum of the parts' digests, modulo 2**128
    fingerprint: bytes
    _canonical: bytes

    def __init__(
        self,
        states: tuple[State, ...] = (),
        envelopes: tuple[Envelope, ...] = (),
        drops_left: int = 0,
        duplicates_left: int = 0,
        *,
        pending: tuple[PendingTimer, ...] = (),
        dead: tuple[DeadLetter, ...] = (),
        now: float = 0.0,
        next_order: int = 0,
        fifo: bool = False,
    ) -> None:
        total = header(drops_left, duplicates_left, now) + envelope_total(envelopes, fifo)
        total += pending_total(pending)
        for part in (states, dead):
            for item in part:
                total += item.digest
        assemble(
            states,  # sorted by key
            envelopes,  # in the network's canonical order
            pending,  # by owner key, then due order per owner
            dead,  # sorted by key
            now,
            drops_left,
            duplicates_left,
            next_order,  # bookkeeping for run's send order, not identity
            fifo,
            total,
            self,
        )

    @property
    def canonical(self) -> bytes:
        """The world's canonical bytes: its parts' canonical encodings, framed (made on demand)."""
        canonical: bytes | None = getattr(self, "_canonical", None)  # unset until asked for
        if canonical is None:
            pending, dead, now = self.pending, self.dead, self.now
            # msgpack items delimit themselves: counts up front are all the framing needed.
            head = b"%d:%d:%d:%d:%d:%r;" % (
                self.drops_left,
                self.duplicates_left,
                len(self.states),
                len(pending),
                len(dead),
                now,
            )
            canonical = b"".join(
                [
                    head,
                    *[state.canonical for state in self.states],
                    *[item.key for item in self.envelopes],
                    *[timer.key for timer in pending],
                    *[letter.key for letter in dead],
                ]
            )
            object.__setattr__(self, "_canonical", canonical)
        return canonical

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a World is an immutable value; {name!r} cannot be set")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, World)
            and other.total == self.total
            and other.canonical == self.canonical
        )

    def __hash__(self) -> int:
        return hash(self.total)

    def replace(self, **changes: Any) -> World:
        """This world with some parts changed."""
        parts = {
            "states": self.states,
            "envelopes": self.envelopes,
            "drops_left": self.drops_left,
            "duplicates_left": self.duplicates_left,
            "pending": self.pending,
            "dead": self.dead,
            "now": self.now,
            "next_order": self.next_order,
            "fifo": self.fifo,
            **changes,
        }
        states = parts.pop("states")
        envelopes = parts.pop("envelopes")
        drops = parts.pop("drops_left")
        duplicates = parts.pop("duplicates_left")
        return World(states, envelopes, drops, duplicates, **parts)

    def outcome(self) -> World:
        """What a final world is judged by: its states and dead letters.

        Not the search's fault budgets left over, nor the virtual time it took.
        """
        return World(
            self.states, self.envelopes, pending=self.pending, dead=self.dead, fifo=self.fifo
        )

    @property
    def entities(self) -> dict[Entity[Any, Any], Any]:
        """``{address: state}`` for every entity activated so far (fresh copies)."""
        return {state.address: load_state(state.address, state.record) for state in self.states}

    @property
    def in_flight(self) -> list[tuple[Entity[Any, Any], Any]]:
        """The undelivered messages as ``(address, message)``, in canonical order."""
        return [(item.recipient, item.message) for item in self.envelopes]

    @property
    def timers(self) -> list[PendingTimer]:
        """The pending timers."""
        return list(self.pending)

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """The messages whose activation failed, in canonical order."""
        return list(self.dead)

    @property
    def quiescent(self) -> bool:
        """No message in flight and no timer pending: nothing more can happen."""
        return not self.envelopes and not self.pending

    def state_of(self, address: Entity[Any, StateT]) -> StateT:
        """The state of ``address`` (its ``init()`` if it was never activated)."""
        if not isinstance(address, Entity):
            raise InvalidAddressError(
                f"state_of takes an entity address, like Counter('my_counter'); got "
                f"{describe(address)}"
            )
        state: StateT = load_state(address, self.record_at(encode_canonical(address)))
        return state

    def record_at(self, key: bytes) -> bytes | None:
        """The stored record of the entity whose canonical encoding is ``key``, if any."""
        for state in self.states:
            if state.key == key:
                return state.record
        return None

    def __repr__(self) -> str:
        states = ", ".join(
            f"{s.address!r}: {safe_repr(load_state(s.address, s.record))}" for s in self.states
        )
        extra = ""
        if self.pending:
            extra += f", timers={list(self.pending)!r}"
        if self.dead:
            extra += f", dead_letters={list(self.dead)!r}"
        if self.now:
            extra += f", now={self.now:g}"
        flying = ", ".join(f"({to!r}, {safe_repr(message)})" for to, message in self.in_flight)
        return f"World({{{states}}}, in_flight=[{flying}]{extra})"


# Each slot's own setter: a third of the cost of object.__setattr__ by name, for the
# millions of worlds a search makes (World refuses attribute assignment itself).
_set_states, _set_envelopes, _set_pending, _set_dead, _set_now = (
    World.__dict__[name].__set__ for name in ("states", "envelopes", "pending", "dead", "now")
)
_set_drops, _set_duplicates, _set_order, _set_fifo, _set_total, _set_fingerprint = (
    World.__dict__[name].__set__
    for name in (
        "drops_left",
        "duplicates_left",
        "next_order",
        "fifo",
        "total",
        "fingerprint",
    )
)


def assemble(
    states: tuple[State, ...],
    envelopes: tuple[Envelope, ...],
    pending: tuple[PendingTimer, ...],
    dead: tuple[DeadLetter, ...],
    now: float,
    drops_left: int,
    duplicates_left: int,
    next_order: int,
    fifo: bool,
    total: int,
    world: World | None = None,
    fingerprint: bytes | None = None,
) -> World:
    """A world from its parts and its fingerprint sum, ``total``, worked out by the caller
    from the world it came from: nothing is summed or encoded again. (``world``: the
    blank world to fill, for ``World()`` itself; ``fingerprint``: ``total``'s bytes, when
    the caller has them, ``total`` then being reduced already.)"""
    if world is None:
        world = _blank(World)
    if fingerprint is None:
        total &= MASK
        fingerprint = total.to_bytes(16, "little")
    _set_states(world, states)
    _set_envelopes(world, envelopes)
    _set_pending(world, pending)
    _set_dead(world, dead)
    _set_now(world, now)
    _set_drops(world, drops_left)
    _set_duplicates(world, duplicates_left)
    _set_order(world, next_order)
    _set_fifo(world, fifo)
    _set_total(world, total)
    _set_fingerprint(world, fingerprint)
    return world


_blank = object.__new__


def envelope_total(envelopes: tuple[Envelope, ...], fifo: bool) -> int:
    """The envelopes' share of a fingerprint: their digests, each weighted by its place
    in its channel when the order in a channel matters (FIFO)."""
    if not fifo:
        return sum(item.digest for item in envelopes)
    total = place = 0
    channel = None
    for item in envelopes:  # channels are contiguous, each in send order
        if item.channel != channel:
            channel, place = item.channel, 0
        total += item.digest * power(place)
        place += 1
    return total


def pending_total(pending: tuple[PendingTimer, ...] | list[PendingTimer]) -> int:
    """The timers' share of a fingerprint: their digests, each weighted by its place among
    its owner's timers, since of two due at once the one set first fires first."""
    total = place = 0
    owner = None
    for timer in pending:  # each owner's timers are contiguous, in the order they fire
        if timer.owner_key != owner:
            owner, place = timer.owner_key, 0
        total += timer.digest * power(place)
        place += 1
    return total


def state_entry(
    address: Entity[Any, Any], key: bytes, state_bytes: bytes, canonical: bytes
) -> State:
    """A world's entry for ``address``, from its state's plain and canonical encodings."""
    version = address.version
    record = record_bytes(version, state_bytes)
    fingerprinted = record if canonical is state_bytes else record_bytes(version, canonical)
    identity = key + fingerprinted
    return _new(State, (key, address, record, identity, digest(b"s" + identity)))


def world_from(
    envelopes: Iterable[Envelope],
    states: Mapping[Entity[Any, Any], Any] | None = None,
    drops: int = 0,
    duplicates: int = 0,
) -> World:
    """A world with these states and messages in flight (not yet in network order)."""
    entries = sorted(
        (
            state_entry(address, encode_canonical(address), encode(state), encode_canonical(state))
            for address, state in (states or {}).items()
        ),
        key=lambda entry: entry.key,
    )
    return World(tuple(entries), tuple(envelopes), drops, duplicates)
