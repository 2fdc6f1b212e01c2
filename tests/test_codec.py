"""The codec: exact round trips with types kept, canonical bytes, clear errors."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import os
import subprocess
import sys
import textwrap
import uuid
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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


T = TypeVar("T", bound=type)


def _redefinable(cls: T) -> T:
    """Give ``cls`` the qualname of every class so marked: a test's Before and After are then
    one class defined again (as after an edit and a reload), which may take its name over."""
    cls.__qualname__ = "Redefined"
    return cls


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


def test_a_dataclass_whose_constructor_needs_more_than_its_fields_is_refused() -> None:
    """An InitVar without a default is not stored, so a value could not be rebuilt when
    read back (it was accepted, then its messages were unreadable dead letters)."""

    @dataclasses.dataclass(frozen=True)
    class Seeded:
        a: int
        seed: dataclasses.InitVar[int]

    with pytest.raises(RegistrationError, match=r"needs seed, which is not a field \(an InitVar\)"):
        register_value(Seeded)

    @dataclasses.dataclass(frozen=True)
    class Defaulted:
        a: int
        seed: dataclasses.InitVar[int] = 0

    register_value(name="tests.codec.Defaulted")(Defaulted)
    assert decode(encode(Defaulted(1))) == Defaulted(1)


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


LEAVES: dict[str, Any] = {  # values stored as an extension holding only plain parts
    "big int": 2**70,
    "datetime": datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC),
    "date": datetime.date(2026, 1, 2),
    "time": datetime.time(3, 4),
    "timedelta": datetime.timedelta(days=1),
    "Decimal": Decimal("1.50"),
    "UUID": uuid.UUID(int=7),
}


@pytest.mark.parametrize("leaf", sorted(LEAVES))
@pytest.mark.parametrize("kind", ["tuple", "frozenset", "dataclass", "mixed"])
async def test_big_ints_and_stdlib_values_at_the_depth_limit_are_read_back(
    kind: str, leaf: str, tmp_path: Path
) -> None:
    """A big int, datetime, Decimal... inside the deepest container allowed decodes too.

    It is accepted (the walk counts containers), so it must not come back as
    damaged bytes: a message acknowledged, then unreadable.
    """
    value: Any = LEAVES[leaf]
    wrap = NESTINGS[kind]
    for _ in range(MAX_DEPTH // 4 if kind == "mixed" else MAX_DEPTH):
        value = wrap(value)
    assert same(decode(encode(value)), value)
    assert same(decode(encode_canonical(value)), value)
    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.send(Keeper("k"), value)
        await eco.settle()
        assert await eco.dead_letters() == []
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert same(await eco.state_of(Keeper("k")), value)


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


def test_an_over_deep_stored_state_is_refused_without_crashing(tmp_path: Path) -> None:
    """A state record nesting 1,000 levels (written by hand) gives CodecError; the store goes on."""
    code = """
        import sys, plyvel, trio
        from ecosystems import LocalDisk
        from pachyderm import CodecError, _layout as layout
        from pachyderm._ecosystem import DEFAULT_ECOSYSTEM
        from tests.entities import Keeper

        path = sys.argv[1]

        async def store_one_state():
            async with LocalDisk.open(path) as eco:
                await eco.send_sync(Keeper("k"), 1)

        async def read_it_back():
            async with LocalDisk.open(path) as eco:
                try:
                    await eco.state_of(Keeper("k"))
                except CodecError as error:
                    print("refused" if "levels deep" in str(error) else error)
                assert await eco.send_sync(Keeper("other"), 2) == 2
                print("went on")

        trio.run(store_one_state)
        eco = layout.ecosystem_key(DEFAULT_ECOSYSTEM)
        key = layout.state_key(eco, layout.address_key(Keeper.entity_name, "k"))
        deep = b"\\x00"
        for _ in range(1000):  # tuples in tuples: ext 32 headers, as the codec writes them
            payload = b"\\x91" + deep
            deep = b"\\xc9" + len(payload).to_bytes(4, "big") + b"\\x01" + payload
        db = plyvel.DB(path)
        assert db.get(key) is not None
        db.put(key, b"\\x92\\x01" + deep)  # the record: [version 1, state]
        db.close()
        trio.run(read_it_back)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path / "store")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.splitlines() == ["refused", "went on"]


# Registered dataclasses and named tuples are stored by field name, with their version.


async def test_reordered_fields_keep_their_values(tmp_path: Path) -> None:
    """Values stored before a dataclass's fields were reordered read back by name, not position."""

    @register_value(name="tests.Transfer")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class Before:
        source: str
        target: str
        cents: int

    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.send_sync(Keeper("t"), Before("alice", "bob", 500))

    @register_value(name="tests.Transfer")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class After:
        target: str
        cents: int
        source: str

    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Keeper("t")) == After(target="bob", cents=500, source="alice")


def test_a_field_added_with_a_default_reads_old_values_with_it() -> None:
    """A field added with a default (or default_factory), anywhere, takes it in older values."""

    @register_value(name="tests.Grown")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class Before:
        a: int
        b: str = ""

    stored = encode(Before(1, "x"))

    @register_value(name="tests.Grown")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class After:
        a: int
        note: str = "none"
        b: str = ""
        tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

    assert decode(stored) == After(1, "none", "x", ())


async def test_a_field_added_without_default_is_filled_by_upgrade(tmp_path: Path) -> None:
    """Raising version makes values stored by the older version pass through upgrade()."""

    @register_value(name="tests.Deposit")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class V1:
        account: str
        euros: int

    async with LocalDisk.open(str(tmp_path)) as eco:
        await eco.send_sync(Keeper("d"), [V1("alice", 3), V1("bob", 5)])

    calls = []

    @register_value(name="tests.Deposit")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class V2:
        account: str
        cents: int
        currency: str

        version = 2

        @staticmethod
        def upgrade(fields: dict[str, Any], from_version: int) -> dict[str, Any]:
            calls.append(from_version)
            euros = fields.pop("euros")
            return {**fields, "cents": euros * 100, "currency": "EUR"}

    async with LocalDisk.open(str(tmp_path)) as eco:
        assert await eco.state_of(Keeper("d")) == [V2("alice", 300, "EUR"), V2("bob", 500, "EUR")]
        assert calls == [1, 1]
        await eco.send_sync(Keeper("d"), V2("carol", 1, "CHF"))
    calls.clear()
    async with LocalDisk.open(str(tmp_path)) as eco:  # stored as version 2: no upgrade
        assert await eco.state_of(Keeper("d")) == V2("carol", 1, "CHF")
        assert calls == []


def test_a_classmethod_upgrade_works_for_named_tuples() -> None:
    """Named tuples are stored by name too, and a classmethod upgrade is called on them."""

    class Before(NamedTuple):
        x: int

    register_value(name="tests.Spot")(_redefinable(Before))
    stored = encode(Before(4))

    class After(NamedTuple):
        y: int
        x: int

        @classmethod
        def upgrade(cls, fields: dict[str, Any], from_version: int) -> dict[str, Any]:
            return {**fields, "y": -fields["x"]}

    After.version = 2  # type: ignore[attr-defined]  # (mypy allows no plain attribute here)
    register_value(name="tests.Spot")(_redefinable(After))
    assert decode(stored) == After(y=-4, x=4)


def test_failing_decode_names_the_fields_the_class_and_the_version() -> None:
    """Fields that no longer fit raise CodecError naming missing and unknown ones, the version."""

    @register_value(name="tests.Shifting")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class Before:
        amount: int
        memo: str

    stored = encode(Before(1, "rent"))

    @register_value(name="tests.Shifting")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class After:
        amount: int
        currency: str

    with pytest.raises(CodecError) as caught:
        decode(stored)
    message = str(caught.value)
    assert "missing fields ['currency'] (they have no default)" in message
    assert "unknown fields ['memo']" in message
    assert "'tests.Shifting'" in message
    assert "stored by version 1" in message
    assert "upgrade(fields, from_version)" in message


def test_values_stored_by_a_newer_version_are_refused() -> None:
    """Fields stored by a newer version of a class than this process has raise CodecError."""

    @register_value(name="tests.Future")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class Newer:
        a: int

        version = 3

    stored = encode(Newer(1))

    @register_value(name="tests.Future")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class Older:
        a: int

    with pytest.raises(CodecError, match="stored by version 3 of it, newer than this"):
        decode(stored)


def test_a_failing_upgrade_is_a_codec_error_naming_it() -> None:
    """An upgrade that raises gives CodecError naming the class, the version and the fields."""

    @register_value(name="tests.Brittle")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class Before:
        a: int

    stored = encode(Before(1))

    @register_value(name="tests.Brittle")
    @dataclasses.dataclass(frozen=True)
    @_redefinable
    class After:
        b: int

        version = 2

        @staticmethod
        def upgrade(fields: dict[str, Any], from_version: int) -> dict[str, Any]:
            return {"b": fields["missing"]}

    with pytest.raises(CodecError, match=r"Redefined\.upgrade\(fields, 1\) failed on \{'a': 1\}"):
        decode(stored)


def test_values_stored_by_position_by_the_previous_release_are_read() -> None:
    """Bytes written by release 0.1.0 (fields by position) still decode, by today's field order."""

    @register_value(name="tests.Legacy")
    @dataclasses.dataclass(frozen=True)
    class Legacy:
        account: str
        cents: int
        memo: str = ""

    # encode([Legacy("alice", 1050), Legacy("bob", 7)]) as 0.1.0 wrote it (two fields then).
    stored = (
        b"\x92\xc7\x18\x05\x92\xactests.Legacy\x92\xa5alice\xcd\x04\x1a"
        b"\xc7\x14\x05\x92\xactests.Legacy\x92\xa3bob\x07"
    )
    assert decode(stored) == [Legacy("alice", 1050), Legacy("bob", 7)]


@pytest.mark.parametrize("version", [0, "2", 1.5])
def test_a_bad_version_is_refused_at_registration(version: Any) -> None:
    """A value type's version must be an int >= 1."""

    @dataclasses.dataclass(frozen=True)
    class Odd:
        a: int

    Odd.version = version  # type: ignore[attr-defined]
    with pytest.raises(RegistrationError, match="version must be an int >= 1"):
        register_value(name="tests.Odd")(Odd)


def test_a_field_named_version_is_data() -> None:
    """A field called ``version`` is stored as a field; the type stays at version 1."""

    @register_value(name="tests.Document")
    @dataclasses.dataclass(frozen=True)
    class Document:
        title: str
        version: int = 7

    assert decode(encode(Document("a", 3))) == Document("a", 3)


def test_an_enum_value_no_longer_defined_is_named() -> None:
    """Bytes holding an enum value its class no longer has: CodecError naming the enum and value,
    not a claim that the bytes are damaged."""

    @register_value(name="tests.Shrinking")
    class Shrinking(enum.Enum):
        A = 1
        B = 2

    stored = encode(Shrinking.B)

    @register_value(name="tests.Shrinking")  # defined again, without B
    class Shrinking(enum.Enum):  # type: ignore[no-redef]
        A = 1

    with pytest.raises(CodecError, match=r"value 2 .* enum 'tests\.Shrinking'") as caught:
        decode(stored)
    assert "damaged" not in str(caught.value)


def test_a_name_given_positionally_to_register_value_says_to_use_the_keyword() -> None:
    """@register_value("shop.Order") is refused with the keyword form to write instead."""
    with pytest.raises(RegistrationError, match=r"@register_value\(name='shop.Order'\)"):
        register_value("shop.Order")  # type: ignore[call-overload]


@pytest.mark.parametrize("value", ["caf\udce9", {"name": ["caf\udce9"]}], ids=["str", "inside"])
def test_a_lone_surrogate_is_refused_saying_where_it_comes_from_and_what_to_do(
    value: object,
) -> None:
    """A str with a lone surrogate (from errors='surrogateescape') cannot be stored: the
    CodecError shows the value and says to decode it properly or send the bytes."""
    for encoder in (encode, encode_canonical):
        with pytest.raises(CodecError) as caught:
            encoder(value)
        assert r"'caf\udce9'" in str(caught.value)
        assert "decode it properly, or send the bytes" in str(caught.value)
