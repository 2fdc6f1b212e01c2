"""Dead letters: messages whose activation failed, kept durably with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pachyderm._codec import decode, encode
from pachyderm._entity import Entity

__all__ = ["DeadLetter", "decode_dead_letter", "encode_dead_letter"]


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
    """

    id: int
    address: Entity[Any, Any]
    message: Any
    error: str
    traceback: str
    recent_messages: list[Any]
    failed_at: float


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
    address, message_blob, error, traceback, recent_blobs, failed_at = decode(blob)
    return DeadLetter(
        dead_letter_id,
        address,
        decode(message_blob),
        error,
        traceback,
        [decode(b) for b in recent_blobs],
        failed_at,
    )


def dead_letter_message_blob(blob: bytes) -> tuple[Entity[Any, Any], bytes]:
    """The address and the message, still encoded, for redelivery."""
    address, message_blob, *_ = decode(blob)
    return address, message_blob
