"""Standard-library values the codec stores, taken apart into plain parts and rebuilt.

``datetime`` (naive, or aware with a ``datetime.timezone`` or a
``zoneinfo.ZoneInfo``), ``date``, ``time``, ``timedelta``, ``Decimal`` and
``UUID``. Parts are ints, strs, bytes, None and lists, so they encode the same
in plain and canonical mode; rebuilding checks them, since they come from disk.
Values that are ``==`` but can be told apart (one instant in two zones,
``Decimal("1.0")`` and ``Decimal("1.00")``) keep their own bytes, as 1 and 1.0 do.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from pachyderm.errors import CodecError, describe

__all__ = ["FROM_PARTS", "TO_PARTS"]

_MICROSECOND = dt.timedelta(microseconds=1)


def _tz_parts(tz: dt.tzinfo | None, value: Any) -> Any:
    """None (naive), a zone key (ZoneInfo), or an offset in µs, with its name if it has one."""
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset, *name = tz.__getinitargs__()  # type: ignore[attr-defined]
        micros = offset // _MICROSECOND
        return [micros, name[0]] if name else micros
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return tz.key
    raise CodecError(
        f"cannot encode {describe(value)}: its tzinfo {tz!r} (a {type(tz).__qualname__}) "
        f"cannot be stored by name. Use a datetime.timezone (fixed offset) or a "
        f"zoneinfo.ZoneInfo made from a key, e.g. value.astimezone(ZoneInfo('Europe/Paris'))"
        f" or value.astimezone(datetime.timezone.utc)"
    )


def _tz_from_parts(parts: Any) -> dt.tzinfo | None:
    if parts is None:
        return None
    if type(parts) is str:
        try:
            return zoneinfo.ZoneInfo(parts)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise CodecError(
                f"stored data names the time zone {parts!r}, which this machine does not "
                f"know ({error}). Install the tzdata package."
            ) from error
    if type(parts) is int:
        return dt.timezone(parts * _MICROSECOND)
    micros, name = parts
    return dt.timezone(micros * _MICROSECOND, name)


def _datetime_parts(value: dt.datetime) -> list[Any]:
    v = value
    tz = _tz_parts(v.tzinfo, v)
    return [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, tz]


def _datetime_from_parts(parts: Any) -> dt.datetime:
    year, month, day, hour, minute, second, microsecond, fold, tz = parts
    tzinfo = _tz_from_parts(tz)
    return dt.datetime(year, month, day, hour, minute, second, microsecond, tzinfo, fold=fold)


def _date_parts(value: dt.date) -> list[int]:
    return [value.year, value.month, value.day]


def _date_from_parts(parts: Any) -> dt.date:
    return dt.date(*parts)


def _time_parts(value: dt.time) -> list[Any]:
    v = value
    return [v.hour, v.minute, v.second, v.microsecond, v.fold, _tz_parts(v.tzinfo, v)]


def _time_from_parts(parts: Any) -> dt.time:
    hour, minute, second, microsecond, fold, tz = parts
    return dt.time(hour, minute, second, microsecond, _tz_from_parts(tz), fold=fold)


def _timedelta_parts(value: dt.timedelta) -> list[int]:
    return [value.days, value.seconds, value.microseconds]


def _timedelta_from_parts(parts: Any) -> dt.timedelta:
    days, seconds, microseconds = parts
    return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _decimal_from_parts(parts: Any) -> Decimal:
    if type(parts) is not str:
        raise TypeError(f"expected the digits of a Decimal as str, got {describe(parts)}")
    try:
        return Decimal(parts)  # exact: construction from a string ignores the context
    except InvalidOperation:
        raise ValueError(f"{parts!r} is not a Decimal") from None


def _uuid_from_parts(parts: Any) -> uuid.UUID:
    if type(parts) is not bytes:
        raise TypeError(f"expected the 16 bytes of a UUID, got {describe(parts)}")
    return uuid.UUID(bytes=parts)


TO_PARTS: dict[type, Callable[[Any], Any]] = {
    dt.datetime: _datetime_parts,
    dt.date: _date_parts,
    dt.time: _time_parts,
    dt.timedelta: _timedelta_parts,
    Decimal: str,  # str() of a Decimal keeps every digit, the exponent, NaN and Infinity
    uuid.UUID: lambda value: value.bytes,
}
"""For each exact type (subclasses are refused): the plain parts of a value."""

FROM_PARTS: dict[type, Callable[[Any], Any]] = {
    dt.datetime: _datetime_from_parts,
    dt.date: _date_from_parts,
    dt.time: _time_from_parts,
    dt.timedelta: _timedelta_from_parts,
    Decimal: _decimal_from_parts,
    uuid.UUID: _uuid_from_parts,
}
"""For each type: the value rebuilt from its parts; raises on malformed parts."""
