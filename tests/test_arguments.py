"""Bad arguments to the verbs, on both faces: a PachydermError naming the value and its type."""

from __future__ import annotations

import math
import unittest.mock
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from ecosystems import InMemory, LocalDisk, Postgres
from examples.sqlite_kind import SQLite
from pachyderm import (
    ActivationError,
    Ecosystem,
    EcosystemKind,
    Entity,
    InvalidAddressError,
    InvalidArgumentError,
    InvalidIdError,
    ManualClock,
    Outbox,
    PachydermError,
    UnknownDeadLetterError,
    after,
    cancel,
)
from pachyderm.errors import describe
from simulation import Simulation, World
from tests.conftest import OpenEcosystem
from tests.entities import Counter

Case = tuple[str, tuple[Any, ...], dict[str, Any], type[PachydermError], str]

# (verb, arguments, keyword arguments, the error, what its message must show)
VERB_CASES: list[Case] = [
    ("participate", ("\ud800",), {}, InvalidArgumentError, r"'\ud800' (a builtins.str)"),
    ("participate", ("",), {}, InvalidArgumentError, "'' (a builtins.str)"),
    ("participate", ("a\x00b",), {}, InvalidArgumentError, r"'a\x00b' (a builtins.str)"),
    ("participate", (5,), {}, InvalidArgumentError, "5 (a builtins.int)"),
    ("participate", ("e" * 257,), {}, InvalidArgumentError, "at most 256 bytes"),
    ("participate", ("\u00e9" * 129,), {}, InvalidArgumentError, "at most 256 bytes"),
    ("send_sync", ("counter", "inc"), {}, InvalidAddressError, "'counter' (a builtins.str)"),
    ("send", (None, "inc"), {}, InvalidAddressError, "None (a builtins.NoneType)"),
    ("state_of", (3,), {}, InvalidAddressError, "3 (a builtins.int)"),
    ("follow", ("counter",), {}, InvalidAddressError, "'counter' (a builtins.str)"),
    ("follow", (Counter("c"),), {"buffer": 0}, InvalidArgumentError, "0 (a builtins.int)"),
    ("redeliver", ("7",), {}, InvalidArgumentError, "'7' (a builtins.str)"),
    ("discard", (1.0,), {}, InvalidArgumentError, "1.0 (a builtins.float)"),
    ("redeliver", (-1,), {}, UnknownDeadLetterError, "no dead letter -1"),
    ("discard", (2**70,), {}, UnknownDeadLetterError, f"no dead letter {2**70}"),
]

OPEN_CASES: list[tuple[dict[str, Any], str]] = [
    ({"max_resident": 0}, "max_resident must be an int >= 1, got 0 (a builtins.int)"),
    ({"max_resident": 1.5}, "max_resident must be an int >= 1, got 1.5 (a builtins.float)"),
    ({"durability": "fsnc"}, "'fsync' or 'flush', got 'fsnc' (a builtins.str)"),
    ({"max_message_bytes": -1}, "got -1 (a builtins.int)"),
]

ANY_FACE: list[tuple[str, Callable[[], object], type[PachydermError], str]] = [
    ("surrogate id", lambda: Counter("\ud800"), InvalidIdError, r"'\ud800' (a builtins.str)"),
    ("surrogate in a tuple id", lambda: Counter(("a", "\udfff")), InvalidIdError, r"'\udfff'"),
    ("float id", lambda: Counter(1.5), InvalidIdError, "1.5 (a builtins.float)"),  # type: ignore[arg-type]
    ("Entity itself", lambda: Entity("x"), InvalidAddressError, "subclass it"),
    ("timer name", lambda: cancel("\ud800"), InvalidArgumentError, r"'\ud800' (a builtins.str)"),
    ("NUL timer name", lambda: cancel("a\x00"), InvalidArgumentError, r"'a\x00' (a builtins.str)"),
    ("long timer name", lambda: cancel("n" * 257), InvalidArgumentError, "at most 256 bytes"),
    (
        "named after()",
        lambda: after(1, Counter("c"), "m", name="\udc80"),
        InvalidArgumentError,
        r"'\udc80' (a builtins.str)",
    ),
    ("NaN delay", lambda: after(math.nan, Counter("c"), "m"), InvalidArgumentError, "nan"),
    ("huge int delay", lambda: after(10**400, Counter("c"), "m"), InvalidArgumentError, "1000"),
    ("huge clock start", lambda: ManualClock(10**400), InvalidArgumentError, "a builtins.int"),
    ("huge advance", lambda: ManualClock().advance(10**400), InvalidArgumentError, "builtins.int"),
    (
        "surrogate path",
        lambda: LocalDisk.connect("/tmp/\ud800").state_of(Counter("c")),
        InvalidArgumentError,
        "lone surrogate",
    ),
    (
        "NUL in a path",
        lambda: LocalDisk.connect("/tmp/a\x00b").state_of(Counter("c")),
        InvalidArgumentError,
        r"'/tmp/a\x00b' (a builtins.str)",
    ),
    (  # an ecosystem kind built on pachyderm.hosting, outside the core
        "NUL in a SQLite path",
        lambda: SQLite.connect("/tmp/a\x00b").state_of(Counter("c")),
        InvalidArgumentError,
        r"'/tmp/a\x00b' (a builtins.str)",
    ),
    (
        "SQLite path of another type",
        lambda: SQLite.connect(42).state_of(Counter("c")),  # type: ignore[arg-type]
        InvalidArgumentError,
        "42 (a builtins.int)",
    ),
    (  # libpq would read the DSN up to the NUL: another database than the one named
        "NUL in a DSN",
        lambda: Postgres.connect("dbname=app\x00_test"),
        InvalidArgumentError,
        r"'dbname=app\x00_test' (a builtins.str)",
    ),
    (
        "surrogate DSN",
        lambda: Postgres.connect("host=/tmp/\ud800"),
        InvalidArgumentError,
        r"'host=/tmp/\ud800' (a builtins.str)",
    ),
]


def check(error: BaseException, expected: type[PachydermError], shown: str) -> None:
    assert type(error) is expected, error
    assert shown in str(error)


@pytest.mark.parametrize(("verb", "arguments", "keywords", "expected", "shown"), VERB_CASES)
def test_bad_verb_arguments_on_the_shell_face(
    kind: EcosystemKind,
    pachyderm_home: Path,
    verb: str,
    arguments: tuple[Any, ...],
    keywords: dict[str, Any],
    expected: type[PachydermError],
    shown: str,
) -> None:
    """Each bad argument raises its PachydermError subclass, showing the value and its type."""
    with pytest.raises(PachydermError) as caught:
        getattr(kind, verb)(*arguments, **keywords)
    check(caught.value, expected, shown)
    assert kind.send_sync(Counter("c"), "inc") == 1  # and nothing else went wrong


async def call(
    eco: Ecosystem, verb: str, arguments: tuple[Any, ...], keywords: dict[str, Any]
) -> None:
    result = getattr(eco, verb)(*arguments, **keywords)
    if hasattr(result, "__await__"):
        await result


@pytest.mark.parametrize(("verb", "arguments", "keywords", "expected", "shown"), VERB_CASES)
async def test_bad_verb_arguments_on_the_trio_face(
    open_ecosystem: OpenEcosystem,
    verb: str,
    arguments: tuple[Any, ...],
    keywords: dict[str, Any],
    expected: type[PachydermError],
    shown: str,
) -> None:
    """The trio face refuses the same arguments with the same errors."""
    async with open_ecosystem() as eco:
        with pytest.raises(PachydermError) as caught:
            await call(eco, verb, arguments, keywords)
        check(caught.value, expected, shown)
        assert await eco.send_sync(Counter("c"), "inc") == 1


@pytest.mark.parametrize(("options", "shown"), OPEN_CASES)
async def test_bad_options_on_both_faces(
    open_ecosystem: OpenEcosystem,
    kind: EcosystemKind,
    pachyderm_home: Path,
    options: dict[str, Any],
    shown: str,
) -> None:
    """Bad open() and connect() options raise InvalidArgumentError, showing the value, and
    leave the store free: opening it again with good options works (no StoreLockedError)."""
    with pytest.raises(InvalidArgumentError) as caught:
        async with open_ecosystem(**options):
            pass
    assert shown in str(caught.value)
    async with open_ecosystem() as eco:
        assert await eco.send_sync(Counter("c"), "inc") == 1
    with pytest.raises(InvalidArgumentError) as caught:
        kind.connect(**options)
    assert shown in str(caught.value)
    assert await trio.to_thread.run_sync(kind.send_sync, Counter("c"), "inc") == 1


@pytest.mark.parametrize(("timeout", "shown"), [(math.nan, "nan"), (-1, "-1"), ("1", "'1'")])
def test_bad_follower_timeouts(
    pachyderm_home: Path, kind: EcosystemKind, timeout: Any, shown: str
) -> None:
    """A NaN timeout (which would wait forever), a negative or a non-number one is refused."""
    with kind.follow(Counter("c")) as follower, pytest.raises(InvalidArgumentError) as caught:
        follower.get(timeout=timeout)
    assert f"got {shown} (a builtins." in str(caught.value)


@pytest.mark.parametrize("timeout", [10**400, 1e308], ids=["10**400", "1e308"])
def test_follower_timeouts_of_centuries_wait(
    pachyderm_home: Path, kind: EcosystemKind, timeout: float
) -> None:
    """A finite timeout longer than a lock can wait is waited, not an OverflowError."""
    counter = Counter("c")
    with kind.follow(counter) as follower:
        kind.send(counter, "inc")
        assert follower.get(timeout=timeout) == (counter, 1)


def test_connect_refuses_a_clock_it_would_ignore(pachyderm_home: Path, kind: EcosystemKind) -> None:
    """connect(clock=...) on a store already open with another clock says so, not ignores it."""
    kind.connect().state_of(Counter("c"))
    clock = ManualClock()
    with pytest.raises(InvalidArgumentError) as caught:
        kind.connect(clock=clock)
    assert "close() it first" in str(caught.value)
    with pytest.raises(InvalidArgumentError):
        kind.connect(max_resident=0)  # checked even when the store is open
    kind.close()
    assert kind.connect(clock=clock) is kind.connect(clock=clock)


@pytest.mark.parametrize(("label", "make", "expected", "shown"), ANY_FACE)
def test_bad_ids_names_and_delays(
    label: str, make: Callable[[], object], expected: type[PachydermError], shown: str
) -> None:
    """Addresses, ids, timer names and delays are refused where they are made, before any face."""
    with pytest.raises(PachydermError) as caught:
        make()
    check(caught.value, expected, shown)


SIMULATION_CASES: list[tuple[str, Callable[[], object], str]] = [
    ("envelopes not iterable", lambda: Simulation.run(5), "got 5 (a builtins.int)"),  # type: ignore[arg-type]
    ("envelopes a str", lambda: Simulation.exhaust("inc"), "got 'inc' (a builtins.str)"),  # type: ignore[arg-type]
    ("world not a World", lambda: Simulation.run([], world=5), "got 5 (a builtins.int)"),  # type: ignore[arg-type]
    (
        "max_steps 0",
        lambda: Simulation.run([(Counter("c"), "inc")], max_steps=0),
        "max_steps must be an int >= 1, got 0 (a builtins.int)",
    ),
    (
        "one check, not a list of them",
        lambda: Simulation.explore([(Counter("c"), "inc")], invariants=_passes),  # type: ignore[arg-type]
        "invariants must be a list of checks (functions of a World), got <function _passes",
    ),
    (
        "a check that is not a function",
        lambda: Simulation.explore([(Counter("c"), "inc")], final=["_passes"]),  # type: ignore[list-item]
        "got '_passes' (a builtins.str)",
    ),
    (
        "stop_at_first_violation not a bool",
        lambda: Simulation.explore([(Counter("c"), "inc")], stop_at_first_violation="no"),  # type: ignore[arg-type]
        "stop_at_first_violation must be True or False, got 'no' (a builtins.str)",
    ),
    (
        "count_paths not a bool",
        lambda: Simulation.explore([(Counter("c"), "inc")], count_paths=1),  # type: ignore[arg-type]
        "count_paths must be True or False, got 1 (a builtins.int)",
    ),
    (
        "progress 1, not True",
        lambda: Simulation.explore([(Counter("c"), "inc")], progress=1),  # type: ignore[arg-type]
        "got 1 (a builtins.int)",
    ),
    (
        "workers past 256",
        lambda: Simulation.explore([(Counter("c"), "inc")], workers=10**6),
        "workers must be at most 256",
    ),
    (
        "a walk's max_steps a str",
        lambda: Simulation.walk([(Counter("c"), "inc")], seed=7, max_steps="5"),  # type: ignore[arg-type]
        "max_steps must be an int >= 0 (actions to take at most), got '5' (a builtins.str)",
    ),
    (
        "executions' max_steps None",
        lambda: Simulation.executions([(Counter("c"), "inc")], max_steps=None),  # type: ignore[arg-type]
        "got None (a builtins.NoneType)",
    ),
    (
        "a trace of strings",
        lambda: Simulation.replay([(Counter("c"), "inc")], ["deliver"]),  # type: ignore[list-item]
        "step 1 of the trace must be an Action, got 'deliver' (a builtins.str)",
    ),
    (
        "a trace that does not fit the start",
        lambda: Simulation.replay(
            [(Counter("d"), "inc")],
            Simulation.explore([(Counter("c"), "inc")], final=[_fails]).violations[0].trace,
        ),
        "step 1 of 1 of the trace, deliver outside -> Counter('c'): 'inc', cannot be taken",
    ),
    (
        "a drop replayed without the budget for it",
        lambda: Simulation.replay(
            [(Counter("c"), "inc")],
            Simulation.explore([(Counter("c"), "inc")], drops=1, final=[_ran]).violations[0].trace,
        ),
        "drop outside -> Counter('c'): 'inc', cannot be taken",
    ),
]


def _passes(world: object) -> bool:
    return True


def _fails(world: object) -> bool:
    return False


def _ran(world: World) -> bool:
    return bool(world.entities)  # fails only where the message was dropped


@pytest.mark.parametrize(("label", "make", "shown"), SIMULATION_CASES)
def test_bad_simulation_arguments(label: str, make: Callable[[], object], shown: str) -> None:
    """The simulation's verbs refuse bad arguments with InvalidArgumentError, showing them."""
    with pytest.raises(InvalidArgumentError) as caught:
        make()
    assert shown in str(caught.value)


@pytest.mark.parametrize("address", ["c", None, ("Counter", "c")], ids=["str", "None", "tuple"])
def test_a_world_asked_for_the_state_of_a_non_address_says_so(address: object) -> None:
    """World.state_of refuses what is not an entity address, showing the value and type."""
    world = Simulation.run([(Counter("c"), "inc")])
    with pytest.raises(InvalidAddressError) as caught:
        world.state_of(address)  # type: ignore[arg-type]
    assert describe(address) in str(caught.value)
    assert "Counter('my_counter')" in str(caught.value)


@pytest.mark.parametrize(
    ("verb", "options", "shown"),
    [
        ("explore", {"max_world": 3}, "'max_world' (did you mean 'max_worlds'?)"),
        ("exhaust", {"wrkers": 2}, "'wrkers' (did you mean 'workers'?)"),
        ("run", {"max_step": 3}, "'max_step' (did you mean 'max_steps'?)"),
        ("replay", {"netwrok": "fifo"}, "'netwrok' (did you mean 'network'?)"),
        ("explore", {"colour": 1}, "'colour'; it takes: envelopes, world, invariants, final,"),
        ("explore", {"worl": None}, "'worl' (did you mean 'world'?)"),
    ],
)
def test_a_misspelt_option_is_refused_with_the_nearest_one(
    verb: str, options: dict[str, Any], shown: str
) -> None:
    """An option a simulation verb does not take is an InvalidArgumentError naming it and
    the nearest it does take (Python's own TypeError named only the unknown one)."""
    arguments: list[Any] = [[(Counter("c"), "inc")]]
    if verb == "replay":
        arguments.append([])
    with pytest.raises(InvalidArgumentError) as caught:
        getattr(Simulation, verb)(*arguments, **options)
    assert shown in str(caught.value)
    assert str(caught.value).startswith(f"Simulation.{verb}() takes no option")


def test_a_type_whose_name_starts_with_a_vowel_takes_an() -> None:
    """Errors show a value's type with the article its sound takes: "an attack.model.L",
    "a builtins.int", but "a uuid.UUID" and "a unittest.mock.Mock" (a "you" sound)."""
    kind = type("L", (), {"__module__": "attack.model"})
    assert describe(kind()).endswith("(an attack.model.L)")
    assert describe(5) == "5 (a builtins.int)"
    assert describe(uuid.UUID(int=1)).endswith("(a uuid.UUID)")
    assert describe(unittest.mock.Mock()).endswith("(a unittest.mock.Mock)")


class _Boom(Entity[Any, int]):
    entity_name = "tests.arguments.Boom"

    def activate(self, message: Any, state: Any) -> tuple[Outbox, int]:
        raise ValueError("boom")


def test_values_whose_repr_raises_are_shown_not_raised() -> None:
    """An int past Python's 4,300 digits has a repr that raises: the errors, addresses,
    dead letters, worlds and traces that show one say what it is instead of failing
    themselves."""
    huge = 7**9000
    assert repr(Counter(huge)) == "Counter(<an int of 25,267 bits>)"
    assert describe(huge) == "<an int of 25,267 bits> (a builtins.int)"
    with pytest.raises(ActivationError) as caught:
        InMemory.send_sync(_Boom(huge), huge)
    assert str(caught.value).startswith(
        "_Boom(<an int of 25,267 bits>) failed on <an int of 25,267 bits>: ValueError: boom"
    )
    [letter] = InMemory.dead_letters()
    assert repr(letter) == (
        f"DeadLetter(id={letter.id}, address=_Boom(<an int of 25,267 bits>), "
        "message=<an int of 25,267 bits>, error='ValueError: boom')"
    )
    with pytest.raises(UnknownDeadLetterError, match="no dead letter <an int of 25,267 bits>"):
        InMemory.redeliver(huge)
    InMemory.close()
    result = Simulation.explore([(_Boom(1), huge)], final=[lambda world: False])
    assert "<an int of 25,267 bits>" in str(result.violations[0])
    assert "<an int of 25,267 bits>" in repr(result.final_worlds[0])
    assert "<an int of 25,267 bits>" in result.violations[0].diagram
