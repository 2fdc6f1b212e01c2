"""The one msgpack codec for messages, states and ids: exact round trips, types kept.

msgpack knows none, bool, int, float, str, bytes, list and dict. Everything
else that may be stored travels as an extension type, so that what is read
back ``==`` what was written *and has the same types*: a tuple stays a tuple,
a frozenset a frozenset, an address an address. This is the only module that
imports msgpack.

Values nest at most :data:`MAX_DEPTH` containers deep. Each extension level
costs msgpack's C decoder about 42 KB of C stack (measured: nested tuples
overflow an 8 MB stack at 191 levels and the process segfaults), so deeper
values, and values that contain themselves, are refused when encoded, and
bytes nesting deeper are refused when decoded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import reprlib
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgpack

from pachyderm._entity import Entity, entity_classes, validate_id
from pachyderm._stdlib_values import FROM_PARTS, TO_PARTS
from pachyderm._values import ValueKind, required_fields, value_types
from pachyderm.errors import CodecError, PachydermError, UnregisteredNameError, describe

__all__ = ["MAX_DEPTH", "decode", "decode_marking", "encode", "encode_canonical"]

MAX_DEPTH = 100
"""How many containers deep a value may nest; half of where decoding would crash."""

# Extension codes are part of the storage format: never renumber them.
_TUPLE = 1
_SET = 2
_FROZENSET = 3
_ADDRESS = 4
_VALUE = 5  # enums: [name, value]; dataclasses and named tuples before _FIELDS: [name, [fields]]
_BIGINT = 6
_FIELDS = 7  # dataclasses and named tuples: [name, version, {field name: value}]
_STDLIB_CODES = {
    dt.datetime: 8,
    dt.date: 9,
    dt.time: 10,
    dt.timedelta: 11,
    Decimal: 12,
    uuid.UUID: 13,
}
_STDLIB_TYPES = {code: kind for kind, code in _STDLIB_CODES.items()}


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
        if registered is not None:  # (the walk has checked what is inside)
            name = kind._pachyderm_name
            if registered is ValueKind.ENUM:
                return msgpack.ExtType(_VALUE, self.pack([name, value.value]))
            # By name, so that reordering or adding fields cannot mix values up.
            fields = {field: getattr(value, field) for field in kind._pachyderm_fields}
            if self.canonical:  # (declaration order is canonical: one class, one order)
                fields = {field: _canonical_order(v) for field, v in fields.items()}
            return msgpack.ExtType(_FIELDS, self.pack([name, kind._pachyderm_version, fields]))
        if kind is int:  # msgpack hands over ints outside -2**63 .. 2**64-1
            size = (value.bit_length() + 8) // 8
            return msgpack.ExtType(_BIGINT, value.to_bytes(size, "big", signed=True))
        stdlib_code = _STDLIB_CODES.get(kind)
        if stdlib_code is not None:
            return msgpack.ExtType(stdlib_code, self.pack(TO_PARTS[kind](value)))
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
    elif isinstance(value, tuple(TO_PARTS)):
        stdlib = next(b for b in TO_PARTS if isinstance(value, b))
        hint = (
            f"it is a subclass of {stdlib.__module__}.{stdlib.__qualname__}, which would "
            f"come back as a plain {stdlib.__qualname__}; convert it to one"
        )
    elif dataclasses.is_dataclass(value) or isinstance(value, enum.Enum):
        hint = "register its class with @pachyderm.register_value"
    elif isinstance(value, bytearray | memoryview):
        hint = "convert it to bytes first"
    else:
        hint = (
            "send plain data instead (None, bool, int, float, str, bytes, list, tuple, "
            "dict, set, frozenset, entity addresses, datetime, date, time, timedelta, "
            "Decimal, UUID) or a registered frozen dataclass, enum or named tuple"
        )
    return f"cannot encode {describe(value)}: {hint}"


_SHALLOW_REPR = reprlib.Repr()
_SHALLOW_REPR.maxlevel = 4


def _too_deep(value: Any) -> str:
    # reprlib: a plain repr of a value this deep would itself raise RecursionError.
    text = _SHALLOW_REPR.repr(value)
    return (
        f"cannot encode {text} (a {type(value).__module__}.{type(value).__qualname__}): "
        f"it nests containers more than {MAX_DEPTH} levels deep, or contains itself. "
        f"Values read back must be decodable, so store deep structures flattened "
        f"(e.g. a dict of nodes by id), and never a container inside itself."
    )


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
# What the walk descends into: containers, lossy types, and (added as they are
# registered) value types and entity classes, whose fields and ids nest too.
_WALKED: set[type] = set(_CONTAINERS | _LOSSY)


def _walk_value_type(names: tuple[str, ...], replaced: bool) -> None:
    _WALKED.add(value_types.resolve(names[0]))


def _walk_entity_class(names: tuple[str, ...], replaced: bool) -> None:
    _WALKED.add(entity_classes.resolve(names[0]))


value_types.subscribe(_walk_value_type)
entity_classes.subscribe(_walk_entity_class)


class _TooDeep(Exception):
    """The walk went deeper than MAX_DEPTH; the caller names the whole value."""


def _refuse_unreadable(value: Any, depth: int = 1) -> bool:
    """Refuse bytearray, memoryview and nesting deeper than MAX_DEPTH; say whether a dict is in.

    msgpack packs bytearray and memoryview natively as binary, without asking
    the ``default`` hook, and they would come back as bytes: a silent change
    of type. Depth is counted here, the only walk, so that every value
    accepted decodes without overflowing the C stack. The walk only descends
    into containers, values and addresses, which is what costs; it also tells
    canonical encoding whether any dict (outside values, which the hook
    orders) needs its keys put in order.
    """
    if depth > MAX_DEPTH:
        raise _TooDeep
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) in _WALKED:
                _refuse_unreadable(key, depth + 1)
            if type(item) in _WALKED:
                _refuse_unreadable(item, depth + 1)
        return True
    has_dict = False
    if kind in _CONTAINERS:
        for item in value:
            if type(item) in _WALKED:
                has_dict = _refuse_unreadable(item, depth + 1) or has_dict
    elif kind in _LOSSY:
        raise CodecError(_cannot_encode(value))
    elif kind in _WALKED:
        _walk_parts(value, depth + 1)
    return has_dict


def _walk_parts(value: Any, depth: int) -> None:
    """Walk the fields of a registered value, or the id of an address."""
    if isinstance(value, Entity):
        if type(value._id) is tuple:
            _refuse_unreadable(value._id, depth)
        return
    if type(value)._pachyderm_kind is ValueKind.ENUM:
        parts = [value.value]
    else:
        parts = [getattr(value, field) for field in type(value)._pachyderm_fields]
    for part in parts:
        if type(part) in _WALKED:
            _refuse_unreadable(part, depth)


_plain = _Encoder(canonical=False)
_canonical = _Encoder(canonical=True)


class _ScalarPacker(threading.local):
    """Per thread, one packer for plain scalars, used without the free list.

    It has no ``default`` hook: packing a lone scalar calls back into no code
    of ours, so nothing can pack into it halfway, and one packer per thread
    serves every scalar. (An int beyond msgpack's range raises OverflowError
    before anything is packed; the plain packer's hook then packs it.) Most
    messages and states are scalars; this saves a third of their encoding.
    """

    def __init__(self) -> None:
        self.packer = msgpack.Packer(strict_types=True, use_bin_type=True)


_scalar = _ScalarPacker()


def encode(value: Any) -> bytes:
    """Encode a message, state or id.

    Raises:
        CodecError: the value (or something inside it) cannot be stored; the
            message names it, its type, and what to do.
    """
    try:
        if type(value) in _PLAIN_SCALARS:
            try:
                data: bytes = _scalar.packer.pack(value)
                return data
            except OverflowError:  # an int beyond 64 bits: the hook packs it, below
                pass
        else:
            _refuse_unreadable(value)
        return _plain.pack(value)
    except PachydermError:
        raise
    except _TooDeep:
        raise CodecError(_too_deep(value)) from None
    except (TypeError, ValueError, OverflowError) as error:
        raise CodecError(_encoding_failed(value, error)) from error


def _encoding_failed(value: Any, error: Exception) -> str:
    text = f"cannot encode {describe(value)}: {error}"
    if isinstance(error, UnicodeEncodeError):  # a lone surrogate, in a str somewhere in it
        text += (
            "; a str holding a lone surrogate comes from text decoded with "
            "errors='surrogateescape' (a file name that is not UTF-8, say): decode it "
            "properly, or send the bytes"
        )
    return text


def encode_canonical(value: Any) -> bytes:
    """Encode so that equal values (of equal types) give identical bytes."""
    try:
        if _refuse_unreadable(value):
            value = _canonical_order(value)
        return _canonical.pack(value)
    except PachydermError:
        raise
    except _TooDeep:
        raise CodecError(_too_deep(value)) from None
    except (TypeError, ValueError, OverflowError) as error:
        raise CodecError(_encoding_failed(value, error)) from error


def _unpack(data: bytes, depth: int) -> Any:
    """Unpack the payload of an extension value nested ``depth`` levels deep."""
    return msgpack.unpackb(data, ext_hook=_HOOKS[depth], raw=False, strict_map_key=False)


_LEAVES = frozenset({_BIGINT, *_STDLIB_TYPES})
"""Extension values that hold no values of the codec's, only plain parts.

The walk does not count them: one sits one level below the deepest container
the walk allows, so the decoder accepts them one level deeper than containers.
"""


def _ext_hook(depth: int, code: int, payload: bytes) -> Any:
    # Each level is a C call of msgpack's: refuse before the stack ends.
    if depth > MAX_DEPTH and (depth > MAX_DEPTH + 1 or code not in _LEAVES):
        raise CodecError(
            f"stored bytes nest values more than {MAX_DEPTH} levels deep, deeper than "
            f"this codec writes or can read safely; they were damaged or written by hand"
        )
    if code == _TUPLE:
        return tuple(_expect(_unpack(payload, depth), list))
    if code == _SET:
        return set(_expect(_unpack(payload, depth), list))
    if code == _FROZENSET:
        return frozenset(_expect(_unpack(payload, depth), list))
    if code == _ADDRESS:
        name, entity_id = _expect(_unpack(payload, depth), list, length=2)
        cls = entity_classes.resolve(_expect(name, str))
        validate_id(entity_id)
        address = object.__new__(cls)
        object.__setattr__(address, "_id", entity_id)
        return address
    if code == _FIELDS:
        name, version, fields = _expect(_unpack(payload, depth), list, length=3)
        cls = value_types.resolve(_expect(name, str))
        if version == cls._pachyderm_version and type(fields) is dict:  # (enums: None)
            try:
                return cls(**fields)  # the common case: stored by today's version
            except Exception:  # _rebuild tries again and says why
                pass
        if cls._pachyderm_kind is ValueKind.ENUM:
            raise CodecError(f"malformed stored bytes: fields stored for the enum {name!r}")
        return _rebuild(cls, _expect(version, int), _expect(fields, dict))
    if code == _VALUE:
        name, fields = _expect(_unpack(payload, depth), list, length=2)
        cls = value_types.resolve(_expect(name, str))
        if cls._pachyderm_kind is ValueKind.ENUM:
            try:
                return cls(fields)
            except ValueError:
                raise CodecError(
                    f"stored data holds the value {describe(fields)} of the enum {name!r} "
                    f"({cls.__qualname__}), which has no member of that value now: a member "
                    f"was removed or its value changed since it was stored. Give it back "
                    f"(an alias is enough: OLD = NEW.value)."
                ) from None
        # Written before fields were stored by name: by position, as version 1.
        names = cls._pachyderm_fields
        if len(_expect(fields, list)) > len(names):
            raise CodecError(
                f"cannot rebuild a {_class_name(cls)} from {len(fields)} fields stored "
                f"by position ({describe(fields)}): it has {len(names)} {names!r}"
            )
        return _rebuild(cls, 1, dict(zip(names, fields, strict=False)))
    if code == _BIGINT:
        return int.from_bytes(payload, "big", signed=True)
    kind = _STDLIB_TYPES.get(code)
    if kind is not None:
        parts = _unpack(payload, depth)
        try:
            return FROM_PARTS[kind](parts)
        except PachydermError:
            raise
        except Exception as error:
            raise CodecError(
                f"malformed stored {kind.__qualname__}: {describe(parts)} ({error})"
            ) from error
    raise CodecError(f"unknown extension type {code} in stored bytes")


_HOOKS = [functools.partial(_ext_hook, depth) for depth in range(1, MAX_DEPTH + 3)]
"""The extension hook for each depth (index 0: the outermost values)."""
_OUTER_HOOK = _HOOKS[0]


def _class_name(cls: type) -> str:
    return f"{cls.__qualname__} (value type {cls._pachyderm_name!r})"  # type: ignore[attr-defined]


def _rebuild(cls: Any, version: int, fields: dict[Any, Any]) -> Any:
    """A registered dataclass or named tuple from its fields stored by ``version`` of it."""
    if version != cls._pachyderm_version:
        if version > cls._pachyderm_version:
            raise CodecError(
                f"a {_class_name(cls)} was stored by version {version} of it, newer than "
                f"this process's version {cls._pachyderm_version}; run the newer code"
            )
        upgrade = getattr(cls, "upgrade", None)
        if upgrade is not None:  # without one, defaults fill in what version adds
            try:
                fields = upgrade(dict(fields), version)
            except Exception as error:
                raise CodecError(
                    f"{cls.__qualname__}.upgrade(fields, {version}) failed on "
                    f"{describe(fields)}: {type(error).__name__}: {error}"
                ) from error
            if type(fields) is not dict:
                raise CodecError(
                    f"{cls.__qualname__}.upgrade(fields, {version}) must return the fields "
                    f"as a dict of field name to value, got {describe(fields)}"
                )
    try:
        return cls(**fields)
    except Exception as error:
        raise CodecError(_mismatch(cls, version, fields, error)) from error


def _mismatch(cls: Any, version: int, fields: dict[Any, Any], error: Exception) -> str:
    """Say why stored fields do not make a value of today's class."""
    missing = [name for name in required_fields(cls) if name not in fields]
    unknown = [name for name in fields if name not in cls._pachyderm_fields]
    problems = []
    if missing:
        problems.append(f"missing fields {missing} (they have no default)")
    if unknown:
        problems.append(f"unknown fields {unknown} (renamed or removed since)")
    if not problems:
        problems.append(f"{cls.__qualname__}(**fields) raised {type(error).__name__}: {error}")
    return (
        f"cannot rebuild a {_class_name(cls)} from fields stored by version {version} "
        f"of it ({describe(fields)}): {'; '.join(problems)}. Give new fields a default, "
        f"or raise {cls.__qualname__}.version (now {cls._pachyderm_version}) and "
        f"convert the fields in a staticmethod upgrade(fields, from_version)."
    )


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
        return msgpack.unpackb(data, ext_hook=_OUTER_HOOK, raw=False, strict_map_key=False)
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
            return _OUTER_HOOK(code, payload)
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
