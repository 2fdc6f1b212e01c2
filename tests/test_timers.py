"""Durable timers on every live ecosystem: after, cancel, names, restarts, many timers."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
import trio

from pachyderm import ActivationError, InvalidArgumentError, ManualClock, after, cancel
from pachyderm import _layout as layout
from pachyderm._timers import WINDOW
from tests.conftest import OpenEcosystem
from tests.entities import Alarm, Recorder


async def advance(eco: Any, clock: ManualClock, seconds: float) -> None:
    """Move the manual clock and wait until what became due is processed."""
    clock.advance(seconds)
    await eco.settle()


async def test_a_timer_fires_once_its_delay_has_passed(open_ecosystem: OpenEcosystem) -> None:
    """after(delay, ...) delivers its message once the clock passes the delay, not before."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        await eco.send_sync(Alarm("a"), ("set", 10, "wake up"))
        await advance(eco, clock, 9.999)
        assert await eco.state_of(Alarm("a")) == []
        await advance(eco, clock, 0.001)
        assert await eco.state_of(Alarm("a")) == ["wake up"]
        await advance(eco, clock, 100)
        assert await eco.state_of(Alarm("a")) == ["wake up"]
        assert eco.runtime.statistics["timers_fired"] == 1


async def test_timers_fire_in_due_order(open_ecosystem: OpenEcosystem) -> None:
    """Timers due at different times deliver in due order, ties in the order they were set
    (by one process: see the README on ties set by two Postgres workers)."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        for delay, payload in [(3, "c"), (1, "a"), (2, "b1"), (2, "b2"), (0, "now")]:
            await eco.send_sync(Alarm("a"), ("set", delay, payload))
        await eco.settle()
        assert await eco.state_of(Alarm("a")) == ["now"]
        await advance(eco, clock, 5)
        assert await eco.state_of(Alarm("a")) == ["now", "a", "b1", "b2", "c"]


async def test_a_named_timer_replaces_the_pending_one(open_ecosystem: OpenEcosystem) -> None:
    """Setting a name again replaces its pending timer: only the last one fires."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        await eco.send_sync(Alarm("a"), ("set named", "reminder", 10, "first"))
        await eco.send_sync(Alarm("a"), ("set named", "reminder", 20, "second"))
        await eco.send_sync(Alarm("a"), ("set named", "other", 5, "other"))
        await advance(eco, clock, 30)
        assert await eco.state_of(Alarm("a")) == ["other", "second"]


async def test_cancel_removes_a_pending_timer(open_ecosystem: OpenEcosystem) -> None:
    """cancel(name) removes the pending timer of that name; an unknown name is a no-op."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        await eco.send_sync(Alarm("a"), ("set named", "reminder", 10, "cancelled"))
        await eco.send_sync(Alarm("a"), ("cancel", "reminder"))
        await eco.send_sync(Alarm("a"), ("cancel", "never set"))
        await advance(eco, clock, 30)
        assert await eco.state_of(Alarm("a")) == []
        # The name is free again, and works as before.
        await eco.send_sync(Alarm("a"), ("set named", "reminder", 10, "again"))
        await advance(eco, clock, 10)
        assert await eco.state_of(Alarm("a")) == ["again"]


async def test_names_are_per_entity(open_ecosystem: OpenEcosystem) -> None:
    """Two entities may have pending timers of the same name; cancelling one leaves the other."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        for entity in ("a", "b"):
            await eco.send_sync(Alarm(entity), ("set named", "reminder", 10, entity))
        await eco.send_sync(Alarm("a"), ("cancel", "reminder"))
        await advance(eco, clock, 10)
        assert await eco.state_of(Alarm("a")) == []
        assert await eco.state_of(Alarm("b")) == ["b"]


async def test_a_timer_can_deliver_to_another_entity(open_ecosystem: OpenEcosystem) -> None:
    """The timer's message goes to the address it names, in the same ecosystem."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        other = eco.participate("other")
        await eco.send_sync(Alarm("a"), ("set for", Recorder("r"), 1, "hello"))
        await advance(eco, clock, 1)
        assert await eco.state_of(Recorder("r")) == ["hello"]
        assert await other.state_of(Recorder("r")) == []


async def test_commands_apply_in_outbox_order(open_ecosystem: OpenEcosystem) -> None:
    """One activation setting then cancelling a name leaves nothing; the reverse, a timer."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        await eco.send_sync(Alarm("a"), ("set and cancel", "x"))
        await eco.send_sync(Alarm("b"), ("cancel and set", "x"))
        await advance(eco, clock, 5)
        assert await eco.state_of(Alarm("a")) == []
        assert await eco.state_of(Alarm("b")) == ["set"]
        assert eco.runtime.statistics["timers_fired"] == 1


async def test_bad_delays_fail_the_activation(open_ecosystem: OpenEcosystem) -> None:
    """A delay that is negative, not finite, absurdly long or not a number fails the activation.

    Only that activation: the ecosystem goes on.
    """
    async with open_ecosystem() as eco:
        for delay in (-1, float("nan"), float("inf"), 10**12, "10", None, True):
            with pytest.raises(ActivationError) as caught:
                await eco.send_sync(Alarm("a"), ("bad delay", delay))
            assert isinstance(caught.value.cause, InvalidArgumentError)
            assert repr(delay) in str(caught.value.cause)
        assert len(await eco.dead_letters()) == 7
        with pytest.raises(ActivationError, match="1,000 years"):
            await eco.send_sync(Alarm("a"), ("longest delay",))
        assert await eco.send_sync(Alarm("a"), ("ring", "still here")) == ["still here"]


@pytest.mark.parametrize(
    ("commands", "shown"),
    [
        ((("set named", "a\x00b", 1, "x"), ("cancel", "\x00")), "no NUL"),
        ((("set named", "n" * 257, 1, "x"), ("cancel", "\u00e9" * 129)), "at most 256 bytes"),
    ],
    ids=["NUL", "over 256 bytes"],
)
async def test_a_timer_name_postgres_cannot_store_fails_only_its_activation(
    open_ecosystem: OpenEcosystem, commands: tuple[tuple[Any, ...], ...], shown: str
) -> None:
    """A timer name with a NUL (PostgreSQL's text refuses it) or over 256 bytes in UTF-8
    (on Postgres a key of an index with the owner's address) fails the activation that
    set it, on every kind: on Postgres each once made the group's write fail and stopped
    the worker, and every worker after it."""
    async with open_ecosystem() as eco:
        for command in commands:
            with pytest.raises(ActivationError) as caught:
                await eco.send_sync(Alarm("a"), command)
            assert isinstance(caught.value.cause, InvalidArgumentError)
            assert shown in str(caught.value.cause)
        assert len(await eco.dead_letters()) == 2
        assert await eco.send_sync(Alarm("a"), ("ring", "still here")) == ["still here"]


async def test_the_longest_names_and_address_fit_together(open_ecosystem: OpenEcosystem) -> None:
    """An ecosystem id and a timer name of 256 bytes each, set by an entity whose address
    is 2,048 bytes (Postgres' limit), all poorly compressible: stored, fired and
    cancelled on every kind (on Postgres they share one index entry, which they fit)."""
    noise = random.Random(7)
    eco_id, name = noise.randbytes(128).hex(), noise.randbytes(128).hex()
    filler = noise.randbytes(1100).hex()
    entity_id = next(
        filler[:n]
        for n in range(2048, 0, -1)
        if len(layout.address_key(Alarm.entity_name, filler[:n])) <= 2048
    )
    assert len(layout.address_key(Alarm.entity_name, entity_id)) == 2048
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as store:
        eco = store.participate(eco_id)
        alarm = Alarm(entity_id)
        await eco.send_sync(alarm, ("set named", name, 5, "rang"))
        await eco.send_sync(alarm, ("set named", name, 10, "rang later"))  # replaces it
        await advance(eco, clock, 10)
        assert await eco.state_of(alarm) == ["rang later"]
        await eco.send_sync(alarm, ("set named", name, 5, "never"))
        await eco.send_sync(alarm, ("cancel", name))
        await advance(eco, clock, 10)
        assert await eco.state_of(alarm) == ["rang later"]
        assert await eco.dead_letters() == []


async def test_a_clock_far_in_the_future_stops_no_ecosystem(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A clock 10**13 seconds after the epoch (a ManualClock may be set anywhere): timers
    set then are stored and fire on time, on every kind. Their due time in microseconds
    is over a PostgreSQL bigint: it made the group's write fail and stopped the worker
    (LocalDisk clamps it to its key's range; Postgres now clamps to its column's)."""
    clock = ManualClock(10**13)
    async with open_ecosystem(clock=clock) as eco:
        await eco.send_sync(Alarm("a"), ("set named", "later", 5, "rang"))
        await eco.send_sync(Alarm("a"), ("set", 10, "rang again"))
        await advance(eco, clock, 4.5)
        assert await eco.state_of(Alarm("a")) == []
        await advance(eco, clock, 0.5)
        assert await eco.state_of(Alarm("a")) == ["rang"]
        await advance(eco, clock, 5)
        assert await eco.state_of(Alarm("a")) == ["rang", "rang again"]
        assert await eco.send_sync(Alarm("a"), ("ring", "still here"))


def test_after_and_cancel_check_their_arguments() -> None:
    """after() wants an entity address and a str name; cancel() a non-empty str."""
    with pytest.raises(InvalidArgumentError, match="entity address"):
        after(1, "alarm", "ring")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="non-empty str"):
        after(1, Alarm("a"), "ring", name="")
    with pytest.raises(InvalidArgumentError, match="non-empty str"):
        cancel(3)  # type: ignore[arg-type]
    assert after(timedelta(minutes=1), Alarm("a"), "ring").delay == 60.0


async def test_wall_clock_timers_fire_by_themselves(open_ecosystem: OpenEcosystem) -> None:
    """With the wall clock, a timer fires when its time comes, with nobody advancing anything."""
    async with open_ecosystem() as eco, eco.follow(Alarm("a")) as updates:
        await eco.send_sync(Alarm("a"), ("set", 0.05, "rang"))
        with trio.fail_after(5):
            while updates.state != ["rang"]:
                await updates.__anext__()


async def test_ten_thousand_timers_each_fire_once(open_ecosystem: OpenEcosystem) -> None:
    """10,000 timers over 1,000 entities, more than the window kept in memory: each fires once."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        async with trio.open_nursery() as nursery:
            for sender in range(100):

                async def set_timers(sender: int = sender) -> None:
                    for number in range(100):
                        timer = sender * 100 + number
                        # Due times in scrambled order, spread over 10,000 s.
                        delay = (timer * 7919) % 10_000 + 1
                        await eco.send(Alarm(timer % 1000), ("set", delay, timer))

                nursery.start_soon(set_timers)
        await eco.settle()  # every timer set before the clock moves (else it is due later)
        assert len(eco.runtime.timers) <= 2 * WINDOW  # the rest wait in storage
        for _ in range(10):
            await advance(eco, clock, 1000)
        fired: list[int] = []
        for entity in range(1000):
            rang = await eco.state_of(Alarm(entity))
            delays = [(timer * 7919) % 10_000 + 1 for timer in rang]
            assert delays == sorted(delays), entity  # in due order, per entity
            fired.extend(rang)
        assert sorted(fired) == list(range(10_000))
        assert eco.runtime.statistics["timers_fired"] == 10_000
        assert len(eco.runtime.timers) == 0


async def test_a_timer_replaced_on_every_message_keeps_memory_bounded(
    open_ecosystem: OpenEcosystem,
) -> None:
    """An idle timeout: a named timer set again on every message, due in an hour, while
    another timer is due first. The replaced ones leave memory (each stayed in the heap
    until the first of them came due: 20,000 replacements held 12 MB), and the last one
    set is the one that fires."""
    clock = ManualClock()
    async with open_ecosystem(clock=clock) as eco:
        await eco.send_sync(Alarm("early"), ("set", 10, "early"))
        for number in range(3 * WINDOW):
            await eco.send(Alarm("idle"), ("set named", "timeout", 3600, number))
        await eco.settle()
        figures = eco.runtime.timers.describe()
        assert figures["in_memory"] == 2
        assert figures["heap"] <= 2 * 2 + WINDOW + 1
        await advance(eco, clock, 3600)
        assert await eco.state_of(Alarm("early")) == ["early"]
        assert await eco.state_of(Alarm("idle")) == [3 * WINDOW - 1]
