"""Standard-library values: datetime, date, time, timedelta, Decimal and UUID keep their types."""

from __future__ import annotations

import datetime as dt
import io
import uuid
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given

from ecosystems import LocalDisk
from pachyderm import CodecError, decode, encode, encode_canonical
from tests.entities import Keeper
from tests.strategies import same, stdlib_values

PARIS = ZoneInfo("Europe/Paris")
PLUS_2 = dt.timezone(dt.timedelta(hours=2))
NAMED = dt.timezone(dt.timedelta(hours=-3, minutes=-30, microseconds=-7), "NST-ish")

EXAMPLES: list[Any] = [
    dt.datetime(2026, 11, 29, 10, 30, 5, 123456),
    dt.datetime(2026, 11, 29, 10, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 29, 10, 30, tzinfo=PLUS_2),
    dt.datetime(2026, 11, 29, 10, 30, tzinfo=NAMED),
    dt.datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1),  # the second 02:30 that night
    dt.datetime.min,
    dt.datetime.max,
    dt.date(2026, 2, 28),
    dt.date.min,
    dt.time(23, 59, 59, 999999),
    dt.time(8, 0, tzinfo=PLUS_2),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    Decimal("10.50"),
    Decimal("-0"),
    Decimal("1.0E+3"),
    Decimal("3.14159265358979323846264338327950288419716939937510582097494459"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Decimal("NaN"),
    Decimal("-sNaN12"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.UUID(int=2**128 - 1),
]


@pytest.mark.parametrize("value", EXAMPLES, ids=repr)
def test_round_trip_keeps_type_and_every_detail(value: Any) -> None:
    """Each value comes back of the same type, with the same repr (digits, zone, fold)."""
    for encoder in (encode, encode_canonical):
        back = decode(encoder(value))
        assert type(back) is type(value)
        assert repr(back) == repr(value)
        if isinstance(value, dt.datetime | dt.time):
            assert back.fold == value.fold
            assert back.tzinfo == value.tzinfo


async def test_they_survive_reopening_a_store(tmp_path: Path) -> None:
    """Stored in a LocalDisk state, inside containers and as dict keys, they read back exact."""
    state = {"examples": EXAMPLES, dt.date(2026, 1, 1): (Decimal("0.10"), frozenset(EXAMPLES[:3]))}
    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.send_sync(Keeper("k"), state)
    async with LocalDisk.open(str(tmp_path)) as eco:
        back = await eco.state_of(Keeper("k"))
    assert [type(v) for v in back["examples"]] == [type(v) for v in EXAMPLES]
    assert [repr(v) for v in back["examples"]] == [repr(v) for v in EXAMPLES]
    assert back[dt.date(2026, 1, 1)] == (Decimal("0.10"), frozenset(EXAMPLES[:3]))


def test_aware_and_naive_datetimes_stay_apart() -> None:
    """A naive and an aware datetime never come back equal, nor with each other's tzinfo."""
    naive = dt.datetime(2026, 1, 1, 12)
    aware = naive.replace(tzinfo=dt.UTC)
    naive_back, aware_back = decode(encode([naive, aware]))
    assert naive_back.tzinfo is None
    assert aware_back.tzinfo is dt.UTC
    assert naive_back != aware_back


def test_a_zone_is_kept_by_its_key() -> None:
    """A datetime in a ZoneInfo zone comes back in that very zone, not as a fixed offset."""
    value = dt.datetime(2026, 7, 1, 9, tzinfo=PARIS)
    back = decode(encode(value))
    assert back.tzinfo is PARIS
    assert back.utcoffset() == dt.timedelta(hours=2)
    assert back + dt.timedelta(days=180) == dt.datetime(2026, 12, 28, 9, tzinfo=PARIS)


def test_canonical_bytes_of_equal_values_are_equal() -> None:
    """Equal values built separately encode to identical canonical bytes."""
    for make in (
        lambda: {dt.date(2026, 1, 2): Decimal("1.5"), uuid.UUID(int=7): dt.timedelta(1)},
        lambda: {dt.datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Paris")), dt.time(1)},
    ):
        assert encode_canonical(make()) == encode_canonical(make())


def test_fixed_offsets_and_uncached_zones_are_kept() -> None:
    """astimezone()'s fixed offset, and a ZoneInfo made with no_cache, are stored too."""
    for value in (
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC).astimezone(),
        dt.datetime(2026, 1, 1, tzinfo=ZoneInfo.no_cache("Europe/Paris")),
    ):
        assert repr(decode(encode(value))) == repr(value)


def keyless_zone() -> dt.tzinfo:
    """A ZoneInfo read from a file: it has no key to be stored by."""
    for root in zoneinfo.TZPATH:
        path = Path(root) / "Europe" / "Paris"
        if path.exists():
            return zoneinfo.ZoneInfo.from_file(io.BytesIO(path.read_bytes()))
    pytest.skip("no tz database files on this machine")


class Hourly(dt.tzinfo):
    """A tzinfo of its own, which cannot be stored by name."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "Hourly"


class Stamp(dt.datetime):
    """A datetime subclass, which would come back as a plain datetime."""


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (dt.datetime(2026, 1, 1, tzinfo=Hourly()), "Use a datetime.timezone"),
        (dt.time(1, tzinfo=Hourly()), "Use a datetime.timezone"),
        (Stamp(2026, 1, 1), "subclass of datetime.datetime"),
        (lambda: dt.datetime(2026, 1, 1, tzinfo=keyless_zone()), "made from a key"),
    ],
)
def test_what_cannot_be_stored_is_refused(value: Any, hint: str) -> None:
    """Arbitrary tzinfo classes, keyless zones and subclasses are refused with CodecError."""
    if callable(value):
        value = value()
    with pytest.raises(CodecError, match=hint) as caught:
        encode(value)
    assert "cannot encode" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "parts"),
    [
        (8, b"\x93\x01\x02\x03"),  # a datetime of three parts
        (9, b"\x93\xcd\x07\xea\x02\x1e"),  # 30 February
        (12, b"\xa3abc"),  # not a Decimal
        (13, b"\xc4\x03abc"),  # not 16 bytes
        (8, b"\x99\xcd\x07\xea\x01\x01\x00\x00\x00\x00\x00\xa7Nowhere"),  # an unknown zone
    ],
)
def test_malformed_stored_parts_raise_codec_error(code: int, parts: bytes) -> None:
    """Damaged bytes of these types raise CodecError, never another exception."""
    data = bytes([0xC7, len(parts), code]) + parts
    with pytest.raises(CodecError):
        decode(data)


@given(stdlib_values)
def test_stdlib_values_round_trip(value: Any) -> None:
    """Generated datetimes, dates, times, timedeltas, Decimals and UUIDs round-trip exactly."""
    assert same(decode(encode(value)), value)
    assert same(decode(encode_canonical(value)), value)
