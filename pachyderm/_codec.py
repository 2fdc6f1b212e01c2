"""The one msgpack codec for messages, states and ids: exact round trips, types kept.

msgpack knows none, bool, int, float, str, bytes, list and dict. Everything
else that may be stored travels as an extension type, so that what is read
back ``==`` what was written *and has the same types*: a tuple stays a tuple,
a frozenset a frozenset, an address an address. This is the only module that
imports msgpack.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from pachyderm._entity import Entity, entity_classes, validate_id
from pachyderm._values import ValueKind, value_types
from pachyderm.errors import CodecError, PachydermError, UnregisteredNameError, describe

__all__ = ["decode", "encode", "encode_canonical"]

# Extension codes are part of the storage format: never renumber them.
_TUPLE = 1
_SET = 2
_FROZENSET = 3
_ADDRESS = 4
_VALUE = 5
_BIGINT = 6


class _Encoder:
    """Reused packers, per thread: a packer is not re-entrant, and creating one
    per call (``packb``) costs three times the packing of a small value.

    Extension payloads must be packed to bytes before their header can be
    written, so the ``default`` hook packs nested values itself: each nested
    pack takes a packer from the thread's free list and puts it back after.
    """

    def __init__(self, canonical: bool) -> None:
        self.canonical = canonical
        self._local = threading.local()

    def pack(self, value: Any) -> bytes:
        try:
            free: list[msgpack.Packer] = self._local.free
        except AttributeError:
            free = self._local.free = []
        if free:
            packer = free.pop()
        else:
            packer = msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True)
        data: bytes = packer.pack(value)
        free.append(packer)  # (one whose pack raised is simply dropped: no try/finally per call)
        return data

    def default(self, value: Any) -> msgpack.ExtType:
        kind = type(value)
        if kind is tuple:
            items = [_canonical_order(v) for v in value] if self.canonical else list(value)
            return msgpack.ExtType(_TUPLE, self.pack(items))
        if kind is frozenset or kind is set:
            code = _SET if kind is set else _FROZENSET
            members = [self.pack(_canonical_order(v) if self.canonical else v) for v in value]
            if self.canonical:
                members.sort()
            # Members are already packed: join their bytes under an array header.
            return msgpack.ExtType(code, _array_header(len(members)) + b"".join(members))
        if isinstance(value, Entity):
            return msgpack.ExtType(_ADDRESS, self.pack([value.entity_name, value._id]))
        registered = kind.__dict__.get("_pachyderm_kind")
        if registered is not None:
            name = kind._pachyderm_name
            if registered is ValueKind.ENUM:
                return msgpack.ExtType(_VALUE, self.pack([name, value.value]))
            if registered is ValueKind.NAMEDTUPLE:
                fields = list(value)
            else:
                fields = [getattr(value, f.name) for f in dataclasses.fields(value)]
            _refuse_lossy(fields)
            if self.canonical:
                fields = [_canonical_order(v) for v in fields]
            return msgpack.ExtType(_VALUE, self.pack([name, fields]))
        if kind is int:  # msgpack hands over ints outside -2**63 .. 2**64-1
            size = (value.bit_length() + 8) // 8
            return msgpack.ExtType(_BIGINT, value.to_bytes(size, "big", signed=True))
        raise CodecError(_cannot_encode(value))


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes([0x90 | length])
    if length < 2**16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _cannot_encode(value: Any) -> str:
    kind = type(value)
    if isinstance(value, dict | list | str | bytes | int | float | tuple | set | frozenset):
        base = next(
            b
            for b in (bool, dict, list, str, bytes, int, float, tuple, set, frozenset)
            if isinstance(value, b)
        )
        hint = (
            f"it is a subclass of {base.__name__}, which would come back as a plain "
            f"{base.__name__}; convert it with {base.__name__}(value)"
        )
        if issubclass(kind, tuple) and hasattr(kind, "_fields"):
            hint = "register the named tuple with @pachyderm.register_value"
        elif issubclass(kind, enum.Enum):
            hint = "register the enum with @pachyderm.register_value"
    elif dataclasses.is_dataclass(value) or isinstance(value, enum.Enum):
        hint = "register its class with @pachyderm.register_value"
    elif isinstance(value, bytearray | memoryview):
        hint = "convert it to bytes first"
    else:
        hint = (
            "send plain data instead (None, bool, int, float, str, bytes, list, tuple, "
            "dict, set, frozenset, entity addresses) or a registered frozen dataclass, "
            "enum or named tuple"
        )
    return f"cannot encode {describe(value)}: {hint}"


def _canonical_order(value: Any) -> Any:
    """The same value with every dict's keys in canonical (encoded-bytes) order."""
    kind = type(value)
    if kind is dict:
        ordered = sorted(value.items(), key=lambda item: encode_canonical(item[0]))
        return {k: _canonical_order(v) for k, v in ordered}
    if kind is list:
        return [_canonical_order(v) for v in value]
    return value  # tuples, sets and values are ordered by the encoder's hook


_PLAIN_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})  # nothing to walk
_LOSSY = frozenset({bytearray, memoryview})
_CONTAINERS = frozenset({list, dict, tuple, set, frozenset})


def _refuse_lossy(value: Any) -> bool:
    """Refuse bytearray and memoryview anywhere in ``value``; say whether it holds a dict.

    msgpack packs them natively as binary, without asking the ``default``
    hook, and they would come back as bytes: a silent change of type. The
    walk only descends into containers, which is what costs; it also tells
    canonical encoding whether any dict needs its keys put in order.
    """
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) in _CONTAINERS or type(key) in _LOSSY:
                _refuse_lossy(key)
            if type(item) in _CONTAINERS or type(item) in _LOSSY:
                _refuse_lossy(item)
        return True
    has_dict = False
    if kind in _CONTAINERS:
        for item in value:
            if type(item) in _CONTAINERS or type(item) in _LOSSY:
                has_dict = _refuse_lossy(item) or has_dict
    elif kind in _LOSSY:
        raise CodecError(_cannot_encode(value))
    return has_dict


_plain = _Encoder(canonical=False)
_canonical = _Encoder(canonical=True)


def encode(value: Any) -> bytes:
    """Encode a message, state or id.

    Raises:
        CodecError: the value (or something inside it) cannot be stored; the
            message names it, its type, and what to do.
    """
    try:
        if type(value) not in _PLAIN_SCALARS:
            _refuse_lossy(value)
        return _plain.pack(value)
    except PachydermError:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise CodecError(f"cannot encode {describe(value)}: {error}") from error


def encode_canonical(value: Any) -> bytes:
    """Encode so that equal values (of equal types) give identical bytes."""
    try:
        if _refuse_lossy(value):
            value = _canonical_order(value)
        return _canonical.pack(value)
    except PachydermError:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise CodecError(f"cannot encode {describe(value)}: {error}") from error


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def _ext_hook(code: int, payload: bytes) -> Any:
    if code == _TUPLE:
        return tuple(_expect(_unpack(payload), list))
    if code == _SET:
        return set(_expect(_unpack(payload), list))
    if code == _FROZENSET:
        return frozenset(_expect(_unpack(payload), list))
    if code == _ADDRESS:
        name, entity_id = _expect(_unpack(payload), list, length=2)
        cls = entity_classes.resolve(_expect(name, str))
        validate_id(entity_id)
        address = object.__new__(cls)
        object.__setattr__(address, "_id", entity_id)
        return address
    if code == _VALUE:
        name, fields = _expect(_unpack(payload), list, length=2)
        cls = value_types.resolve(_expect(name, str))
        if cls._pachyderm_kind is ValueKind.ENUM:
            return cls(fields)
        return cls(*_expect(fields, list))
    if code == _BIGINT:
        return int.from_bytes(payload, "big", signed=True)
    raise CodecError(f"unknown extension type {code} in stored bytes")


def _expect(value: Any, kind: type, length: int | None = None) -> Any:
    if type(value) is not kind or (length is not None and len(value) != length):  # type: ignore[arg-type]
        raise CodecError(f"malformed stored bytes: expected {kind.__name__}, got {describe(value)}")
    return value


def decode(data: bytes) -> Any:
    """Decode bytes written by :func:`encode` back to an equal value of the same types.

    Raises:
        CodecError: the bytes are not a valid encoding, or name a class that
            is not registered (:class:`~pachyderm.errors.UnregisteredNameError`).
    """
    try:
        return _unpack(data)
    except PachydermError as error:
        if isinstance(error, CodecError):
            raise
        raise CodecError(f"cannot decode {describe(data)}: {error}") from error
    except Exception as error:  # msgpack raises many kinds on bad input; callers get one
        raise CodecError(
            f"cannot decode {describe(data)}: {type(error).__name__}: {error}. "
            f"The bytes were not written by this codec, or are damaged."
        ) from error


def decode_marking(data: bytes, mark: Callable[[UnregisteredNameError], Any]) -> Any:
    """Decode like :func:`decode`, but a part naming an unregistered class becomes ``mark(error)``.

    For showing stored data this process can only partly read (a dead letter
    of a class not imported here); never for data that is then stored or run.
    """

    def ext_hook(code: int, payload: bytes) -> Any:
        try:
            return _ext_hook(code, payload)
        except UnregisteredNameError as missing:
            return mark(missing)

    try:
        return msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except PachydermError:
        raise
    except Exception as error:
        raise CodecError(
            f"cannot decode {describe(data)}: {type(error).__name__}: {error}"
        ) from error
