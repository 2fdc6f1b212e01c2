"""The codec: exact round trips with types kept, canonical bytes, clear errors."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import subprocess
import sys
import textwrap
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecosystems import LocalDisk
from pachyderm import (
    ActivationError,
    CodecError,
    Entity,
    InvalidIdError,
    Outbox,
    RegistrationError,
    UnregisteredNameError,
    decode,
    encode,
    encode_canonical,
    register_value,
)
from pachyderm._codec import MAX_DEPTH
from pachyderm._entity import MAX_ID_DEPTH
from tests.entities import Counter, Keeper
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


# Nesting depth: every value accepted must decode without overflowing the C stack.

ROOT = Path(__file__).resolve().parent.parent


@register_value(name="tests.Box")
@dataclasses.dataclass(frozen=True)
class Box:
    inside: Any


class Wrapper(Entity[Any, Any]):
    """Its state is the message it received, wrapped in one more tuple."""

    def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
        return [], (message,)


NESTINGS: dict[str, Callable[[Any], Any]] = {
    "list": lambda inner: [inner],
    "tuple": lambda inner: (inner,),
    "dict": lambda inner: {"k": inner},
    "frozenset": lambda inner: frozenset({inner}),
    "set": lambda inner: frozenset({inner}),  # (the outermost made a set by nested())
    "dataclass": Box,
    "named tuple": lambda inner: Pair(inner, None),
    "mixed": lambda inner: (frozenset({Box((inner,))}),),
}


def nested(kind: str, depth: int) -> Any:
    """A value ``depth`` containers deep, of one kind of container (or of all of them)."""
    value: Any = 0
    wrap = NESTINGS[kind]
    for _ in range(depth // 4 if kind == "mixed" else depth):
        value = wrap(value)
    return set(value) if kind == "set" else value


@pytest.mark.parametrize("kind", sorted(NESTINGS))
async def test_too_deep_values_are_refused_before_anything_is_stored(
    kind: str, tmp_path: Path
) -> None:
    """A value nested deeper than MAX_DEPTH is refused by send and send_sync; nothing is stored."""
    deep = nested(kind, 200)
    async with LocalDisk.open(str(tmp_path)) as eco:
        with pytest.raises(CodecError, match=f"more than {MAX_DEPTH} levels deep"):
            await eco.send(Keeper("k"), deep)
        with pytest.raises(CodecError, match=f"more than {MAX_DEPTH} levels deep"):
            await eco.send_sync(Keeper("k"), deep)
        await eco.settle()
        assert await eco.state_of(Keeper("k")) is None
    async with LocalDisk.open(str(tmp_path)) as eco:  # nothing waits in an inbox
        await eco.settle()
        assert await eco.state_of(Keeper("k")) is None
        assert await eco.send_sync(Keeper("k"), "after") == "after"


@pytest.mark.parametrize("kind", sorted(NESTINGS))
async def test_values_at_the_depth_limit_are_stored_and_read_back(
    kind: str, tmp_path: Path
) -> None:
    """A value exactly MAX_DEPTH deep is accepted, stored, and read back after reopening."""
    deepest = nested(kind, MAX_DEPTH)
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert same(await eco.send_sync(Keeper("k"), deepest), deepest)
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert same(await eco.state_of(Keeper("k")), deepest)


async def test_deep_ids_are_refused_when_the_address_is_made(tmp_path: Path) -> None:
    """An id nesting tuples deeper than MAX_ID_DEPTH raises InvalidIdError; the store goes on."""
    with pytest.raises(InvalidIdError, match=f"at most {MAX_ID_DEPTH} deep"):
        Keeper(nested("tuple", MAX_ID_DEPTH + 1))
    with pytest.raises(InvalidIdError, match=f"at most {MAX_ID_DEPTH} deep"):
        Keeper(nested("tuple", 10_000))
    deepest = Keeper(nested("tuple", MAX_ID_DEPTH))
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.send_sync(deepest, "x") == "x"
        assert await eco.send_sync(Keeper("k"), [[[[deepest]]]]) == [[[[deepest]]]]
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(deepest) == "x"
        assert await eco.state_of(Keeper("k")) == [[[[deepest]]]]


async def test_a_state_too_deep_to_read_back_fails_the_activation(tmp_path: Path) -> None:
    """A new state nested too deep is an invalid activation: the entity keeps its state."""
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.send_sync(Wrapper("w"), 1) == (1,)
        with pytest.raises(ActivationError, match="levels deep"):
            await eco.send_sync(Wrapper("w"), nested("tuple", MAX_DEPTH))
        assert await eco.state_of(Wrapper("w")) == (1,)
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Wrapper("w")) == (1,)


def test_self_referencing_values_are_refused() -> None:
    """A container inside itself raises CodecError (not RecursionError), in both modes."""
    looped: list[Any] = [1]
    looped.append(looped)
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping
    boxed = Box([])
    boxed.inside.append(boxed)
    for value in (looped, mapping, boxed, (looped,)):
        for encoder in (encode, encode_canonical):
            with pytest.raises(CodecError, match="or contains itself"):
                encoder(value)


def test_a_thousand_deep_list_is_refused() -> None:
    """Lists nested 1,000 or 100,000 deep raise CodecError naming the depth, not RecursionError."""
    for depth in (1_000, 100_000):
        with pytest.raises(CodecError, match=f"more than {MAX_DEPTH} levels deep"):
            encode(nested("list", depth))


def test_decoding_over_deep_bytes_raises_and_does_not_crash() -> None:
    """Hand-made bytes nesting 1,000 extension values raise CodecError, in a thread too."""
    code = """
        import threading
        from pachyderm import CodecError, decode, encode
        from tests.test_codec import MAX_DEPTH, NESTINGS, nested

        def ext(code, payload):  # a msgpack ext 32 header, as the codec writes them
            return bytes([0xC9]) + len(payload).to_bytes(4, "big") + bytes([code]) + payload

        def deep_bytes(code, depth):
            data = b"\\x00"
            for _ in range(depth):
                data = ext(code, b"\\x91" + data)  # a one-item array holding the level below
            return data

        def check():
            for code in (1, 2, 3):  # tuple, set, frozenset
                for depth in (MAX_DEPTH + 1, 250, 1000):
                    try:
                        decode(deep_bytes(code, depth))
                    except CodecError as error:
                        assert "levels deep" in str(error), error
                    else:
                        raise AssertionError(f"decoded {depth} levels")
            for kind in NESTINGS:  # and everything accepted decodes
                value = nested(kind, MAX_DEPTH)
                assert decode(encode(value)) == value
            print("survived")

        check()
        thread = threading.Thread(target=check)
        thread.start()
        thread.join()
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split() == ["survived", "survived"]
