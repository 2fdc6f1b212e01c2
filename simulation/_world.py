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

from pachyderm._activation import encode_state, load_state
from pachyderm._codec import decode, encode_canonical
from pachyderm._entity import Entity
from pachyderm.errors import InvalidAddressError, describe

__all__ = ["Envelope", "World", "envelope", "make_envelope"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in flight: from ``sender`` (None: from outside) to ``recipient``."""

    recipient: Entity[Any, Any]
    sender: Entity[Any, Any] | None
    blob: bytes  # the message, canonically encoded
    key: bytes  # recipient, sender and message, canonically encoded: orders and names it
    recipient_key: bytes  # the recipient, canonically encoded
    channel: bytes  # sender and recipient, canonically encoded: its FIFO channel

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
    return Envelope(
        recipient,
        sender,
        blob,
        recipient_key + sender_key + blob,
        recipient_key,
        sender_key + recipient_key,
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
        # msgpack items delimit themselves: counts up front are all the framing needed.
        head = b"%d:%d:%d;" % (self.drops_left, self.duplicates_left, len(self.states))
        states = b"".join([key + state for key, _, state in self.states])
        return head + states + b"".join([item.key for item in self.envelopes])

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
        return {address: load_state(address, state) for _, address, state in self.states}

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
        return load_state(address, self.state_blob_at(encode_canonical(address)))

    def state_blob_at(self, key: bytes) -> bytes | None:
        """The canonical state of the entity whose canonical encoding is ``key``, if any."""
        for stored_key, _, state in self.states:
            if stored_key == key:
                return state
        return None

    def with_state(self, key: bytes, address: Entity[Any, Any], state: bytes) -> World:
        """This world with ``address`` (canonically ``key``) in ``state`` (its stored form)."""
        states = self.states
        position = 0
        for position, entry in enumerate(states):  # noqa: B007 - position is used after
            if entry[0] >= key:
                break
        else:
            position = len(states)
        replaced = 1 if position < len(states) and states[position][0] == key else 0
        updated = (*states[:position], (key, address, state), *states[position + replaced :])
        return World(updated, self.envelopes, self.drops_left, self.duplicates_left)

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
        (encode_canonical(address), address, encode_state(address, state, encode_canonical))
        for address, state in (states or {}).items()
    )
    return World(tuple(entries), tuple(envelopes), drops, duplicates)
