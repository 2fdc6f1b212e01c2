"""Regression tests for the first hardening fixes: what a handler or a caller can do wrong.

A handler that raises SystemExit or KeyboardInterrupt, an endless outbox, big
messages kept for error reports, and followers dropped without ``close()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from ecosystems import InMemory
from pachyderm import ActivationError, Entity, Outbox
from pachyderm._codec import encode
from pachyderm._residents import RECENT_BYTES
from pachyderm._step import MAX_OUTBOX
from simulation import Simulation
from tests.conftest import OpenEcosystem
from tests.entities import Counter, Fragile


class Quitter(Entity[Any, int]):
    """Counts messages; raises the BaseException its message names."""

    entity_name = "tests.hardening.Quitter"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        if message == "exit":
            raise SystemExit("handler called sys.exit")
        if message == "interrupt":
            raise KeyboardInterrupt
        if message == "generator exit":
            raise GeneratorExit
        return [], state + 1


class Flood(Entity[Any, int]):
    """Returns an endless generator as its outbox."""

    entity_name = "tests.hardening.Flood"

    def init(self) -> int:
        return 0

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        def endless() -> Iterator[tuple[Counter, int]]:
            for n in itertools.count():
                yield Counter("flooded"), n

        return endless(), state + 1


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("exit", "SystemExit"),
        ("interrupt", "KeyboardInterrupt"),
        ("generator exit", "GeneratorExit"),
    ],
)
async def test_a_handler_raising_a_base_exception_is_a_dead_letter(
    open_ecosystem: OpenEcosystem, message: str, cause: str
) -> None:
    """SystemExit, KeyboardInterrupt or GeneratorExit from activate() fails that activation
    (a dead letter naming the cause, the state kept); the store reopens and goes on."""
    async with open_ecosystem() as eco:
        await eco.send_sync(Quitter("q"), "one")
        with pytest.raises(ActivationError, match=cause) as caught:
            await eco.send_sync(Quitter("q"), message)
        assert type(caught.value.__cause__).__name__ == cause
        assert await eco.state_of(Quitter("q")) == 1
        [letter] = await eco.dead_letters()
        assert letter.message == message
        assert letter.error.startswith(cause)
        assert await eco.send_sync(Quitter("q"), "two") == 2
    async with open_ecosystem() as eco:  # a persistent store opens again, the letter kept
        assert await eco.send_sync(Quitter("q"), "three") == (3 if open_ecosystem.persistent else 1)


class _StrFails(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class _StrNotText(Exception):
    def __str__(self) -> Any:
        return 5


class Mumbler(Entity[str, int]):
    """Counts messages; raises exceptions whose text cannot be stored, or not even made."""

    entity_name = "tests.hardening.Mumbler"

    def init(self) -> int:
        return 0

    def activate(self, message: str, state: int) -> tuple[Outbox, int]:
        if message == "surrogate":  # e.g. a file name from os.listdir, not UTF-8 on disk
            raise ValueError("cannot read " + b"caf\xe9.txt".decode(errors="surrogateescape"))
        if message == "str fails":
            raise _StrFails
        if message == "str not text":
            raise _StrNotText
        return [], state + 1


async def test_an_exception_whose_text_cannot_be_stored_is_still_a_dead_letter(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A handler raising an exception whose text holds a lone surrogate, or whose str()
    raises or returns no str, fails only that activation: a dead letter whose error and
    traceback show what could be shown (a surrogate escaped, \\udce9), an ActivationError
    that can be printed, and the ecosystem goes on. Storing that text, or making it,
    stopped the runtime on every kind (on Postgres each worker after it, too)."""
    async with open_ecosystem() as eco:
        for message, shown in [
            ("surrogate", r"ValueError: cannot read caf\udce9.txt"),
            ("str fails", "_StrFails: <str() failed: RuntimeError: str() of this exception fails>"),
            ("str not text", "_StrNotText: <str() failed: TypeError: __str__ returned"),
        ]:
            with pytest.raises(ActivationError) as caught:
                await eco.send_sync(Mumbler("m"), message)
            assert shown in str(caught.value)
            (letter,) = await eco.dead_letters()
            assert letter.error.startswith(shown)
            if message == "surrogate":
                assert shown in letter.traceback
            await eco.discard(letter)
        assert await eco.send_sync(Mumbler("m"), "fine") == 1
    async with open_ecosystem() as eco:
        assert await eco.send_sync(Mumbler("m"), "fine") == (2 if open_ecosystem.persistent else 1)


def test_an_exception_whose_text_cannot_be_stored_is_a_dead_letter_in_simulation() -> None:
    """The same exceptions in the Simulation: a dead letter in the world, the run and the
    exploration go on (encoding the world raised CodecError, or str() raised)."""
    for message in ("surrogate", "str fails", "str not text"):
        envelopes = [(Mumbler("m"), message), (Mumbler("m"), "fine")]
        world = Simulation.run(envelopes)
        assert world.entities == {Mumbler("m"): 1}
        (letter,) = world.dead_letters
        assert letter.error.startswith(("ValueError: cannot read caf\\udce9", "_Str"))
        assert len(Simulation.exhaust(envelopes)) == 1


async def test_an_endless_outbox_fails_its_activation_and_stalls_nothing(
    open_ecosystem: OpenEcosystem,
) -> None:
    """An endless generator as the outbox is cut at MAX_OUTBOX commands: the activation
    fails with an error saying so, nothing it sent is delivered, others go on."""
    async with open_ecosystem() as eco:
        with trio.fail_after(120):
            with pytest.raises(ActivationError, match=f"{MAX_OUTBOX:,} commands"):
                await eco.send_sync(Flood("f"), "go")
            assert await eco.send_sync(Counter("other"), "inc") == 1
            await eco.settle()
        assert await eco.state_of(Counter("flooded")) == 0
        assert await eco.state_of(Flood("f")) == 0


async def test_recent_messages_are_bounded_by_bytes(open_ecosystem: OpenEcosystem) -> None:
    """Big messages are not all kept for error reports: what an entity keeps stays within
    RECENT_BYTES (the last message always kept), however many it received."""
    big = [bytes([n]) * (RECENT_BYTES // 3) for n in range(8)]
    async with open_ecosystem() as eco:
        for message in big:
            await eco.send(Fragile("f"), message)
        with pytest.raises(ActivationError) as caught:
            await eco.send_sync(Fragile("f"), "boom")
    recent = caught.value.recent_messages
    assert recent[-1] == "boom"
    assert recent[:-1] == big[-len(recent) + 1 :]  # the latest ones, in order
    assert sum(len(encode(m)) for m in recent) <= RECENT_BYTES
    assert len(recent) < len(big)


def test_followers_dropped_without_close_are_released(pachyderm_home: Any) -> None:
    """3,000 one-off peeks (follow(...).state, never closed) leave no subscription behind."""
    eco = InMemory.participate("peeks")
    eco.send_sync(Counter("c"), "inc")
    for _ in range(3_000):
        assert eco.follow(Counter("c")).state >= 1
    eco.send_sync(Counter("c"), "inc")  # a commit prunes what was released
    runtime = eco.runtime
    with runtime.lock:
        left = sum(len(subs) for subs in runtime.followers._by_entity.values())
    assert left == 0
    kept = eco.follow(Counter("c"))
    eco.send_sync(Counter("c"), "inc")
    assert kept.flush()[-1][1] == 3  # a follower still held still gets its updates
    kept.close()
