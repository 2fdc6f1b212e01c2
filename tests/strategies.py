"""Hypothesis strategies shared by the suite: the values Pachyderm stores."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from pachyderm import register_value
from tests.entities import Counter, Keeper


@register_value(name="tests.Point")
@dataclass(frozen=True)
class Point:
    x: int
    y: Any


@register_value(name="tests.Colour")
class Colour(enum.Enum):
    RED = "red"
    GREEN = 2


@register_value(name="tests.Pair")
class Pair(NamedTuple):
    left: Any
    right: Any


ids = st.recursive(
    st.text(max_size=8) | st.integers() | st.binary(max_size=8),
    lambda children: st.tuples(children) | st.tuples(children, children),
    max_leaves=4,
)
"""Valid entity ids: str, int, bytes, and tuples of those."""

addresses = st.builds(Counter, ids) | st.builds(Keeper, ids)

zones = (
    st.none()
    | st.just(dt.UTC)
    | st.builds(
        dt.timezone,
        st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
    )
    | st.sampled_from(["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kolkata"]).map(ZoneInfo)
)
"""Naive (None), fixed offsets, and named zones."""


def _stdlib(*, allow_nan: bool) -> st.SearchStrategy[Any]:
    return (
        st.datetimes(timezones=zones, allow_imaginary=False)
        | st.dates()
        | st.times(timezones=st.none() | st.just(dt.UTC))
        | st.timedeltas()
        | st.decimals(allow_nan=allow_nan)
        | st.uuids()
    )


stdlib_values = _stdlib(allow_nan=True)
"""The standard-library values the codec keeps: datetime, date, time, timedelta, Decimal, UUID."""

hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | addresses
    | st.sampled_from(Colour)
    | _stdlib(allow_nan=False),  # (a NaN is no key: it never equals itself, sNaN cannot hash)
    lambda children: (
        st.lists(children, max_size=3).map(tuple) | st.frozensets(children, max_size=3)
    ),
    max_leaves=6,
)
"""Values that can be dict keys and set members."""

values = st.recursive(
    hashables,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(hashables, children, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.builds(Point, st.integers(), children)
        | st.builds(Pair, children, children)
    ),
    max_leaves=20,
)
"""Messages and states: everything the codec promises to round-trip exactly."""


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``==`` alone ignores types)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        pairs = dict(zip(map(_key, a), a.values(), strict=True))
        return all(_key(k) in pairs and same(pairs[_key(k)], v) for k, v in b.items())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):  # pairwise: keys made of reprs grow exponentially
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, Point):
        return same(a.x, b.x) and same(a.y, b.y)
    if isinstance(a, dt.datetime | dt.time | Decimal):  # == ignores zones, folds and digits
        return repr(a) == repr(b) and getattr(a, "fold", 0) == getattr(b, "fold", 0)
    return bool(a == b)


def _key(value: Any) -> Any:
    """A hashable stand-in that tells types apart (1, 1.0 and True differ)."""
    if isinstance(value, tuple | frozenset | list):
        inner = (
            tuple(sorted(map(repr, map(_key, value))))
            if isinstance(value, frozenset)
            else tuple(map(_key, value))
        )
        return (type(value).__name__, inner)
    return (type(value).__name__, value)
