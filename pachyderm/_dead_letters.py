"""Dead letters: messages whose activation failed, kept durably with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pachyderm._codec import decode, decode_marking, encode
from pachyderm._entity import Entity
from pachyderm.errors import CodecError, UnregisteredNameError, shown

__all__ = ["DeadLetter", "Unreadable", "decode_dead_letter", "encode_dead_letter"]


@dataclass(frozen=True)
class Unreadable:
    """Stands for a part of a dead letter that this process cannot decode.

    A dead letter's address or message may name a class this process has not
    registered (not imported), or its bytes may be damaged; ``dead_letters()``
    shows it with this placeholder instead of failing. Import the class and
    list again to see the part; ``redeliver`` refuses the letter until then.

    Attributes:
        missing: the name of the class the part needs, or None (damaged bytes).
        reason: what is wrong, and what to do.
    """

    missing: str | None
    reason: str

    def __repr__(self) -> str:
        return f"<unreadable: {self.reason}>"


def _unreadable(error: CodecError) -> Unreadable:
    if isinstance(error, UnregisteredNameError):
        return Unreadable(
            error.name,
            f"needs the {error.kind} {error.name!r}, not registered in this process; "
            f"import the module that defines it",
        )
    return Unreadable(None, f"damaged bytes: {error}")


def _decode_part(blob: bytes) -> Any:
    try:
        return decode(blob)
    except CodecError as error:
        return _unreadable(error)


@dataclass(frozen=True)
class DeadLetter:
    """A message that an entity failed to process, and why.

    Attributes:
        id: identifies it for ``redeliver`` and ``discard``.
        address: the entity that failed.
        message: the message it failed on.
        error: the exception's type name and text, e.g. ``"ValueError: boom"``.
        traceback: the formatted traceback of the failure.
        recent_messages: the messages that entity received before, oldest first,
            ending with this one.
        failed_at: when it failed, in seconds since the epoch.

    Parts this process cannot decode (their class is not registered here)
    are shown as :class:`Unreadable` placeholders, the address included.
    """

    id: int
    address: Entity[Any, Any] | Unreadable
    message: Any
    error: str
    traceback: str
    recent_messages: list[Any]
    failed_at: float

    def __repr__(self) -> str:  # short, and whatever the message (see errors.shown)
        return (
            f"DeadLetter(id={self.id}, address={self.address!r}, message={shown(self.message)}, "
            f"error={shown(self.error)})"
        )


def encode_dead_letter(
    address: Entity[Any, Any],
    message_blob: bytes,
    error: str,
    traceback: str,
    recent_blobs: list[bytes],
    failed_at: float,
) -> bytes:
    """The stored form; messages stay encoded so a record is written without re-encoding."""
    return encode([address, message_blob, error, traceback, recent_blobs, failed_at])


def decode_dead_letter(dead_letter_id: int, blob: bytes) -> DeadLetter:
    """A stored dead letter, for showing: parts not decodable here are :class:`Unreadable`."""
    address, message_blob, error, traceback, recent_blobs, failed_at = decode_marking(
        blob, _unreadable
    )
    return DeadLetter(
        dead_letter_id,
        address,
        _decode_part(message_blob),
        error,
        traceback,
        [_decode_part(b) for b in recent_blobs],
        failed_at,
    )


def dead_letter_message_blob(dead_letter_id: int, blob: bytes) -> tuple[Entity[Any, Any], bytes]:
    """The address and the message, still encoded, for redelivery.

    Raises:
        UnregisteredNameError: the address or the message names a class this
            process has not registered; the letter must stay as it is.
    """
    try:
        address, message_blob, *_ = decode(blob)
        decode(message_blob)  # a message that cannot be read here would only wait in the inbox
    except UnregisteredNameError as missing:
        missing.add_note(
            f"dead letter {dead_letter_id} needs it to be redelivered; it stays a dead "
            f"letter until then"
        )
        raise
    return address, message_blob
