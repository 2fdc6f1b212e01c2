"""The codec: exact round trips with types kept, canonical bytes, clear errors."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections import OrderedDict, namedtuple
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pachyderm import (
    CodecError,
    RegistrationError,
    UnregisteredNameError,
    decode,
    encode,
    encode_canonical,
    register_value,
)
from tests.entities import Counter
from tests.strategies import Colour, Pair, Point, same, values

Loose = namedtuple("Loose", "a")  # a named tuple never registered
Mood = enum.Enum("Mood", "HAPPY")  # an enum never registered


@given(values)
def test_round_trip_keeps_values_and_types(value: Any) -> None:
    """Whatever is encoded decodes to an equal value of the same types."""
    assert same(decode(encode(value)), value)


@given(values)
def test_canonical_round_trip(value: Any) -> None:
    """Canonical bytes decode to the same value too."""
    assert same(decode(encode_canonical(value)), value)


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=8), st.randoms())
def test_canonical_bytes_ignore_dict_order(mapping: dict[str, int], random: Any) -> None:
    """Equal dicts built in different orders have identical canonical bytes."""
    items = list(mapping.items())
    random.shuffle(items)
    assert encode_canonical(dict(items)) == encode_canonical(mapping)


@given(st.sets(st.integers() | st.text(max_size=4), max_size=10), st.randoms())
def test_canonical_bytes_ignore_set_order(members: set[Any], random: Any) -> None:
    """Equal sets and frozensets have identical canonical bytes, nested ones too."""
    shuffled = list(members)
    random.shuffle(shuffled)
    assert encode_canonical({"s": set(shuffled)}) == encode_canonical({"s": members})
    assert encode_canonical((frozenset(shuffled),)) == encode_canonical((frozenset(members),))


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    """Undecodable bytes raise CodecError and nothing else."""
    with contextlib.suppress(CodecError):
        decode(data)


@given(values, st.integers(min_value=0, max_value=200), st.integers(0, 255))
def test_damaged_encodings_raise_only_codec_error(value: Any, position: int, byte: int) -> None:
    """Flipping a byte of a real encoding gives a value or a CodecError, nothing else."""
    data = bytearray(encode(value))
    data[position % len(data)] = byte
    with contextlib.suppress(CodecError):
        decode(bytes(data))


def test_big_integers_round_trip() -> None:
    """Integers beyond 64 bits, which msgpack refuses, round-trip exactly."""
    for number in (2**64, 2**64 - 1, -(2**63) - 1, 10**40, -(10**40)):
        assert decode(encode(number)) == number


def test_tuple_of_tuples_stays_tuples() -> None:
    """Tuples stay tuples and lists stay lists, at every depth."""
    value: tuple[object, list[int]] = ((1, [2, (3, [4])]), [])
    assert same(decode(encode(value)), value)


def test_addresses_round_trip_to_the_registered_class() -> None:
    """An address decodes to an equal instance of its registered class."""
    address = Counter(("shard", 3, b"\x00"))
    back = decode(encode(address))
    assert back == address
    assert type(back) is Counter


def test_registered_value_types_round_trip() -> None:
    """Registered frozen dataclasses, enums and named tuples come back as themselves."""
    value = [Point(1, Colour.RED), Pair(Colour.GREEN, (Point(2, None),))]
    back = decode(encode(value))
    assert back == value
    assert type(back[1]) is Pair
    assert type(back[0].y) is Colour


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (object(), "send plain data instead"),
        (OrderedDict(a=1), "subclass of dict"),
        (bytearray(b"x"), "convert it to bytes first"),
        ([1, {"deep": memoryview(b"x")}], "convert it to bytes first"),
        (Loose(1), "register the named tuple"),
        (Mood.HAPPY, "register its class with @pachyderm.register_value"),
    ],
)
def test_unencodable_values_are_named_with_a_hint(value: Any, hint: str) -> None:
    """Encoding an unsupported value raises CodecError naming it, its type and what to do."""
    with pytest.raises(CodecError) as caught:
        encode(value)
    assert hint in str(caught.value)
    assert "cannot encode" in str(caught.value)


def test_unregistered_dataclass_is_refused() -> None:
    """A dataclass that was not registered is refused with the way to register it."""

    @dataclasses.dataclass(frozen=True)
    class Loose:
        a: int

    with pytest.raises(CodecError, match="register_value"):
        encode(Loose(1))


def test_non_frozen_dataclass_cannot_be_registered() -> None:
    """Registering a mutable dataclass is refused: messages must not change after sending."""

    @dataclasses.dataclass
    class Mutable:
        a: int

    with pytest.raises(RegistrationError, match="frozen=True"):
        register_value(Mutable)


def test_unregistered_name_in_bytes_names_it() -> None:
    """Bytes naming an unregistered value type raise UnregisteredNameError with the name."""

    @register_value(name="tests.Vanishing")
    @dataclasses.dataclass(frozen=True)
    class Vanishing:
        a: int

    data = encode(Vanishing(1)).replace(b"tests.Vanishing", b"tests.Vanished!")
    with pytest.raises(UnregisteredNameError, match=r"'tests\.Vanished!'") as caught:
        decode(data)
    assert caught.value.name == "tests.Vanished!"
    assert isinstance(caught.value, CodecError)
