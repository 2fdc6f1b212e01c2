"""``World``: a simulated ecosystem as a plain immutable value.

A world is the entity states plus the messages in flight. Both are kept in
their canonical encoding, so that equal worlds are equal bytes: they compare,
hash and fingerprint by them (BLAKE2b, stable across processes, unlike
``hash()``). Which messages may be delivered next is the network's business
(see ``_network``), not the world's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pachyderm._codec import decode, encode_canonical
from pachyderm._entity import Entity
from pachyderm._step import load_state, record_bytes
from pachyderm.errors import InvalidAddressError, describe

__all__ = ["Envelope", "States", "World", "envelope", "make_envelope"]

StateT = TypeVar("StateT")

States = tuple[tuple[bytes, Entity[Any, Any], bytes], ...]
"""``(canonical address, address, stored state)`` for each activated entity, sorted."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in flight: from ``sender`` (None: from outside) to ``recipient``."""

    recipient: Entity[Any, Any]
    sender: Entity[Any, Any] | None
    blob: bytes  # the message, canonically encoded
    key: bytes  # recipient, sender and message, canonically encoded: orders and names it
    recipient_key: bytes  # the recipient, canonically encoded
    channel: bytes  # sender and recipient, canonically encoded: its FIFO channel
    deliver_key: bytes  # the key of the action that delivers it, made once

    @property
    def message(self) -> Any:
        """A fresh copy of the message."""
        return decode(self.blob)

    def __repr__(self) -> str:
        origin = "outside" if self.sender is None else repr(self.sender)
        return f"{origin} -> {self.recipient!r}: {self.message!r}"


def envelope(recipient: Any, message: Any, sender: Entity[Any, Any] | None = None) -> Envelope:
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
        encode_canonical(message),
    )


def make_envelope(
    recipient: Entity[Any, Any],
    recipient_key: bytes,
    sender: Entity[Any, Any] | None,
    sender_key: bytes,
    blob: bytes,
) -> Envelope:
    """An envelope from parts already encoded (msgpack items delimit themselves)."""
    key = recipient_key + sender_key + blob
    return Envelope(
        recipient, sender, blob, key, recipient_key, sender_key + recipient_key, b"de" + key
    )


class World:
    """Entity states and in-flight messages: an immutable value, equal iff the same bytes.

    ``entities`` maps every entity that has been activated to its state;
    ``in_flight`` lists the messages not yet delivered as ``(address, message)``.
    Its attributes cannot be set: every change makes a new world.
    """

    __slots__ = (
        "canonical",
        "drops_left",
        "duplicates_left",
        "envelopes",
        "fingerprint",
        "states",
    )

    states: States
    envelopes: tuple[Envelope, ...]
    drops_left: int
    duplicates_left: int
    canonical: bytes
    fingerprint: bytes

    def __init__(
        self,
        states: tuple[tuple[bytes, Entity[Any, Any], bytes], ...] = (),
        envelopes: tuple[Envelope, ...] = (),
        drops_left: int = 0,
        duplicates_left: int = 0,
    ) -> None:
        # msgpack items delimit themselves: counts up front are all the framing needed.
        head = b"%d:%d:%d;" % (drops_left, duplicates_left, len(states))
        body = b"".join([key + state for key, _, state in states])
        canonical = head + body + b"".join([item.key for item in envelopes])
        fingerprint = hashlib.blake2b(canonical, digest_size=16).digest()
        setter = object.__setattr__
        setter(self, "states", states)  # sorted (canonical address, address, stored state)
        setter(self, "envelopes", envelopes)  # in the network's canonical order
        setter(self, "drops_left", drops_left)
        setter(self, "duplicates_left", duplicates_left)
        setter(self, "canonical", canonical)
        setter(self, "fingerprint", fingerprint)  # BLAKE2b: the same in every process

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a World is an immutable value; {name!r} cannot be set")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, World) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    @property
    def entities(self) -> dict[Entity[Any, Any], Any]:
        """``{address: state}`` for every entity activated so far (fresh copies)."""
        return {address: load_state(address, state) for _, address, state in self.states}

    @property
    def in_flight(self) -> list[tuple[Entity[Any, Any], Any]]:
        """The undelivered messages as ``(address, message)``, in canonical order."""
        return [(item.recipient, item.message) for item in self.envelopes]

    @property
    def quiescent(self) -> bool:
        """No message in flight: nothing more can happen."""
        return not self.envelopes

    def state_of(self, address: Entity[Any, StateT]) -> StateT:
        """The state of ``address`` (its ``init()`` if it was never activated)."""
        state: StateT = load_state(address, self.state_blob_at(encode_canonical(address)))
        return state

    def state_blob_at(self, key: bytes) -> bytes | None:
        """The canonical state of the entity whose canonical encoding is ``key``, if any."""
        for stored_key, _, state in self.states:
            if stored_key == key:
                return state
        return None

    def states_with(self, key: bytes, address: Entity[Any, Any], state: bytes) -> States:
        """This world's states with ``address`` (canonically ``key``) in ``state`` (stored form)."""
        states = self.states
        position = 0
        for position, entry in enumerate(states):  # noqa: B007 - position is used after
            if entry[0] >= key:
                break
        else:
            position = len(states)
        replaced = 1 if position < len(states) and states[position][0] == key else 0
        return (*states[:position], (key, address, state), *states[position + replaced :])

    def __repr__(self) -> str:
        states = ", ".join(f"{a!r}: {load_state(a, state)!r}" for _, a, state in self.states)
        return f"World({{{states}}}, in_flight={self.in_flight!r})"


def world_from(
    envelopes: Iterable[Envelope],
    states: Mapping[Entity[Any, Any], Any] | None = None,
    drops: int = 0,
    duplicates: int = 0,
) -> World:
    """A world with these states and messages in flight (not yet in network order)."""
    entries = sorted(
        (encode_canonical(address), address, record_bytes(address.version, encode_canonical(state)))
        for address, state in (states or {}).items()
    )
    return World(tuple(entries), tuple(envelopes), drops, duplicates)
