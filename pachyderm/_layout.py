"""Where things live in an ordered key-value store: the storage format, version 2.

The only module that knows keys. Every key starts with a one-byte table tag;
ecosystem ids and addresses are length-prefixed so that a prefix scan of one
never reaches into another.

    M<name>                          meta: format version, next sequence number
    S<eco><address>                  entity record: encode([version, state])
    I<eco><address><seq>             inbox: one accepted, unprocessed message
    D<eco><seq>                      dead letter: a message whose activation failed
    T<due><seq>                      timer, in due order: owner, name, recipient, message
    N<eco><owner><name>              named timer: the <due><seq> of its T key

Sequence numbers are 8 bytes big-endian, one counter for the whole store, so
inbox keys sort in acceptance order. Due times are microseconds since the
epoch, 8 bytes big-endian. An address is ``encode([entity name, id])``: it
needs no registered class. Tag J (journal) is kept free. Format 1 (no timers)
is read as format 2 with no timer pending.
"""

from __future__ import annotations

import struct
from typing import Any

from pachyderm._codec import decode, encode
from pachyderm._storage import Ident, Timer
from pachyderm.errors import CodecError, StoreCorruptedError, describe

__all__ = [
    "DEAD_LETTER",
    "FORMAT",
    "FORMAT_VERSION",
    "INBOX",
    "NEXT_SEQ",
    "TIMER",
    "address_key",
    "dead_letter_key",
    "dead_letter_prefix",
    "decode_seq",
    "decode_timer",
    "ecosystem_key",
    "encode_seq",
    "encode_timer",
    "inbox_prefix",
    "named_timer_key",
    "named_timer_prefix",
    "parse_inbox_key",
    "parse_named_timer",
    "state_key",
    "timer_key",
]

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
FORMAT = b"Mformat"
NEXT_SEQ = b"Mnext_seq"
INBOX = b"I"
TIMER = b"T"
DEAD_LETTER = b"D"
NAMED_TIMER = b"N"
_SEQ = struct.Struct(">Q")
_DUE_SEQ = struct.Struct(">QQ")
_LEN2 = struct.Struct(">H")
_LEN4 = struct.Struct(">I")
_MICROSECONDS = 1_000_000
_LAST_DUE = 2**64 - 1

encode_seq = _SEQ.pack
"""The 8 bytes of a sequence number (a bound method: it is called for every message)."""


def decode_seq(raw: bytes) -> int:
    return int(_SEQ.unpack(raw)[0])


def ecosystem_key(ecosystem_id: str) -> bytes:
    raw = ecosystem_id.encode()
    return _LEN2.pack(len(raw)) + raw


def address_key(name: str, entity_id: Any) -> bytes:
    """The stored form of an address: its class's stable name and id, length-prefixed."""
    raw = encode([name, entity_id])
    return _LEN4.pack(len(raw)) + raw


def _parse_address(key: bytes, start: int) -> tuple[str, Any, int]:
    """``(name, id, end)`` of the address key starting at ``start``."""
    (length,) = _LEN4.unpack_from(key, start)
    end = start + 4 + length
    name, entity_id = decode(key[start + 4 : end])
    return name, entity_id, end


def parse_address(raw: bytes) -> tuple[str, Any]:
    """``(name, id)`` of a stored address (an :func:`address_key`)."""
    name, entity_id, _ = _parse_address(raw, 0)
    return name, entity_id


def state_key(eco: bytes, address: bytes) -> bytes:
    return b"S" + eco + address


def inbox_prefix(eco: bytes = b"", address: bytes = b"") -> bytes:
    return INBOX + eco + address


def parse_inbox_key(key: bytes) -> tuple[Ident, int]:
    """``((ecosystem, name, id), seq)`` of an inbox key."""
    (eco_length,) = _LEN2.unpack_from(key, 1)
    eco_end = 3 + eco_length
    name, entity_id, address_end = _parse_address(key, eco_end)
    (seq,) = _SEQ.unpack_from(key, address_end)
    return (key[3:eco_end].decode(), name, entity_id), seq


def dead_letter_prefix(eco: bytes) -> bytes:
    return DEAD_LETTER + eco


def dead_letter_key(eco: bytes, seq: int) -> bytes:
    return DEAD_LETTER + eco + _SEQ.pack(seq)


def parse_dead_letter_key(key: bytes) -> int:
    (seq,) = _SEQ.unpack_from(key, len(key) - 8)
    return int(seq)


def due_and_seq(due: float, seq: int) -> bytes:
    """The 16 bytes that order timers: due (microseconds), then sequence number.

    Clamped to what 8 bytes hold (about 584,000 years): a key must never fail to encode.
    """
    return _DUE_SEQ.pack(min(max(0, round(due * _MICROSECONDS)), _LAST_DUE), seq)


def timer_key(due: float, seq: int) -> bytes:
    return TIMER + due_and_seq(due, seq)


def named_timer_prefix(eco: bytes, owner: bytes) -> bytes:
    return NAMED_TIMER + eco + owner


def named_timer_key(eco: bytes, owner: bytes, name: str) -> bytes:
    return NAMED_TIMER + eco + owner + name.encode()


def parse_named_timer(prefix: bytes, key: bytes, value: bytes) -> tuple[str, tuple[float, int]]:
    """``(name, (due, seq))`` of a named-timer entry found under ``prefix``."""
    due, seq = _DUE_SEQ.unpack(value)
    return key[len(prefix) :].decode(), (due / _MICROSECONDS, seq)


def encode_timer(timer: Timer) -> bytes:
    """A timer's T value: everything but its due time and seq, which its key holds."""
    eco, recipient_name, recipient_id = timer.recipient
    owner = None if timer.owner is None else list(timer.owner[1:])
    return encode([eco, owner, timer.name, recipient_name, recipient_id, timer.message])


def decode_timer(key: bytes, value: bytes) -> Timer:
    """The timer stored under ``key`` (a T key) with ``value``."""
    due, seq = _DUE_SEQ.unpack_from(key, 1)
    try:
        eco, owner, name, recipient_name, recipient_id, message = decode(value)
    except (CodecError, ValueError, TypeError) as error:
        raise StoreCorruptedError(f"a stored timer is damaged: {describe(value)}") from error
    owner_ident = None if owner is None else (eco, owner[0], owner[1])
    recipient: Ident = (eco, recipient_name, recipient_id)
    return Timer(due / _MICROSECONDS, seq, owner_ident, name, recipient, message)
