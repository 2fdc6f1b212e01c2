"""Entities: an instance is an address; classes register by stable name."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pachyderm import (
    Entity,
    InvalidIdError,
    Outbox,
    RegistrationError,
    UnstableNameWarning,
    register_value,
)
from pachyderm._entity import entity_classes
from pachyderm._values import value_types
from tests.entities import Counter, Keeper

ROOT = Path(__file__).resolve().parent.parent


def test_an_instance_is_its_address() -> None:
    """Equal iff same class and id; hashable; repr like Counter('my_counter')."""
    counter = Counter("my_counter")
    assert counter == Counter("my_counter")
    assert counter != Counter("other")
    assert counter != Keeper("my_counter")
    assert hash(counter) == hash(Counter("my_counter"))
    assert {counter: 1}[Counter("my_counter")] == 1
    assert repr(counter) == "Counter('my_counter')"
    assert counter.id == "my_counter"


def test_addresses_are_immutable() -> None:
    """Setting an attribute on an address is refused with a pointer to the state."""
    with pytest.raises(AttributeError, match="is an address"):
        Counter("c").count = 1  # mypy allows it: Entity defines __setattr__ (to refuse it)


@pytest.mark.parametrize("entity_id", ["a", 7, -(2**70), b"\x00", ("a", (1, b"b")), ()])
def test_valid_ids(entity_id: Any) -> None:
    """Ids may be str, int, bytes, or tuples of those."""
    assert Counter(entity_id).id == entity_id


@pytest.mark.parametrize("entity_id", [1.5, None, True, ["a"], ("a", [1]), {"a": 1}, bytearray()])
def test_invalid_ids_are_refused_clearly(entity_id: Any) -> None:
    """Any other id raises InvalidIdError showing the value and its type."""
    with pytest.raises(InvalidIdError) as caught:
        Counter(entity_id)
    assert "str, int, bytes, or tuples" in str(caught.value)


def test_invalid_id_message_names_value_and_type() -> None:
    """The error names the offending part and its type."""
    with pytest.raises(InvalidIdError, match=r"1\.5 \(a builtins\.float\)"):
        Counter(("ok", 1.5))


def test_default_name_is_module_and_qualname() -> None:
    """A class registers as module.qualname unless it says otherwise."""
    assert Counter.entity_name == "tests.entities.Counter"
    assert entity_classes.resolve("tests.entities.Counter") is Counter


def test_entity_name_and_former_names() -> None:
    """entity_name overrides the stored name; former_names map old names to the class."""

    class Renamed(Entity[Any, Any]):
        entity_name = "tests.Renamed"
        former_names = ("tests.Original", "old.module.Original")

    for name in ("tests.Renamed", "tests.Original", "old.module.Original"):
        assert entity_classes.resolve(name) is Renamed


def test_a_name_cannot_be_claimed_twice() -> None:
    """A second class claiming another class's stored name is refused, naming both."""

    class First(Entity[Any, Any]):
        entity_name = "tests.First"

    with pytest.raises(RegistrationError, match="already used by"):

        class Second(Entity[Any, Any]):
            entity_name = "tests.Second"
            former_names = ("tests.First",)


def test_redefining_a_class_replaces_it() -> None:
    """Defining a class again under its name (a REPL, a reload) replaces the old one."""

    def define() -> type[Entity[Any, Any]]:
        class Again(Entity[Any, Any]):
            entity_name = "tests.Again"

        return Again

    first, second = define(), define()
    assert entity_classes.resolve("tests.Again") is second is not first


def test_version_must_be_a_positive_int() -> None:
    """A bad version is refused when the class is defined."""
    with pytest.raises(RegistrationError, match="version must be an int >= 1"):

        class Bad(Entity[Any, Any]):
            version = 0


def test_an_empty_entity_name_is_refused() -> None:
    """entity_name = "" is refused when the class is defined, saying what to write (it
    was taken as no name, and the class stored under its module and class name)."""
    with pytest.raises(RegistrationError, match=r"Nameless.entity_name is empty.*yourapp\."):

        class Nameless(Entity[Any, Any]):
            entity_name = ""


def test_init_defaults_to_none_and_activate_must_be_defined() -> None:
    """init() gives None by default; a class without activate() says so."""

    class Bare(Entity[Any, Any]):
        pass

    assert Bare("b").init() is None
    with pytest.raises(NotImplementedError, match="must define activate"):
        Bare("b").activate("m", None)


def test_entity_itself_is_not_an_address() -> None:
    """Entity must be subclassed before it can address anything."""
    with pytest.raises(TypeError, match="subclass it"):
        Entity("x")


def test_handlers_type_check_with_generics() -> None:
    """Entity is generic in message and state: a typed handler is an ordinary method."""

    class Typed(Entity[int, list[int]]):
        def init(self) -> list[int]:
            return []

        def activate(self, message: int, state: list[int]) -> tuple[Outbox, list[int]]:
            return [], [*state, message]

    assert Typed("t").activate(3, [1]) == ([], [1, 3])


def test_two_classes_cannot_share_an_entity_name() -> None:
    """Another class (other module or qualname) with a taken entity_name is refused, naming both."""

    class Counting(Entity[Any, Any]):
        entity_name = "tests.entity.Shared"

    with pytest.raises(RegistrationError) as caught:

        class Basket(Entity[Any, Any]):
            entity_name = "tests.entity.Shared"

    text = str(caught.value)
    assert "'tests.entity.Shared'" in text
    assert "Counting" in text
    assert "Basket" in text
    assert "entity_name = '...'" in text
    assert entity_classes.resolve("tests.entity.Shared") is Counting  # still the first


def test_former_names_cannot_take_another_class_name() -> None:
    """former_names naming another class's entity_name is refused; so is the reverse."""

    class Owner(Entity[Any, Any]):
        entity_name = "tests.entity.Owner"
        former_names = ("tests.entity.OwnerBefore",)

    with pytest.raises(RegistrationError, match=r"'tests\.entity\.Owner' is already used by"):

        class Squatter(Entity[Any, Any]):
            entity_name = "tests.entity.Squatter"
            former_names = ("tests.entity.Owner",)

    with pytest.raises(RegistrationError, match=r"'tests\.entity\.OwnerBefore' is already used"):

        class Claimant(Entity[Any, Any]):
            entity_name = "tests.entity.OwnerBefore"

    assert "tests.entity.Squatter" not in entity_classes  # refused whole, nothing half-added


def test_former_names_given_as_one_str_is_refused() -> None:
    """former_names = ("app.Old") (no comma: a str) is refused, not taken letter by letter."""
    with pytest.raises(RegistrationError, match=r"write \('tests.entity.Old',\), with the comma"):

        class Renamed(Entity[Any, Any]):
            entity_name = "tests.entity.Renamed"
            former_names = "tests.entity.Old"  # type: ignore[assignment]

    assert "t" not in entity_classes


def test_a_redefinition_drops_the_names_only_the_old_one_had() -> None:
    """Redefining a class without one of its former names frees that name for another class."""

    class Moving(Entity[Any, Any]):
        entity_name = "tests.entity.Moving"
        former_names = ("tests.entity.Parked",)

    class Moving(Entity[Any, Any]):  # type: ignore[no-redef]  # noqa: F811  # the REPL case
        entity_name = "tests.entity.Moving"

    assert "tests.entity.Parked" not in entity_classes

    class Parked(Entity[Any, Any]):
        entity_name = "tests.entity.Parked"

    assert entity_classes.resolve("tests.entity.Moving") is Moving


def test_two_value_types_cannot_share_a_name() -> None:
    """Value types follow the same rule: another type under a taken name is refused."""

    @register_value(name="tests.entity.Point")
    @dataclass(frozen=True)
    class Point:
        x: int

    with pytest.raises(RegistrationError, match=r"@register_value\(name='\.\.\.'\)"):

        @register_value(name="tests.entity.Point")
        @dataclass(frozen=True)
        class Place:
            name: str

    @register_value(name="tests.entity.Point")  # defined again: replaces
    @dataclass(frozen=True)
    class Point:  # type: ignore[no-redef]  # noqa: F811  # defined again
        x: int
        y: int = 0

    assert value_types.resolve("tests.entity.Point") is Point


SCRIPT = """
import warnings
from dataclasses import dataclass
from pachyderm import Entity, register_value

class Loose(Entity):
    pass

class Pinned(Entity):
    entity_name = "tests.script.Pinned"

@register_value
@dataclass(frozen=True)
class LooseValue:
    x: int

@register_value(name="tests.script.PinnedValue")
@dataclass(frozen=True)
class PinnedValue:
    x: int
"""


def run_script(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, "-W", "default", str(script)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_class_in_a_script_run_as_main_warns_to_set_a_stable_name(tmp_path: Path) -> None:
    """Default names from __main__ warn (UnstableNameWarning), naming the class and the fix.

    Classes with an explicit entity_name, or value types with a name, do not.
    """
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "UnstableNameWarning" in line]
    assert len(warnings) == 2, result.stderr
    entity, value = warnings
    assert "app.py:6: UnstableNameWarning: Loose is defined in __main__" in entity
    assert "'__main__.Loose'" in entity
    assert "entity_name = 'yourapp.Loose'" in entity
    assert "app.py:12: UnstableNameWarning: LooseValue is defined in __main__" in value
    assert "@register_value(name='yourapp.LooseValue')" in value
    assert "Pinned" not in result.stderr


def test_the_warning_is_a_user_warning_that_can_be_silenced() -> None:
    """UnstableNameWarning is a UserWarning, so warnings filters can turn it off or to errors."""
    assert issubclass(UnstableNameWarning, UserWarning)
    with pytest.warns(UnstableNameWarning, match="Give it a stable name"):
        type("Scratch", (Entity,), {"__module__": "__main__"})


def test_a_name_that_cannot_be_stored_is_refused() -> None:
    """An entity_name holding a lone surrogate is refused at registration, naming it."""
    refused = r"can be stored \(UTF-8\), got 'tests\.\\ud800' \(a str\)"
    with pytest.raises(RegistrationError, match=refused):

        class Garbled(Entity[Any, Any]):
            entity_name = "tests.\ud800"
