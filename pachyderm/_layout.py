"""Where things live in an ordered key-value store: the storage format, version 1.

Every key starts with a one-byte table tag. Ecosystem ids and addresses are
length-prefixed so that a prefix scan of one never reaches into another.

    M<name>                           meta: format version, next sequence number
    S<eco><address>                   state blob: encode([version, state])
    I<eco><address><seq>              inbox: one accepted, unprocessed message
    D<eco><seq>                       dead letter: a message whose activation failed

Sequence numbers are 8 bytes big-endian, one counter for the whole store, so
inbox keys sort in acceptance order. Tags T (timers) and J (journal) are kept
free for durable time and activation journals.
"""

from __future__ import annotations

import struct
from typing import Any

from pachyderm._codec import decode, encode
from pachyderm._entity import Entity
from pachyderm._store import Store
from pachyderm.errors import PachydermError, StoreCorruptedError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NEXT_SEQ",
    "address_key",
    "dead_letter_key",
    "dead_letter_prefix",
    "inbox_prefix",
    "parse_address_key",
    "parse_dead_letter_key",
    "parse_inbox_key",
    "prepare",
    "state_key",
]

FORMAT_VERSION = 1
FORMAT = b"Mformat"
NEXT_SEQ = b"Mnext_seq"
INBOX = b"I"
_SEQ = struct.Struct(">Q")
_LEN2 = struct.Struct(">H")
_LEN4 = struct.Struct(">I")


def ecosystem_key(ecosystem_id: str) -> bytes:
    raw = ecosystem_id.encode()
    return _LEN2.pack(len(raw)) + raw


def address_key(address: Entity[Any, Any]) -> bytes:
    """The stored form of an address: its class's stable name and id, length-prefixed."""
    raw = encode([address.entity_name, address.id])
    return _LEN4.pack(len(raw)) + raw


def parse_address_key(key: bytes) -> tuple[str, Any]:
    """``(entity_name, id)`` from an address key; needs no registered class."""
    (length,) = _LEN4.unpack_from(key)
    name, entity_id = decode(key[4 : 4 + length])
    return name, entity_id


def state_key(eco: bytes, address: bytes) -> bytes:
    return b"S" + eco + address


def inbox_prefix(eco: bytes = b"", address: bytes = b"") -> bytes:
    return INBOX + eco + address


def parse_inbox_key(key: bytes) -> tuple[bytes, bytes, int]:
    """``(ecosystem key, address key, seq)`` of an inbox key."""
    (eco_length,) = _LEN2.unpack_from(key, 1)
    eco_end = 3 + eco_length
    (address_length,) = _LEN4.unpack_from(key, eco_end)
    address_end = eco_end + 4 + address_length
    (seq,) = _SEQ.unpack_from(key, address_end)
    return key[1:eco_end], key[eco_end:address_end], seq


def dead_letter_prefix(eco: bytes) -> bytes:
    return b"D" + eco


def dead_letter_key(eco: bytes, seq: int) -> bytes:
    return b"D" + eco + _SEQ.pack(seq)


def parse_dead_letter_key(key: bytes) -> int:
    (seq,) = _SEQ.unpack_from(key, len(key) - 8)
    return int(seq)


encode_seq = _SEQ.pack
"""The 8 bytes of a sequence number (a bound method: it is called for every message)."""


def decode_seq(raw: bytes) -> int:
    return int(_SEQ.unpack(raw)[0])


def prepare(store: Store, name: str, *, sync: bool) -> int:
    """Check (or, in an empty store, write) the format marker; return the next sequence number.

    Raises:
        StoreCorruptedError: the store holds data that Pachyderm did not write,
            or data of another storage format.
    """
    stored = store.get(FORMAT)
    if stored is None:
        if next(iter(store.scan(b"")), None) is not None:
            raise StoreCorruptedError(
                f"{name} holds data but no Pachyderm format marker: it is not a Pachyderm "
                f"store, or it is damaged. Open an empty directory instead."
            )
        store.write([(FORMAT, encode(FORMAT_VERSION))], sync=sync)
        return 0
    try:
        version = decode(stored)
    except PachydermError:
        version = stored
    if version != FORMAT_VERSION:
        raise StoreCorruptedError(
            f"{name} has storage format {version!r}, but this Pachyderm reads format "
            f"{FORMAT_VERSION}; open it with the version that wrote it"
        )
    next_seq = store.get(NEXT_SEQ)
    return decode_seq(next_seq) if next_seq is not None else 0
