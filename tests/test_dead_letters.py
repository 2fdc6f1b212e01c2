"""Dead letters whose classes this process has not registered: listed, kept, redelivered later."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ecosystems import LocalDisk
from pachyderm import (
    ActivationError,
    Entity,
    Outbox,
    UnknownDeadLetterError,
    Unreadable,
    UnregisteredNameError,
)
from tests.entities import Fragile, Keeper

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import sys
from dataclasses import dataclass
import trio
from ecosystems import LocalDisk
from pachyderm import ActivationError, Entity, register_value
from tests.entities import Fragile, Keeper

class Doomed(Entity):
    entity_name = "tests.dead_letters.Doomed"
    def activate(self, message, state):
        raise ValueError("doomed")

@register_value(name="tests.dead_letters.Parcel")
@dataclass(frozen=True)
class Parcel:
    weight: int

class Picky(Entity):
    entity_name = "tests.dead_letters.Picky"
    def activate(self, message, state):
        raise ValueError("picky")

async def main():
    async with LocalDisk.open(sys.argv[1]) as eco:
        for address, message in [
            (Fragile("f"), "boom"),
            (Doomed("d"), "hello"),
            (Picky("p"), Parcel(3)),
        ]:
            try:
                await eco.send_sync(address, message)
            except ActivationError:
                pass
        await eco.send_sync(Keeper("k"), "after")

trio.run(main)
"""


def write_dead_letters(directory: Path) -> None:
    """In a fresh interpreter: three dead letters, two of them of classes only it defines."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(directory)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_dead_letters_of_unregistered_classes_are_listed_with_placeholders(
    tmp_path: Path,
) -> None:
    """dead_letters() lists every letter; parts naming unregistered classes are Unreadable."""
    write_dead_letters(tmp_path)
    async with LocalDisk.open(str(tmp_path)) as eco:
        fragile, doomed, picky = await eco.dead_letters()
    assert (fragile.address, fragile.message) == (Fragile("f"), "boom")
    assert doomed.message == "hello"
    assert doomed.error == "ValueError: doomed"
    assert isinstance(doomed.address, Unreadable)
    assert doomed.address.missing == "tests.dead_letters.Doomed"
    assert repr(doomed.address) == (
        "<unreadable: needs the entity class 'tests.dead_letters.Doomed', not registered "
        "in this process; import the module that defines it>"
    )
    assert isinstance(picky.address, Unreadable)
    assert isinstance(picky.message, Unreadable)
    assert picky.message.missing == "tests.dead_letters.Parcel"
    assert "needs the value type 'tests.dead_letters.Parcel'" in repr(picky.message)
    assert picky.recent_messages == [picky.message]


async def test_redelivering_an_unreadable_dead_letter_is_refused_and_keeps_it(
    tmp_path: Path,
) -> None:
    """redeliver() of a letter whose class is not registered raises, and the letter stays.

    Once the class is registered, the same letter is redelivered and processed.
    """
    write_dead_letters(tmp_path)
    async with LocalDisk.open(str(tmp_path)) as eco:
        _, doomed, _ = await eco.dead_letters()
        with pytest.raises(UnregisteredNameError, match=r"'tests\.dead_letters\.Doomed'") as caught:
            await eco.redeliver(doomed.id)
        assert f"dead letter {doomed.id} needs it to be redelivered" in "\n".join(
            caught.value.__notes__
        )
        await eco.send_sync(Keeper("k"), "commits the open group")
    async with LocalDisk.open(str(tmp_path)) as eco:
        assert len(await eco.dead_letters()) == 3  # nothing was claimed

        class Doomed(Entity[Any, Any]):
            entity_name = "tests.dead_letters.Doomed"

            def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
                return [], ("got", message)

        await eco.redeliver(doomed.id)
        await eco.settle()
        assert await eco.state_of(Doomed("d")) == ("got", "hello")
        assert [letter.id for letter in await eco.dead_letters()] != [doomed.id]
        assert len(await eco.dead_letters()) == 2


async def test_a_dead_letter_of_another_store_is_refused_and_touches_nothing(
    tmp_path: Path,
) -> None:
    """Dead letter ids are a store's own sequence numbers: a letter listed by another
    store, whose id this one also has, is refused by discard and redeliver with
    UnknownDeadLetterError (it deleted this store's own letter of that id), and both
    stores keep their letters."""
    async with (
        LocalDisk.open(str(tmp_path / "x")) as x,
        LocalDisk.open(str(tmp_path / "y")) as y,
    ):
        for eco, name in ((x, "in x"), (y, "in y")):
            with pytest.raises(ActivationError):
                await eco.send_sync(Fragile(name), "boom")
        [from_x], [from_y] = await x.dead_letters(), await y.dead_letters()
        assert from_x.id == from_y.id
        for verb in (y.discard, y.redeliver):
            with pytest.raises(UnknownDeadLetterError, match="is not this ecosystem's"):
                await verb(from_x)
        assert [letter.address for letter in await y.dead_letters()] == [Fragile("in y")]
        assert [letter.address for letter in await x.dead_letters()] == [Fragile("in x")]
        await y.discard(from_y)  # its own: taken
        assert await y.dead_letters() == []
