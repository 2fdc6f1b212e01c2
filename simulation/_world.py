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
from functools import cached_property
from typing import Any

from pachyderm._activation import load_state
from pachyderm._codec import decode, encode_canonical
from pachyderm._entity import Entity
from pachyderm.errors import InvalidAddressError, describe

__all__ = ["Envelope", "World", "envelope"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in flight: from ``sender`` (None: from outside) to ``recipient``."""

    recipient: Entity[Any, Any]
    sender: Entity[Any, Any] | None
    blob: bytes  # the message, canonically encoded
    key: bytes  # canonical encoding of (recipient, sender, message): orders and names it
    recipient_key: bytes  # canonical encoding of the recipient
    channel: bytes  # canonical encoding of (sender, recipient): its FIFO channel

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
    return Envelope(
        recipient,
        sender,
        encode_canonical(message),
        encode_canonical((recipient, sender, message)),
        encode_canonical(recipient),
        encode_canonical((sender, recipient)),
    )


@dataclass(frozen=True, eq=False)
class World:
    """Entity states and in-flight messages: an immutable value, equal iff the same bytes.

    ``entities`` maps every entity that has been activated to its state;
    ``in_flight`` lists the messages not yet delivered as ``(address, message)``.
    """

    states: tuple[tuple[bytes, Entity[Any, Any], bytes], ...] = ()  # sorted (key, address, state)
    envelopes: tuple[Envelope, ...] = ()  # in the network's canonical order
    drops_left: int = 0
    duplicates_left: int = 0

    @cached_property
    def canonical(self) -> bytes:
        """The bytes that identify this world."""
        parts = [b"%d:%d;" % (self.drops_left, self.duplicates_left)]
        for key, _, state in self.states:
            parts.append(b"S%d:%s%d:%s" % (len(key), key, len(state), state))
        for item in self.envelopes:
            parts.append(b"M%d:%s" % (len(item.key), item.key))
        return b"".join(parts)

    @cached_property
    def fingerprint(self) -> bytes:
        """BLAKE2b of :attr:`canonical`: 16 bytes, the same in every process."""
        return hashlib.blake2b(self.canonical, digest_size=16).digest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, World) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    @property
    def entities(self) -> dict[Entity[Any, Any], Any]:
        """``{address: state}`` for every entity activated so far (fresh copies)."""
        return {address: decode(state) for _, address, state in self.states}

    @property
    def in_flight(self) -> list[tuple[Entity[Any, Any], Any]]:
        """The undelivered messages as ``(address, message)``, in canonical order."""
        return [(item.recipient, item.message) for item in self.envelopes]

    @property
    def quiescent(self) -> bool:
        """No message in flight: nothing more can happen."""
        return not self.envelopes

    def state_of(self, address: Entity[Any, Any]) -> Any:
        """The state of ``address`` (its ``init()`` if it was never activated)."""
        key = encode_canonical(address)
        for stored_key, _, state in self.states:
            if stored_key == key:
                return decode(state)
        return load_state(address, None)

    def state_blob(self, address: Entity[Any, Any]) -> tuple[bytes, bytes | None]:
        """The address's canonical key, and its canonical state if it has one."""
        key = encode_canonical(address)
        for stored_key, _, state in self.states:
            if stored_key == key:
                return key, state
        return key, None

    def with_state(self, key: bytes, address: Entity[Any, Any], state: bytes) -> World:
        states = [entry for entry in self.states if entry[0] != key]
        states.append((key, address, state))
        states.sort(key=lambda entry: entry[0])
        return World(tuple(states), self.envelopes, self.drops_left, self.duplicates_left)

    def __repr__(self) -> str:
        states = ", ".join(f"{address!r}: {decode(state)!r}" for _, address, state in self.states)
        return f"World({{{states}}}, in_flight={self.in_flight!r})"


def world_from(
    envelopes: Iterable[Envelope],
    states: Mapping[Entity[Any, Any], Any] | None = None,
    drops: int = 0,
    duplicates: int = 0,
) -> World:
    """A world with these states and messages in flight (not yet in network order)."""
    entries = sorted(
        (encode_canonical(address), address, encode_canonical(state))
        for address, state in (states or {}).items()
    )
    return World(tuple(entries), tuple(envelopes), drops, duplicates)
