"""``World``: a simulated ecosystem as a plain immutable value.

A world is the entity states, the messages in flight, the pending timers, the
dead letters and the virtual time. Handlers are handed states and messages
decoded from their *stored* form (the codec's plain encoding, which keeps dict
order): the same values a live ecosystem hands them. Worlds are compared,
hashed and fingerprinted (BLAKE2b, stable across processes, unlike ``hash()``)
by the *canonical* encoding of those values, so that equal worlds are one.
Which messages may be delivered next is the network's business (see
``_network``), not the world's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from pachyderm._codec import decode, encode, encode_canonical
from pachyderm._entity import Entity
from pachyderm._step import load_state, record_bytes
from pachyderm.errors import InvalidAddressError, describe

__all__ = [
    "DeadLetter",
    "Envelope",
    "PendingTimer",
    "State",
    "World",
    "dead_letter",
    "envelope",
    "make_envelope",
    "pending_timer",
    "state_entry",
    "world_from",
]

StateT = TypeVar("StateT")


class State(NamedTuple):
    """An entity's state in a world: as stored, and canonically for the fingerprint."""

    key: bytes  # the address, canonically encoded: orders the states
    address: Entity[Any, Any]
    record: bytes  # the stored record, encode([version, state]): what handlers get
    canonical: bytes  # key + the record encoded canonically: what the fingerprint sees


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
    order: int = 0  # when it was sent, in this world's history: not part of its identity

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        origin = "outside" if self.sender is None else repr(self.sender)
        return f"{origin} -> {self.recipient!r}: {self.message!r}"


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A timer set by ``owner`` and not yet fired: ``message`` for ``recipient`` at ``due``."""

    owner_key: bytes
    owner: Entity[Any, Any]
    name: str | None
    due: float
    recipient: Entity[Any, Any]
    recipient_key: bytes
    blob: bytes  # the message as stored
    canonical: bytes  # the message, canonically encoded
    key: bytes  # owner, name, due, recipient and message, canonically: names it in every world

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        name = "" if self.name is None else f" {self.name!r}"
        return (
            f"timer{name} of {self.owner!r} at {self.due:g} -> {self.recipient!r}: {self.message!r}"
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message whose activation failed: the entity kept its state."""

    address: Entity[Any, Any]
    blob: bytes
    error: str  # the exception's type and text, e.g. "ValueError: boom"
    key: bytes  # recipient, message and error, canonically encoded: orders them

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        return f"{self.address!r} failed on {self.message!r}: {self.error}"


def pending_timer(
    owner: Entity[Any, Any],
    owner_key: bytes,
    name: str | None,
    due: float,
    recipient: Entity[Any, Any],
    blob: bytes,
    canonical: bytes,
) -> PendingTimer:
    """A pending timer from parts already encoded (``canonical``: the message's)."""
    recipient_key = encode_canonical(recipient)
    key = encode_canonical([owner_key, name, due, recipient_key]) + canonical
    return PendingTimer(owner_key, owner, name, due, recipient, recipient_key, blob, canonical, key)


def dead_letter(
    recipient: Entity[Any, Any], recipient_key: bytes, blob: bytes, canonical: bytes, error: str
) -> DeadLetter:
    """A dead letter from parts already encoded (``canonical``: the message's)."""
    return DeadLetter(recipient, blob, error, recipient_key + canonical + encode_canonical(error))


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
        (recipient, sender, blob, canonical, key, recipient_key, channel, b"de" + key, order),
    )


_new = tuple.__new__  # a NamedTuple without its Python-level __new__


class World:
    """States, messages in flight, pending timers, dead letters and the virtual time.

    An immutable value, equal to another iff the same canonical bytes.
    ``entities`` maps every entity that has been activated to its state;
    ``in_flight`` lists the messages not yet delivered as ``(address, message)``;
    ``timers`` the pending timers; ``dead_letters`` the failed activations;
    ``now`` the virtual time (seconds). Its attributes cannot be set: every
    change makes a new world.
    """

    __slots__ = (
        "canonical",
        "dead",
        "drops_left",
        "duplicates_left",
        "envelopes",
        "fingerprint",
        "next_order",
        "now",
        "pending",
        "states",
    )

    states: tuple[State, ...]
    envelopes: tuple[Envelope, ...]
    pending: tuple[PendingTimer, ...]
    dead: tuple[DeadLetter, ...]
    now: float
    drops_left: int
    duplicates_left: int
    next_order: int
    canonical: bytes
    fingerprint: bytes

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
    ) -> None:
        # msgpack items delimit themselves: counts up front are all the framing needed.
        if pending or dead or now:
            head = b"%d:%d:%d:%d:%d:%r;" % (
                drops_left,
                duplicates_left,
                len(states),
                len(pending),
                len(dead),
                now,
            )
            tail = b"".join([timer.key for timer in pending] + [letter.key for letter in dead])
        else:
            head = b"%d:%d:%d;" % (drops_left, duplicates_left, len(states))
            tail = b""
        canonical = b"".join(
            [head, *[state.canonical for state in states], *[item.key for item in envelopes], tail]
        )
        setter = object.__setattr__
        setter(self, "states", states)  # sorted by key
        setter(self, "envelopes", envelopes)  # in the network's canonical order
        setter(self, "pending", pending)  # by owner key, then due order per owner
        setter(self, "dead", dead)  # sorted by key
        setter(self, "now", now)
        setter(self, "drops_left", drops_left)
        setter(self, "duplicates_left", duplicates_left)
        setter(self, "next_order", next_order)  # bookkeeping for run's send order, not identity
        setter(self, "canonical", canonical)
        setter(self, "fingerprint", hashlib.blake2b(canonical, digest_size=16).digest())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a World is an immutable value; {name!r} cannot be set")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, World) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.fingerprint)

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
        return World(self.states, self.envelopes, pending=self.pending, dead=self.dead)

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
        state: StateT = load_state(address, self.record_at(encode_canonical(address)))
        return state

    def record_at(self, key: bytes) -> bytes | None:
        """The stored record of the entity whose canonical encoding is ``key``, if any."""
        for state in self.states:
            if state.key == key:
                return state.record
        return None

    def states_with(self, state: State) -> tuple[State, ...]:
        """This world's states with ``state`` in place of (or beside) its entity's."""
        states = self.states
        key = state.key
        position = 0
        for position, entry in enumerate(states):  # noqa: B007 - position is used after
            if entry.key >= key:
                break
        else:
            position = len(states)
        replaced = 1 if position < len(states) and states[position].key == key else 0
        return (*states[:position], state, *states[position + replaced :])

    def __repr__(self) -> str:
        states = ", ".join(
            f"{s.address!r}: {load_state(s.address, s.record)!r}" for s in self.states
        )
        extra = ""
        if self.pending:
            extra += f", timers={list(self.pending)!r}"
        if self.dead:
            extra += f", dead_letters={list(self.dead)!r}"
        if self.now:
            extra += f", now={self.now:g}"
        return f"World({{{states}}}, in_flight={self.in_flight!r}{extra})"


def state_entry(
    address: Entity[Any, Any], key: bytes, state_bytes: bytes, canonical: bytes
) -> State:
    """A world's entry for ``address``, from its state's plain and canonical encodings."""
    version = address.version
    record = record_bytes(version, state_bytes)
    fingerprinted = record if canonical is state_bytes else record_bytes(version, canonical)
    return _new(State, (key, address, record, key + fingerprinted))


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
