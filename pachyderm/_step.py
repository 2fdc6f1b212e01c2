"""The activation step: one pure function, the same for every ecosystem, live or simulated.

An entity, its state and a message go in; a *transition* comes out, a frozen
value: :class:`Activated` (the new state, its stored form, and the commands to
carry out: sends and timers) or :class:`Failed` (the error, which becomes a
dead letter). Hosts interpret transitions: the live runtime turns one into an
atomic write, the simulation into a new world. This module decides what counts
as a valid activation; it does no I/O and reads no clock.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple

from pachyderm._codec import decode, encode
from pachyderm._commands import After, Cancel
from pachyderm._entity import Entity, newest_address
from pachyderm.errors import (
    InitError,
    InvalidActivationError,
    MessageTooLargeError,
    PachydermError,
    UpgradeError,
    clipped,
    describe,
    exception_text,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_OUTBOX",
    "Activated",
    "CancelTimer",
    "Command",
    "Failed",
    "Send",
    "SetTimer",
    "Transition",
    "activate",
    "encode_message",
    "handler_marks",
    "inside_handler",
    "inside_own_handler",
    "load_state",
    "own_call",
    "record_bytes",
    "refuse_inside_activation",
]

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
MAX_OUTBOX = 100_000
"""The most commands one activation may return: an endless generator stops here."""


class Send(NamedTuple):
    """Deliver ``message`` (encoded) to ``recipient``."""

    recipient: Entity[Any, Any]
    message: bytes


class SetTimer(NamedTuple):
    """Deliver ``message`` (encoded) to ``recipient`` once ``delay`` seconds have passed.

    Named timers replace the pending timer of that name set by the same entity.
    """

    name: str | None
    delay: float
    recipient: Entity[Any, Any]
    message: bytes


class CancelTimer(NamedTuple):
    """Remove the activating entity's pending timer called ``name``, if any."""

    name: str


Command = Send | SetTimer | CancelTimer


class Activated(NamedTuple):
    """A valid activation: the message consumed, the new state, and what to carry out.

    ``state`` is the very value the handler returned (hosts hand it to the next
    activation); ``state_bytes`` is its stored form.
    """

    message: Any
    state: Any
    state_bytes: bytes
    commands: tuple[Command, ...]


class Failed(NamedTuple):
    """A failed activation: the entity keeps its state and the message becomes a dead letter."""

    message: Any
    error: BaseException
    traceback: str


Transition = Activated | Failed
Encoder = Callable[[Any], bytes]


def encode_message(
    message: Any, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, encoder: Encoder = encode
) -> bytes:
    """Encode a message, refusing one over ``max_bytes``."""
    blob = encoder(message)
    if len(blob) > max_bytes:
        raise MessageTooLargeError(len(blob), max_bytes)
    return blob


_RECORD_HEADERS: dict[int, bytes] = {}


def record_bytes(version: int, state_bytes: bytes) -> bytes:
    """An entity's stored record, ``[version, state]``, from its encoded state.

    Joined from parts, not re-encoded: the same bytes as ``encode([version, state])``.
    """
    header = _RECORD_HEADERS.get(version)
    if header is None:
        header = _RECORD_HEADERS[version] = b"\x92" + encode(version)
    return header + state_bytes


def load_state(address: Entity[Any, Any], record: bytes | None) -> Any:
    """The state of ``address`` from its stored record, upgraded to the current version.

    ``None`` (never stored) gives ``address.init()``. What ``init()`` and
    ``upgrade()`` return is copied through the codec, so an entity never
    shares a mutable object (a module-level list, say) with another.

    Raises:
        InitError: ``init()`` raised, or returned a state that cannot be stored.
        UpgradeError: the record is malformed, newer than this code, or
            ``upgrade()`` failed; the message says which.
    """
    if record is None:
        address = newest_address(address)  # a class defined again runs its own init()
        try:
            return decode(encode(_user_code(address.init)))
        except Exception as error:
            raise InitError(
                f"{address!r}: {type(address).__qualname__}.init() failed, so the entity "
                f"has no initial state: {exception_text(error)}. Fix init(); it "
                f"must return a storable value."
            ) from error
    stored = decode(record)
    if type(stored) is not list or len(stored) != 2 or type(stored[0]) is not int:
        raise UpgradeError(f"stored state of {address!r} is malformed: {describe(stored)}")
    version, state = stored
    if version == address.version:
        return state
    newest = newest_address(address)
    if newest is not address:  # defined again since: the newest version and upgrade() apply
        return load_state(newest, record)
    if version > address.version:
        raise UpgradeError(
            f"the state of {address!r} was stored by version {version} of "
            f"{type(address).__qualname__}, newer than this code's version "
            f"{address.version}; run the newer code, or raise version to {version}"
        )
    try:
        return decode(encode(_user_code(address.upgrade, state, version)))
    except UpgradeError:
        raise  # the default upgrade(), or the user's own account of the problem
    except Exception as error:
        raise UpgradeError(
            f"{address!r}: {type(address).__qualname__}.upgrade(state, from_version="
            f"{version}) failed, upgrading the state stored by version {version} to "
            f"version {address.version}: {exception_text(error)}. The stored "
            f"state is kept as it was; fix upgrade() (it must return a storable value)."
        ) from error


def activate(
    address: Entity[Any, Any],
    state: Any,
    message: Any,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    encoder: Encoder = encode,
) -> Activated | Failed:
    """Run ``address.activate(message, state)`` and check what it returned.

    ``encoder`` makes the stored forms (the codec's plain encoding, which keeps
    dict order, unless a host asks otherwise). Whatever the handler raises,
    BaseExceptions included, is a :class:`Failed` transition.
    """
    try:
        # Set inside the try: a Ctrl-C landing just after it must not leave it set.
        _inside.active = True
        result = address.activate(message, state)
        if type(result) is not tuple or len(result) != 2:
            raise InvalidActivationError(
                f"{type(address).__qualname__}.activate must return a pair "
                f"(outbox, new_state); it returned {describe(result)}"
            )
        outbox, new_state = result
        try:
            state_bytes = encoder(new_state)
        except PachydermError as error:
            raise InvalidActivationError(
                f"{type(address).__qualname__}.activate returned a new state that cannot "
                f"be stored: {error}"
            ) from error
        if type(outbox) is list and not outbox:
            commands: tuple[Command, ...] = ()
        else:
            commands = _commands(address, outbox, max_message_bytes, encoder)
        return _new_activated(Activated, (message, new_state, state_bytes, commands))
    except BaseException as error:
        return Failed(message, error, clipped(traceback.format_exc()))  # (stored escaped)
    finally:
        _inside.active = False


_new_activated = tuple.__new__  # Activated(...) without its Python-level __new__: a third faster


class _Inside(threading.local):
    """Per thread: is a handler running, and is it the caller's own? (Class defaults: no.)"""

    active = False
    own = False  # the handler runs for this thread's own call: interrupting it is the caller's


_inside = _Inside()
handler_marks = _inside
"""This thread's marks, ``.active`` and ``.own``: read, never set, where even the call of
:func:`inside_handler` costs too much (the shell face checks on every call)."""


def _user_code(function: Callable[..., Any], *arguments: Any) -> Any:
    """Call ``init`` or ``upgrade``: user code, as pure as ``activate``."""
    try:
        _inside.active = True
        return function(*arguments)
    finally:
        _inside.active = False


def inside_handler() -> bool:
    """Whether this thread is running a handler (``activate``, ``init``, ``upgrade``) now."""
    return _inside.active


def inside_own_handler(frame: FrameType | None) -> bool:
    """Whether ``frame`` is in a handler run for this thread's own call (or below one).

    True inside ``activate``, ``init``, ``upgrade``, an outbox being iterated,
    and what they call: everything the step runs inside its ``try``, where an
    exception only fails the activation; and only while the activation is
    this thread's own (see :func:`own_call`), not one it runs for another
    thread. False in the step's own frame, which sets and clears the mark.
    """
    inside = _inside
    return inside.active and inside.own and frame is not None and frame.f_code not in _STEP_CODES


def own_call(own: bool) -> bool:
    """Mark whether what this thread runs now is its own call; returns the previous mark."""
    previous = _inside.own
    _inside.own = own
    return previous


_STEP_CODES = frozenset({activate.__code__, _user_code.__code__})


def refuse_inside_activation(verb: str) -> None:
    """Handlers are pure: calling an ecosystem from inside ``activate`` is refused."""
    if _inside.active:
        raise PachydermError(
            f"{verb} was called from inside activate(); handlers must be pure. Return "
            f"the message in the outbox instead: return [(address, message)], new_state"
        )


def _commands(
    address: Entity[Any, Any], outbox: Any, max_message_bytes: int, encoder: Encoder
) -> tuple[Command, ...]:
    try:
        items = iter(outbox)
    except TypeError:
        raise InvalidActivationError(
            f"{type(address).__qualname__}.activate must return an iterable of "
            f"(address, message) pairs (or after(...) and cancel(...) commands) as its "
            f"outbox; got {describe(outbox)}"
        ) from None
    commands: list[Command] = []
    for item in items:
        if len(commands) >= MAX_OUTBOX:
            raise InvalidActivationError(
                f"{type(address).__qualname__}.activate returned an outbox of more than "
                f"{MAX_OUTBOX:,} commands; send fewer per activation (an endless "
                f"generator?), e.g. by sending yourself a message to go on"
            )
        kind = type(item)
        if kind is tuple and len(item) == 2 and isinstance(item[0], Entity):
            recipient, message = item
            blob = _encode(address, recipient, message, max_message_bytes, encoder)
            commands.append(Send(recipient, blob))
        elif kind is After:
            blob = _encode(address, item.address, item.message, max_message_bytes, encoder)
            commands.append(SetTimer(item.name, item.delay, item.address, blob))
        elif kind is Cancel:
            commands.append(CancelTimer(item.name))
        else:
            raise InvalidActivationError(
                f"every outbox item from {type(address).__qualname__}.activate must be a "
                f"pair (address, message) whose address is an Entity instance, or "
                f"after(...) or cancel(...); got {describe(item)}"
            )
    return tuple(commands)


def _encode(
    address: Entity[Any, Any],
    recipient: Entity[Any, Any],
    message: Any,
    max_message_bytes: int,
    encoder: Encoder,
) -> bytes:
    try:
        return encode_message(message, max_message_bytes, encoder)
    except PachydermError as error:
        raise InvalidActivationError(
            f"{type(address).__qualname__}.activate sent {recipient!r} a message that "
            f"cannot be sent: {error}"
        ) from error
