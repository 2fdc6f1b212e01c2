"""Arrays sent to PostgreSQL in its binary format, built in a few C-level calls.

A group's rows go to the server as arrays, one per column (see
``_postgres_storage._group``). psycopg's own list dumper looks at the list to
choose the element type, then dumps each element through a Python call: for
a one-message group that is most of the CPU the write takes. Here the element
type is stated by the caller (``int4s``, ``int8s``, ``texts``, ``blobs``), and
the array is packed with ``struct`` and ``bytes.join`` over the whole list.
The SQL still casts each parameter (``%b::bigint[]``): the server checks what
it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_HEAD = struct.Struct(">iiIii")  # dimensions (1), has NULLs, element type, length, lower bound
_EMPTY = struct.Struct(">iiI")  # no dimensions, no NULLs, element type
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)


class _Array:
    """A list of values of one PostgreSQL type, to be sent as an array of it."""

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items!r})"


class _Int4s(_Array):
    __slots__ = ()


class _Int8s(_Array):
    __slots__ = ()


class _Texts(_Array):
    __slots__ = ()


class _Blobs(_Array):
    __slots__ = ()


def int4s(items: Sequence[int | None]) -> Any:
    """``items`` as an ``int[]`` parameter."""
    return _Int4s(items)


def int8s(items: Sequence[int | None]) -> Any:
    """``items`` as a ``bigint[]`` parameter."""
    return _Int8s(items)


def texts(items: Sequence[str | None]) -> Any:
    """``items`` as a ``text[]`` parameter."""
    return _Texts(items)


def blobs(items: Sequence[bytes | memoryview | None]) -> Any:
    """``items`` as a ``bytea[]`` parameter."""
    return _Blobs(items)


def _packed_numbers(element: struct.Struct, size: int) -> Callable[[Sequence[Any]], bytes]:
    def pack(items: Sequence[Any]) -> bytes:
        if None in items:
            return b"".join(_NULL if item is None else element.pack(size, item) for item in items)
        return b"".join(map(element.pack, repeat(size, len(items)), items))

    return pack


def _packed_bytes(items: Sequence[Any]) -> bytes:
    if None in items:
        return b"".join(_NULL if item is None else _LENGTH.pack(len(item)) + item for item in items)
    lengths = map(_LENGTH.pack, map(len, items))
    return b"".join(chain.from_iterable(zip(lengths, items, strict=True)))


def _packed_texts(items: Sequence[Any]) -> bytes:
    if None in items:
        return _packed_bytes([None if item is None else item.encode() for item in items])
    return _packed_bytes(list(map(str.encode, items)))


def _dumper(
    kind: type[_Array], array_oid: int, element_oid: int, pack: Callable[[Sequence[Any]], bytes]
) -> type[Dumper]:
    class ArrayDumper(Dumper):
        format = Format.BINARY
        oid = array_oid

        def dump(self, obj: Any) -> bytes:
            items = obj.items
            if not items:
                return _EMPTY.pack(0, 0, element_oid)
            nulls = None in items
            return _HEAD.pack(1, nulls, element_oid, len(items), 1) + pack(items)

    ArrayDumper.__name__ = ArrayDumper.__qualname__ = f"{kind.__name__[1:]}Dumper"
    psycopg.adapters.register_dumper(kind, ArrayDumper)
    return ArrayDumper


# Type numbers of PostgreSQL's built-in types: int4 23, int8 20, text 25, bytea 17,
# and of arrays of them.
_dumper(_Int4s, 1007, 23, _packed_numbers(struct.Struct(">ii"), 4))
_dumper(_Int8s, 1016, 20, _packed_numbers(struct.Struct(">iq"), 8))
_dumper(_Texts, 1009, 25, _packed_texts)
_dumper(_Blobs, 1001, 17, _packed_bytes)
