"""The activation step shared by every ecosystem, live or simulated.

One pure function: an entity, its state and a message in; the new state and
the encoded outbox out, or the failure. Hosts decide what to store and when;
this module decides what counts as a valid activation.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pachyderm._codec import decode, encode
from pachyderm._entity import Entity
from pachyderm.errors import (
    InvalidActivationError,
    MessageTooLargeError,
    PachydermError,
    UpgradeError,
    describe,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Failure",
    "Success",
    "activate",
    "encode_message",
    "encode_state",
    "load_state",
    "refuse_inside_activation",
]

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20


class Success(NamedTuple):
    """A valid activation: the new state (value and stored form) and the outbox to deliver."""

    state: Any
    state_blob: bytes
    outbox: list[tuple[Entity[Any, Any], bytes]]


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed activation: what went wrong, with the traceback as text."""

    error: Exception
    traceback: str


Encoder = Callable[[Any], bytes]


def encode_message(
    message: Any, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, encoder: Encoder = encode
) -> bytes:
    """Encode a message, refusing one over ``max_bytes``."""
    blob = encoder(message)
    if len(blob) > max_bytes:
        raise MessageTooLargeError(len(blob), max_bytes)
    return blob


def encode_state(address: Entity[Any, Any], state: Any, encoder: Encoder = encode) -> bytes:
    """The stored form of a state: ``[version, state]``, so upgrades know what they read."""
    return encoder([address.version, state])


def load_state(address: Entity[Any, Any], blob: bytes | None) -> Any:
    """The state of ``address`` from its stored form, upgraded to the current version.

    ``None`` (never stored) gives ``address.init()``.
    """
    if blob is None:
        return address.init()
    stored = decode(blob)
    if type(stored) is not list or len(stored) != 2 or type(stored[0]) is not int:
        raise UpgradeError(f"stored state of {address!r} is malformed: {describe(stored)}")
    version, state = stored
    if version == address.version:
        return state
    if version > address.version:
        raise UpgradeError(
            f"the state of {address!r} was stored by version {version} of "
            f"{type(address).__qualname__}, newer than this code's version "
            f"{address.version}; run the newer code, or raise version to {version}"
        )
    return address.upgrade(state, version)


def activate(
    address: Entity[Any, Any],
    state: Any,
    message: Any,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    encoder: Encoder = encode,
) -> Success | Failure:
    """Run ``address.activate(message, state)`` and check what it returned.

    ``encoder`` makes the stored forms: the live ecosystems' plain encoding, or
    the canonical one the simulation fingerprints worlds with.
    """
    _inside.active = True
    try:
        result = address.activate(message, state)
        if type(result) is not tuple or len(result) != 2:
            raise InvalidActivationError(
                f"{type(address).__qualname__}.activate must return a pair "
                f"(outbox, new_state); it returned {describe(result)}"
            )
        outbox, new_state = result
        try:
            state_blob = encode_state(address, new_state, encoder)
        except PachydermError as error:
            raise InvalidActivationError(
                f"{type(address).__qualname__}.activate returned a new state that cannot "
                f"be stored: {error}"
            ) from error
        if type(outbox) is not list or outbox:
            outbox = _encode_outbox(address, outbox, max_message_bytes, encoder)
        return _new_success(Success, (new_state, state_blob, outbox))
    except Exception as error:
        return Failure(error, traceback.format_exc())
    finally:
        _inside.active = False


_new_success = tuple.__new__  # Success(...) without its Python-level __new__: a third of the cost


_inside = threading.local()
_inside.active = False


def refuse_inside_activation(verb: str) -> None:
    """Handlers are pure: calling an ecosystem from inside ``activate`` is refused."""
    if getattr(_inside, "active", False):
        raise PachydermError(
            f"{verb} was called from inside activate(); handlers must be pure. Return "
            f"the message in the outbox instead: return [(address, message)], new_state"
        )


def _encode_outbox(
    address: Entity[Any, Any], outbox: Any, max_message_bytes: int, encoder: Encoder
) -> list[tuple[Entity[Any, Any], bytes]]:
    try:
        items = iter(outbox)
    except TypeError:
        raise InvalidActivationError(
            f"{type(address).__qualname__}.activate must return an iterable of "
            f"(address, message) pairs as its outbox; got {describe(outbox)}"
        ) from None
    encoded = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], Entity):
            raise InvalidActivationError(
                f"every outbox item from {type(address).__qualname__}.activate must be "
                f"a pair (address, message) whose address is an Entity instance; got "
                f"{describe(item)}"
            )
        recipient, message = item
        try:
            encoded.append((recipient, encode_message(message, max_message_bytes, encoder)))
        except PachydermError as error:
            raise InvalidActivationError(
                f"{type(address).__qualname__}.activate sent {recipient!r} a message "
                f"that cannot be sent: {error}"
            ) from error
    return encoded
