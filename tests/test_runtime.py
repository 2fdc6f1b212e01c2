"""Behaviour of the live runtime, on every live ecosystem (InMemory and LocalDisk)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from ecosystems import InMemory, LocalDisk
from pachyderm import (
    ActivationError,
    CodecError,
    DeadLetter,
    Ecosystem,
    EcosystemClosedError,
    Entity,
    InitError,
    InvalidActivationError,
    InvalidAddressError,
    MessageTooLargeError,
    Outbox,
    OutcomeUnknownError,
    PachydermError,
    RegistrationError,
    UnknownDeadLetterError,
    UpgradeError,
    WaitingForClassError,
    register_value,
)
from simulation import Simulation
from tests.conftest import HeldWrite, OpenEcosystem
from tests.entities import (
    Counter,
    Fragile,
    Keeper,
    Misbehaving,
    Recorder,
    Relay,
    define_tally,
)


async def test_send_sync_returns_the_new_state(open_ecosystem: OpenEcosystem) -> None:
    """send_sync returns the state after the message's activation."""
    async with open_ecosystem() as eco:
        assert await eco.send_sync(Counter("a"), "inc") == 1
        assert await eco.send_sync(Counter("a"), "inc") == 2
        assert await eco.send_sync(Counter("b"), "inc") == 1


async def test_send_is_processed_after_acceptance(open_ecosystem: OpenEcosystem) -> None:
    """send returns once accepted; the message is then processed."""
    async with open_ecosystem() as eco:
        for _ in range(5):
            await eco.send(Counter("a"), "inc")
        await eco.settle()
        assert await eco.state_of(Counter("a")) == 5


async def test_state_of_an_untouched_entity_is_init(open_ecosystem: OpenEcosystem) -> None:
    """An entity that never ran has the state init() gives, and reading it stores nothing."""
    async with open_ecosystem() as eco:
        assert await eco.state_of(Counter("never")) == 0
        assert await eco.state_of(Keeper("never")) is None
        assert eco.runtime.statistics["activations"] == 0


async def test_messages_are_processed_in_acceptance_order(open_ecosystem: OpenEcosystem) -> None:
    """One entity sees its messages in the order they were accepted."""
    async with open_ecosystem() as eco:
        for n in range(50):
            await eco.send(Recorder("r"), n)
        await eco.settle()
        assert await eco.state_of(Recorder("r")) == list(range(50))


async def test_outbox_preserves_per_sender_order(open_ecosystem: OpenEcosystem) -> None:
    """Messages from one sender to one receiver arrive in send order, through an outbox too."""
    async with open_ecosystem() as eco:
        target = Recorder("target")
        for n in range(40):
            await eco.send(Relay("relay"), (target, n))
        await eco.settle()
        assert await eco.state_of(target) == list(range(40))
        assert await eco.state_of(Relay("relay")) == 40


async def test_one_activation_at_a_time_under_concurrent_senders(
    open_ecosystem: OpenEcosystem,
) -> None:
    """Concurrent senders to one entity lose no update: activations never overlap."""
    async with open_ecosystem() as eco:

        async def sender(count: int) -> None:
            for _ in range(count):
                await eco.send(Counter("shared"), "inc")

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(sender, 25)
        await eco.settle()
        assert await eco.state_of(Counter("shared")) == 500


async def test_values_keep_their_types_through_the_store(open_ecosystem: OpenEcosystem) -> None:
    """State read back equals what was sent, with the same types."""
    value = (1, [2, (3,)], {"a": (b"x", frozenset({4})), (5, 6): {7}}, Counter("c"), 2**80)
    async with open_ecosystem() as eco:
        state = await eco.send_sync(Keeper("k"), value)
        assert state == value
        assert type(state[1][1]) is tuple
        assert type(state[2]["a"][1]) is frozenset
        assert type(state[2][(5, 6)]) is set


async def test_returned_state_is_a_copy(open_ecosystem: OpenEcosystem) -> None:
    """Mutating a state send_sync returned does not change the entity."""
    async with open_ecosystem() as eco:
        state = await eco.send_sync(Recorder("r"), 1)
        state.append("intruder")
        assert await eco.send_sync(Recorder("r"), 2) == [1, 2]


async def test_failing_activation_keeps_state_even_if_mutated_in_place(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A handler that mutates its state in place and then raises leaves the state untouched."""
    async with open_ecosystem() as eco:
        assert await eco.send_sync(Fragile("f"), "inc") == {"count": 1}
        with pytest.raises(ActivationError):
            await eco.send_sync(Fragile("f"), "boom")
        assert await eco.state_of(Fragile("f")) == {"count": 1}
        assert await eco.send_sync(Fragile("f"), "inc") == {"count": 2}
    if open_ecosystem.persistent:
        async with open_ecosystem() as eco:
            assert await eco.state_of(Fragile("f")) == {"count": 2}


async def test_activation_error_carries_the_details(open_ecosystem: OpenEcosystem) -> None:
    """ActivationError names the address, message, cause and recent messages."""
    async with open_ecosystem() as eco:
        await eco.send_sync(Fragile("f"), "first")
        with pytest.raises(ActivationError) as caught:
            await eco.send_sync(Fragile("f"), "boom")
        error = caught.value
        assert error.address == Fragile("f")
        assert error.message == "boom"
        assert isinstance(error.cause, ValueError)
        assert error.__cause__ is error.cause
        assert error.recent_messages == ["first", "boom"]
        assert "Fragile('f') failed on 'boom': ValueError: boom" in str(error)


async def test_failed_message_becomes_a_dead_letter(open_ecosystem: OpenEcosystem) -> None:
    """The failing message is kept as a dead letter with its error and traceback."""
    async with open_ecosystem() as eco:
        with pytest.raises(ActivationError) as caught:
            await eco.send_sync(Fragile("f"), "boom")
        [dead] = await eco.dead_letters()
        assert isinstance(dead, DeadLetter)
        assert dead.id == caught.value.dead_letter_id
        assert (dead.address, dead.message) == (Fragile("f"), "boom")
        assert dead.error == "ValueError: boom"
        assert 'raise ValueError("boom")' in dead.traceback
        assert dead.recent_messages == ["boom"]


async def test_send_failure_also_dead_letters(open_ecosystem: OpenEcosystem) -> None:
    """A failure with no one waiting (plain send) still lands in the dead letters."""
    async with open_ecosystem() as eco:
        await eco.send(Fragile("f"), "boom")
        await eco.settle()
        assert [d.message for d in await eco.dead_letters()] == ["boom"]


async def test_redeliver_processes_a_dead_letter_again(open_ecosystem: OpenEcosystem) -> None:
    """Redelivering moves the message back to the inbox; the dead letter is gone."""
    async with open_ecosystem() as eco:
        await eco.send(Fragile("f"), "boom")
        await eco.send(Fragile("f"), "inc")
        await eco.settle()
        [dead] = await eco.dead_letters()
        await eco.redeliver(dead)
        await eco.settle()
        # "boom" fails again: a new dead letter, never two copies of one.
        [again] = await eco.dead_letters()
        assert again.id != dead.id
        assert again.recent_messages == ["boom", "inc", "boom"]
        await eco.discard(again.id)
        assert await eco.dead_letters() == []
        assert await eco.state_of(Fragile("f")) == {"count": 1}
        with pytest.raises(UnknownDeadLetterError, match="dead_letters"):
            await eco.redeliver(again)


async def test_redelivered_message_can_succeed(open_ecosystem: OpenEcosystem) -> None:
    """A dead letter redelivered after the cause is gone is applied once."""
    async with open_ecosystem() as eco:
        with pytest.raises(ActivationError):
            await eco.send_sync(Misbehaving("m"), "not a pair")
        [dead] = await eco.dead_letters()
        # The command is the same; redelivering to a fixed handler would succeed.
        # Here we check the bookkeeping: the dead letter leaves, the inbox gets it.
        await eco.redeliver(dead.id)
        await eco.settle()
        assert len(await eco.dead_letters()) == 1


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        ("not a pair", "must return a pair"),
        ("triple", "must return a pair"),
        ("unencodable state", "new state that cannot be stored"),
        ("outbox not iterable", "iterable of (address, message) pairs"),
        ("outbox item not a pair", "pair (address, message)"),
        ("outbox address not an entity", "pair (address, message)"),
        ("unencodable outbox message", "cannot be sent"),
        (("oversized outbox message", 2000), "over the limit of 1,000 bytes"),
    ],
)
async def test_invalid_activation_results_store_nothing(
    open_ecosystem: OpenEcosystem, command: Any, complaint: str
) -> None:
    """An activation returning something invalid fails clearly and stores none of it."""
    async with open_ecosystem(max_message_bytes=1000) as eco:
        assert await eco.send_sync(Misbehaving("m"), "ok") == "fine"
        with pytest.raises(ActivationError) as caught:
            await eco.send_sync(Misbehaving("m"), command)
        assert isinstance(caught.value.cause, InvalidActivationError)
        assert complaint in str(caught.value.cause)
        await eco.settle()
        assert await eco.state_of(Misbehaving("m")) == "fine"
        assert await eco.state_of(Counter("c")) == 1  # only the "ok" message got through


async def test_unencodable_message_is_refused_before_anything_is_stored(
    open_ecosystem: OpenEcosystem,
) -> None:
    """send and send_sync refuse a message that cannot be stored, naming it; nothing changes."""
    async with open_ecosystem() as eco:
        with pytest.raises(CodecError, match=r"cannot encode <object object .*builtins\.object"):
            await eco.send(Counter("c"), object())
        with pytest.raises(CodecError, match="bytearray"):
            await eco.send_sync(Counter("c"), ["ok", bytearray(b"no")])
        await eco.settle()
        assert eco.runtime.statistics["activations"] == 0
        assert await eco.state_of(Counter("c")) == 0


async def test_oversized_message_is_refused_with_the_limit(open_ecosystem: OpenEcosystem) -> None:
    """A message over max_message_bytes is refused, saying the size and the limit."""
    async with open_ecosystem(max_message_bytes=100) as eco:
        with pytest.raises(MessageTooLargeError, match="over the limit of 100 bytes"):
            await eco.send(Counter("c"), b"x" * 200)
        await eco.send(Counter("c"), b"x" * 50)
        await eco.settle()
        assert await eco.state_of(Counter("c")) == 1


async def test_sending_to_a_non_address_is_refused(open_ecosystem: OpenEcosystem) -> None:
    """Sending to something that is not an entity address says what an address is."""
    async with open_ecosystem() as eco:
        with pytest.raises(InvalidAddressError, match=r"'counter' \(a builtins.str\)"):
            await eco.send("counter", "inc")  # type: ignore[arg-type]


async def test_follower_sees_current_state_then_every_change(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A follower starts with the committed state and yields each committed change in order."""
    async with open_ecosystem() as eco:
        await eco.send_sync(Counter("c"), "inc")
        async with eco.follow(Counter("c")) as updates:
            assert updates.state == 1
            for _ in range(3):
                await eco.send(Counter("c"), "inc")
            seen = []
            async for address, state in updates:
                seen.append((address, state))
                if state == 4:
                    break
            assert seen == [(Counter("c"), 2), (Counter("c"), 3), (Counter("c"), 4)]
            assert updates.state == 4


async def test_a_follower_started_as_a_class_is_defined_again_hears_each_state_once(
    open_ecosystem: OpenEcosystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class defined again (a reload) while a group of two activations is written but
    not completed, and a follow then: it starts at the state before the group (1) and
    hears 2 and 3, not 3 from the store and then 2 and 3 again; a follower started
    before sees 1, 2, 3, never a state twice or out of order."""
    tally_class = define_tally("tests.runtime.Reloaded")
    async with open_ecosystem() as eco:
        runtime = eco.runtime
        held = HeldWrite(monkeypatch, runtime.storage)
        armed, written, proceed = held.armed, held.written, held.proceed
        tally = tally_class("t")
        first = eco.follow(tally)
        assert await eco.send_sync(tally, "x") == 1
        started: list[tuple[Any, int]] = []

        def reload_and_follow() -> None:  # (a thread: the write may hold trio's)
            written.wait(10)
            define_tally("tests.runtime.Reloaded")
            follower = runtime.subscribe(eco.id, tally)
            started.append((follower, follower.latest()))
            proceed.set()

        thread = threading.Thread(target=reload_and_follow)
        thread.start()
        armed.set()
        async with trio.open_nursery() as nursery:  # two activations in one group
            nursery.start_soon(eco.send, tally, "x")
            nursery.start_soon(eco.send, tally, "x")
        await trio.to_thread.run_sync(thread.join)
        await eco.settle()
        [(follower, start)] = started
        assert [start, *(state for _, state in follower.take_nowait())] == [1, 2, 3]
        assert [state for _, state in first.flush()] == [1, 2, 3]
        first.close()


async def test_follower_reads_your_writes(open_ecosystem: OpenEcosystem) -> None:
    """An update committed before send_sync returns is already in the follower."""
    async with open_ecosystem() as eco, eco.follow(Counter("c")) as updates:
        assert updates.state == 0
        await eco.send_sync(Counter("c"), "inc")
        assert updates.flush() == [(Counter("c"), 1)]
        assert updates.flush() == []


async def test_follower_sees_outbox_effects(open_ecosystem: OpenEcosystem) -> None:
    """A follower of a recipient sees the state its incoming outbox messages produce."""
    async with open_ecosystem() as eco, eco.follow(Recorder("r")) as updates:
        await eco.send(Relay("relay"), (Recorder("r"), "hello"))
        with trio.fail_after(5):
            assert await updates.__anext__() == (Recorder("r"), ["hello"])


async def test_slow_follower_drops_oldest_and_keeps_latest(open_ecosystem: OpenEcosystem) -> None:
    """A full follower buffer drops the oldest updates, counts them, and keeps the newest."""
    async with open_ecosystem() as eco, eco.follow(Counter("c"), buffer=3) as updates:
        for _ in range(10):
            await eco.send_sync(Counter("c"), "inc")
        assert updates.dropped == 7
        assert updates.state == 10
        assert [state for _, state in updates.flush()] == [8, 9, 10]


async def test_closed_follower_stops(open_ecosystem: OpenEcosystem) -> None:
    """Iteration over a closed follower ends, and it receives nothing more."""
    async with open_ecosystem() as eco:
        updates = eco.follow(Counter("c"))
        updates.close()
        await eco.send_sync(Counter("c"), "inc")
        assert [update async for update in updates] == []


async def test_ecosystems_are_isolated(open_ecosystem: OpenEcosystem) -> None:
    """Entities, followers and dead letters of one ecosystem never cross into another."""
    async with open_ecosystem() as eco:
        other = eco.participate("other")
        async with other.follow(Counter("c")) as other_updates:
            assert await eco.send_sync(Counter("c"), "inc") == 1
            assert await other.send_sync(Counter("c"), "inc") == 1
            assert await eco.send_sync(Counter("c"), "inc") == 2
            await eco.send(Fragile("f"), "boom")
            await eco.settle()
            assert other_updates.flush() == [(Counter("c"), 1)]
        assert len(await eco.dead_letters()) == 1
        assert await other.dead_letters() == []
        assert await other.state_of(Counter("c")) == 1


async def test_idle_entities_are_passivated_and_keep_their_state(
    open_ecosystem: OpenEcosystem,
) -> None:
    """Beyond max_resident, idle entities leave memory; their state comes back from the store."""
    async with open_ecosystem(max_resident=10) as eco:
        for n in range(100):
            await eco.send(Counter(n), "inc")
        await eco.settle()
        for n in range(100):
            assert await eco.send_sync(Counter(n), "inc") == 2
        assert eco.runtime.statistics["passivated"] >= 90
        assert len(eco.runtime.residents) <= 10 + 1


async def test_closed_ecosystem_refuses_work(open_ecosystem: OpenEcosystem) -> None:
    """Using an ecosystem after its store closed raises EcosystemClosedError."""
    async with open_ecosystem() as eco:
        pass
    with pytest.raises(EcosystemClosedError, match="closed"):
        await eco.send(Counter("c"), "inc")


async def test_events_are_logged(open_ecosystem: OpenEcosystem) -> None:
    """Failures are logged as structured events with the address and error."""
    async with open_ecosystem() as eco:
        with capture_logs() as logs:
            await eco.send(Fragile("f"), "boom")
            await eco.settle()
    failures = [entry for entry in logs if entry["event"] == "activation.failed"]
    assert len(failures) == 1
    assert failures[0]["address"] == Fragile("f")
    assert failures[0]["error"] == "ValueError: boom"
    assert failures[0]["log_level"] == "warning"


async def test_activations_and_recovery_are_logged(open_ecosystem: OpenEcosystem) -> None:
    """Each activation is a debug event; opening a store reports what it found pending."""
    with capture_logs() as logs:
        async with open_ecosystem() as eco:
            await eco.send_sync(Relay("relay"), (Counter("c"), "inc"))
            await eco.settle()
    opened = [entry for entry in logs if entry["event"] == "store.opened"]
    assert opened[0]["pending_messages"] == 0
    activations = [entry for entry in logs if entry["event"] == "activation"]
    assert [(a["address"], a["sent"]) for a in activations] == [
        (Relay("relay"), 1),
        (Counter("c"), 0),
    ]
    assert {a["log_level"] for a in activations} == {"debug"}


async def test_a_failed_write_stops_the_ecosystem(open_ecosystem: OpenEcosystem) -> None:
    """If the store refuses a write, the caller hears of it and the ecosystem stops."""

    async def use_until_the_store_breaks() -> None:
        async with open_ecosystem() as eco:
            assert await eco.send_sync(Counter("c"), "inc") == 1
            eco.runtime.storage.close()  # the store goes away underneath the runtime
            # A write that failed may or may not have reached the disk:
            with pytest.raises(OutcomeUnknownError, match="may or may not be stored"):
                await eco.send_sync(Counter("c"), "inc")
            with pytest.raises(EcosystemClosedError):
                await eco.send(Counter("c"), "inc")

    with pytest.raises(EcosystemClosedError, match="writing to the store failed"):
        await use_until_the_store_breaks()
    if open_ecosystem.persistent:
        async with open_ecosystem() as eco:
            assert await eco.state_of(Counter("c")) == 1


async def test_a_caller_whose_message_was_stored_is_never_told_to_send_it_again(
    open_ecosystem: OpenEcosystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send_sync whose message was stored in one group, and whose activation was in
    the open group when a write failed (the disk full, say), hears OutcomeUnknownError
    (it is applied at the next open), not EcosystemClosedError (nothing happened, send
    again): sending again would apply it twice."""
    armed, held, proceed = threading.Event(), threading.Event(), threading.Event()
    answers: dict[Any, BaseException | int] = {}

    async def answered(eco: Ecosystem, address: Counter) -> None:
        try:
            answers[address.id] = await eco.send_sync(address, "inc")
        except PachydermError as error:
            answers[address.id] = error

    async def until_the_disk_fills() -> None:
        async with open_ecosystem() as eco:
            runtime = eco.runtime
            storage_class = type(runtime.storage)
            write = storage_class.write

            def full_disk(storage: Any, batch: Any, *, sync: bool) -> None:
                if armed.is_set():
                    held.set()
                    proceed.wait(10)
                    raise OSError(28, "No space left on device")
                write(storage, batch, sync=sync)

            monkeypatch.setattr(storage_class, "write", full_disk)
            async with trio.open_nursery() as nursery:
                runtime.pause()
                nursery.start_soon(answered, eco, Counter("c"))
                await trio.testing.wait_all_tasks_blocked()  # its message accepted...
                await eco.send(Counter("flush"), "inc")  # ...and stored (written in order)
                armed.set()
                nursery.start_soon(answered, eco, Counter("other"))  # its write held, to fail
                await trio.to_thread.run_sync(held.wait, 10)
                runtime.resume()  # the caller's activation joins the open group
                with trio.fail_after(10):
                    while runtime.commit.open.carried == []:
                        await trio.sleep(0.01)
                proceed.set()

    with pytest.raises(EcosystemClosedError, match="writing to the store failed"):
        await until_the_disk_fills()
    monkeypatch.undo()
    answer = answers["c"]
    if open_ecosystem.persistent:
        assert isinstance(answer, OutcomeUnknownError), answer
        assert "Do not send it again" in str(answer)
        async with open_ecosystem() as eco:
            await eco.settle()
            assert await eco.state_of(Counter("c")) == 1
    else:  # the store's memory, and the message, are gone
        assert isinstance(answer, EcosystemClosedError), answer


class Refuser(Entity[Any, int]):
    """Fails on every message."""

    entity_name = "tests.runtime.Refuser"

    def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
        raise ValueError("refused")


async def test_a_log_event_the_renderer_cannot_take_never_stops_the_store(
    open_ecosystem: OpenEcosystem,
) -> None:
    """With structlog rendering JSON, a failed message that JSON cannot take (a dict with
    tuple keys) is logged with its fields as text, and the store goes on (it stopped,
    and stopped again at every open, while the message waited in the inbox)."""
    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(out),
    )
    async with open_ecosystem() as eco:
        with pytest.raises(ActivationError, match="refused"):
            await eco.send_sync(Refuser("r"), {("a", 1): "tuple key"})
        assert await eco.send_sync(Counter("c"), "inc") == 1
    [failed] = [
        json.loads(line) for line in out.getvalue().splitlines() if "activation.failed" in line
    ]
    assert failed["message"] == "{('a', 1): 'tuple key'}"


EMPTY_CART: dict[str, int] = {}


class Cart(Entity[Any, dict[str, int]]):
    """Adds items in place; "clear" returns a module's constant (shared by every cart)."""

    entity_name = "tests.runtime.Cart"

    def init(self) -> dict[str, int]:
        return {}

    def activate(self, message: Any, state: dict[str, int]) -> tuple[Outbox, dict[str, int]]:
        if message == "clear":
            return [], EMPTY_CART
        state[message] = state.get(message, 0) + 1
        return [], state


async def test_a_state_returned_shared_is_never_shared_between_entities(
    open_ecosystem: OpenEcosystem,
) -> None:
    """Two carts cleared to one module constant, then each adding in place: each has
    its own items, as the Simulation says, and the constant stays empty (the runtime
    kept the returned object itself: the carts shared one dict)."""
    alice, bob = Cart("alice"), Cart("bob")
    messages = [(alice, "clear"), (bob, "clear"), (alice, "apple"), (bob, "pear")]
    async with open_ecosystem() as eco:
        for address, message in messages:
            await eco.send_sync(address, message)
        assert await eco.state_of(alice) == {"apple": 1}
        assert await eco.state_of(bob) == {"pear": 1}
    assert EMPTY_CART == {}
    assert Simulation.run(messages).entities == {alice: {"apple": 1}, bob: {"pear": 1}}


async def test_the_trio_face_called_from_another_run_is_refused_and_stalls_nothing(
    open_ecosystem: OpenEcosystem,
) -> None:
    """The trio face awaited from another thread's trio run, or from asyncio, is refused
    before anything happens (it failed halfway, the message run but its write never
    started: every later call and the close hung); the store goes on."""
    async with open_ecosystem() as eco:
        refusals = []

        def elsewhere() -> None:
            for run in (
                lambda: trio.run(eco.send_sync, Counter("c"), "inc"),
                lambda: trio.run(eco.send, Counter("c"), "inc"),
                lambda: asyncio.run(eco.send_sync(Counter("c"), "inc")),
                lambda: trio.run(eco.settle),
            ):
                try:
                    run()
                except PachydermError as error:
                    refusals.append(str(error))

        await trio.to_thread.run_sync(elsewhere)
        assert len(refusals) == 4
        assert all("belongs to the trio run that opened it" in text for text in refusals)
        with trio.fail_after(10):
            assert await eco.send_sync(Counter("c"), "inc") == 1


async def test_an_entity_stored_under_a_former_name_is_refused_not_started_again(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A class renamed (former_names holding the old name) finds none of its entities'
    state under the new name: state_of and its activations say so, rather than start
    them again from init() beside their stored state; named back, all is there."""
    async with open_ecosystem() as eco:
        shop = define_tally("tests.runtime.Shop")
        for _ in range(3):
            await eco.send_sync(shop("s"), "x")
        renamed = define_tally("tests.runtime.Till", ("tests.runtime.Shop",))
        with pytest.raises(
            RegistrationError, match=r"under its former name 'tests\.runtime\.Shop'"
        ):
            await eco.state_of(renamed("s"))
        with pytest.raises(ActivationError, match=r"Set entity_name = 'tests\.runtime\.Shop'"):
            await eco.send_sync(renamed("s"), "x")
        assert await eco.state_of(renamed("new")) == 0  # nothing stored: a new entity
        shop = define_tally("tests.runtime.Shop")
        assert await eco.send_sync(shop("s"), "x") == 4


async def test_recent_messages_are_the_last_ten(open_ecosystem: OpenEcosystem) -> None:
    """An ActivationError lists at most the last ten messages, ending with the failing one."""
    async with open_ecosystem() as eco:
        for n in range(15):
            await eco.send(Fragile("f"), n)
        with pytest.raises(ActivationError) as caught:
            await eco.send_sync(Fragile("f"), "boom")
        assert caught.value.recent_messages == [*range(6, 15), "boom"]


async def test_paused_runtime_accepts_and_resumes(open_ecosystem: OpenEcosystem) -> None:
    """While paused, messages are accepted but not run; resume runs them in order."""
    async with open_ecosystem() as eco:
        eco.runtime.pause()
        for n in range(3):
            await eco.send(Recorder("r"), n)
        await eco.settle()
        assert await eco.state_of(Recorder("r")) == []
        eco.runtime.resume()
        await eco.settle()
        assert await eco.state_of(Recorder("r")) == [0, 1, 2]


async def test_message_for_idle_entity_naming_unknown_class_waits(
    open_ecosystem: OpenEcosystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send to an idle entity whose message names an unregistered class waits, then runs.

    Sends to idle entities activate in the sender's step; this one cannot be
    decoded, so it must land in the inbox (not be lost, not dead-lettered),
    keep its place ahead of later messages, and run once the class registers.
    """
    from pachyderm import Entity
    from pachyderm._entity import entity_classes

    class Vanishing(Entity[Any, Any]):
        entity_name = "tests.Vanishing"

    address = Vanishing("x")
    monkeypatch.delitem(entity_classes._by_name, "tests.Vanishing")
    with trio.fail_after(10):
        async with open_ecosystem() as eco:
            await eco.send(Recorder("r"), address)
            await eco.send(Recorder("r"), "after")
            await eco.settle()
            assert await eco.state_of(Recorder("r")) == []
            assert await eco.dead_letters() == []

            class Vanishing(Entity[Any, Any]):  # type: ignore[no-redef]  # registers it again
                entity_name = "tests.Vanishing"

            async with eco.follow(Recorder("r")) as updates:
                while updates.state != [Vanishing("x"), "after"]:
                    await updates.__anext__()


async def test_cancelled_send_keeps_its_message(open_ecosystem: OpenEcosystem) -> None:
    """A send cancelled while it waits for durability: the message stays accepted, once.

    Cancellation can only stop the wait: the message is in the open group by
    then, so it is written and processed exactly once, and the group's other
    waiters are still woken.
    """
    async with open_ecosystem() as eco:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(eco.send, Counter("c"), "inc")  # shares the group
            with trio.CancelScope() as scope:
                scope.cancel()  # delivered at the send's first checkpoint: its sleep
                await eco.send(Counter("c"), "inc")
            assert scope.cancelled_caught
        await eco.send(Counter("c"), "inc")
        await eco.settle()
        assert await eco.state_of(Counter("c")) == 3
        assert eco.runtime.statistics["activations"] == 3


class BadInit(Entity[Any, Any]):
    """Its init() raises."""

    entity_name = "tests.runtime.BadInit"

    def init(self) -> Any:
        raise ValueError("no initial state")


async def test_a_failing_init_is_a_failed_activation_naming_the_message(
    open_ecosystem: OpenEcosystem,
) -> None:
    """init() raising fails that activation like activate() would, naming entity, hook, cause."""
    async with open_ecosystem() as eco:
        with pytest.raises(ActivationError) as caught:
            await eco.send_sync(BadInit("b"), "hello")
        assert caught.value.message == "hello"
        assert isinstance(caught.value.cause, InitError)
        assert (
            "BadInit('b') failed on 'hello': InitError: BadInit('b'): BadInit.init() failed, "
            "so the entity has no initial state: ValueError: no initial state"
        ) in str(caught.value)
        [letter] = await eco.dead_letters()
        assert letter.message == "hello"
        assert "BadInit.init() failed" in letter.error
        with pytest.raises(InitError, match=r"BadInit\('b'\).*ValueError: no initial state"):
            await eco.state_of(BadInit("b"))
        assert await eco.send_sync(Counter("c"), "inc") == 1  # the ecosystem goes on


FAILED = "(carrying out a transition|writing to the store) failed"


async def test_a_store_that_cannot_be_read_stops_the_runtime_not_the_message(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A failed read stops the runtime: no dead letter, nothing half written, the cause named."""

    async def read_from_a_closed_store() -> None:
        async with open_ecosystem() as eco:
            assert await eco.send_sync(Counter("c"), "inc") == 1
            eco.runtime.storage.close()  # reads fail from now on
            # (Where a state still to be read waits in the run queue, as on Postgres, the
            # message's acceptance may be in a group being written as the runtime stops,
            # and that write may be what fails first.)
            with pytest.raises((EcosystemClosedError, OutcomeUnknownError), match=FAILED):
                await eco.send_sync(Counter("never loaded"), "inc")

    with pytest.raises(EcosystemClosedError, match=f"stopped: {FAILED}"):
        await read_from_a_closed_store()
    if open_ecosystem.persistent:
        async with open_ecosystem() as eco:
            assert await eco.dead_letters() == []
            assert await eco.state_of(Counter("never loaded")) == 0
            assert await eco.state_of(Counter("c")) == 1


async def test_a_store_that_cannot_be_read_for_a_queued_message_stops_the_runtime(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A failed read for a message waiting in the run queue stops the runtime as one in
    the sender's step does: the cause named, no dead letter, nothing half written."""

    async def read_from_a_closed_store() -> None:
        async with open_ecosystem() as eco:
            assert await eco.send_sync(Counter("c"), "inc") == 1
            eco.runtime.pause()
            await eco.send(Counter("queued"), "inc")  # waits in the run queue
            eco.runtime.storage.close()  # reads fail from now on
            eco.runtime.resume()
            with trio.fail_after(10):
                await eco.runtime.wait_stopped()

    with pytest.raises(EcosystemClosedError, match=f"stopped: {FAILED}"):
        await read_from_a_closed_store()
    if open_ecosystem.persistent:
        async with open_ecosystem() as eco:
            assert await eco.dead_letters() == []
            assert await eco.state_of(Counter("c")) == 1


async def test_app_threads_holding_all_of_trios_threads_do_not_stall_the_runtime(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A trio app's worker threads, as many as trio's default limit, each waiting on a
    send_sync through trio.from_thread: the runtime's own thread work (its writes,
    reads and news) does not queue behind them, and every call returns."""
    async with open_ecosystem() as eco:
        total = int(trio.to_thread.current_default_thread_limiter().total_tokens)
        results: list[int] = []

        def call(n: int) -> int:
            state: int = trio.from_thread.run(eco.send_sync, Counter(f"t{n}"), "inc")
            return state

        async def one(n: int) -> None:
            results.append(await trio.to_thread.run_sync(call, n))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(total):
                    nursery.start_soon(one, n)
        assert results == [1] * total


async def test_a_redefined_class_runs_for_resident_entities(
    open_ecosystem: OpenEcosystem,
) -> None:
    """Redefining a class (same module and qualname: a REPL) runs the new activate, state kept."""

    class Tally(Entity[Any, int]):
        entity_name = "tests.runtime.Tally"

        def init(self) -> int:
            return 0

        def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
            return [], state + 1

    async with open_ecosystem() as eco:
        assert await eco.send_sync(Tally("t"), "add") == 1  # resident now

        class Tally(Entity[Any, int]):  # type: ignore[no-redef]  # the REPL case
            entity_name = "tests.runtime.Tally"

            def init(self) -> int:
                return 0

            def activate(self, message: Any, state: int) -> tuple[Outbox, int]:
                return [], state + 100

        assert await eco.send_sync(Tally("t"), "add") == 101
        assert await eco.send_sync(Tally("u"), "add") == 100


def test_a_redefined_class_runs_on_the_shell_face(pachyderm_home: Path) -> None:
    """The shell face (a REPL's) runs a redefined class at once, for resident entities too.

    The version goes up with an upgrade(): the resident's state is read again
    through the new class, so the upgrade runs before the new activate.
    """

    class Note(Entity[Any, Any]):
        entity_name = "tests.runtime.Note"

        def init(self) -> int:
            return 0

        def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
            return [], state + 1

    for kind in (InMemory, LocalDisk):
        assert kind.send_sync(Note("n"), "add") == 1
        assert kind.send_sync(Note("n"), "add") == 2
    old_address = Note("n")

    class Note(Entity[Any, Any]):  # type: ignore[no-redef]
        entity_name = "tests.runtime.Note"
        version = 2

        def init(self) -> dict[str, int]:
            return {"count": 0}

        def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
            return [], {"count": state["count"] + 10}

        def upgrade(self, state: Any, from_version: int) -> dict[str, int]:
            return {"count": state}

    for kind in (InMemory, LocalDisk):
        assert kind.send_sync(Note("n"), "add") == {"count": 12}
        # An address made before the redefinition runs the newest class too.
        assert kind.send_sync(old_address, "add") == {"count": 22}


async def test_a_failing_upgrade_names_entity_versions_and_cause(
    open_ecosystem: OpenEcosystem,
) -> None:
    """upgrade() raising: the error names the entity, the hook, both versions and the cause.

    The stored state stays as it was, and the message waits as a dead letter.
    """

    class Ledger(Entity[Any, Any]):
        entity_name = "tests.runtime.Ledger"

        def init(self) -> int:
            return 0

        def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
            return [], state + 1

    async with open_ecosystem() as eco:
        assert await eco.send_sync(Ledger("l"), "add") == 1
    if not open_ecosystem.persistent:
        return  # the state is gone with the store: nothing to upgrade

    class Ledger(Entity[Any, Any]):  # type: ignore[no-redef]
        entity_name = "tests.runtime.Ledger"
        version = 3

        def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
            return [], state

        def upgrade(self, state: Any, from_version: int) -> Any:
            raise KeyError("balance")

    expected = (
        r"Ledger\('l'\): \S*Ledger.upgrade\(state, from_version=1\) failed, upgrading the state "
        r"stored by version 1 to version 3: KeyError: 'balance'"
    )
    async with open_ecosystem() as eco:
        with pytest.raises(UpgradeError, match=expected):
            await eco.state_of(Ledger("l"))
        with pytest.raises(ActivationError, match=expected) as caught:
            await eco.send_sync(Ledger("l"), "add")
        assert isinstance(caught.value.cause, UpgradeError)
        assert caught.value.message == "add"
        [letter] = await eco.dead_letters()
        assert letter.message == "add"


SHARED_START: list[Any] = []
"""What Sharer.init() returns: one module-level list, the trap of item 19."""


class Sharer(Entity[Any, list[Any]]):
    """Starts from a module-level list and appends to its state in place."""

    entity_name = "tests.runtime.Sharer"

    def init(self) -> list[Any]:
        return SHARED_START

    def activate(self, message: Any, state: list[Any]) -> tuple[Outbox, list[Any]]:
        state.append(message)
        return [], state


async def test_init_returning_a_shared_object_does_not_leak_between_entities(
    open_ecosystem: OpenEcosystem,
) -> None:
    """Each entity starts from its own copy of init()'s state, even a shared mutable one."""
    async with open_ecosystem() as eco:
        assert await eco.send_sync(Sharer("a"), "a1") == ["a1"]
        assert await eco.send_sync(Sharer("b"), "b1") == ["b1"]
        await eco.send(Sharer("a"), "a2")
        await eco.send(Sharer("b"), "b2")
        await eco.settle()
        assert await eco.state_of(Sharer("a")) == ["a1", "a2"]
        assert await eco.state_of(Sharer("b")) == ["b1", "b2"]
        fresh = await eco.state_of(Sharer("never"))
        assert fresh == []
        fresh.append("mine")  # a caller changing what it read changes no entity's start
        assert await eco.send_sync(Sharer("c"), "c1") == ["c1"]
    assert SHARED_START == []


def test_init_returning_a_shared_object_does_not_leak_in_the_simulation() -> None:
    """The simulation, through the same step, also gives each entity its own initial state."""
    world = Simulation.run([(Sharer("a"), "a1"), (Sharer("b"), "b1"), (Sharer("a"), "a2")])
    assert world.entities == {Sharer("a"): ["a1", "a2"], Sharer("b"): ["b1"]}
    assert SHARED_START == []


async def test_a_redefined_value_type_reaches_resident_states(
    open_ecosystem: OpenEcosystem,
) -> None:
    """A value type defined again: a resident entity's state holds the new class's instances."""

    @register_value(name="tests.runtime.Spot")
    @dataclass(frozen=True)
    class Spot:
        x: int

    newest: list[type] = [Spot]  # which class the handler is to find in its state

    class Holder(Entity[Any, Any]):
        entity_name = "tests.runtime.Holder"

        def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
            if message == "look":
                return [], (type(state) is newest[0], state)
            return [], message

    async with open_ecosystem() as eco:
        assert await eco.send_sync(Holder("h"), Spot(1)) == Spot(1)  # resident, holding it

        @register_value(name="tests.runtime.Spot")  # the REPL case: defined again
        @dataclass(frozen=True)
        class Spot:  # type: ignore[no-redef]
            x: int

        newest[0] = Spot
        found_newest, _ = await eco.send_sync(Holder("h"), "look")
        assert found_newest


@pytest.mark.parametrize("paused", [True, False], ids=["paused", "racing"])
async def test_close_tells_refused_calls_from_unknown_outcomes(
    open_ecosystem: OpenEcosystem, paused: bool
) -> None:
    """send_sync calls cut short by close: EcosystemClosedError only when nothing was applied.

    A call that returned was applied once; one that raised EcosystemClosedError
    (safe to retry) not at all; one that raised OutcomeUnknownError at most
    once, and, where the store keeps its inboxes, once after reopening.
    ``paused``: every caller's message surely waits, accepted, in an inbox when
    the store closes; ``racing``: callers send as fast as they can meanwhile.
    """
    callers = 8
    addresses = [Recorder(("close", n)) for n in range(callers)]
    outcomes: dict[tuple[int, int], str] = {}
    warm = [0]
    warmed_up = trio.Event()

    async def caller(eco: Ecosystem, number: int) -> None:
        for message in itertools.count():
            if message == 5:
                warm[0] += 1
                if warm[0] == callers:
                    warmed_up.set()
            try:
                await eco.send_sync(addresses[number], message)
            except OutcomeUnknownError:
                outcomes[number, message] = "unknown"
                return
            except EcosystemClosedError:
                outcomes[number, message] = "refused"
                return
            outcomes[number, message] = "returned"

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, open_ecosystem() as eco:
            followers = [eco.follow(address, buffer=100_000) for address in addresses]
            for number in range(callers):
                nursery.start_soon(caller, eco, number)
            await warmed_up.wait()
            if paused:
                eco.runtime.pause()
                table = eco.runtime.residents.table
                idents = [(eco.id, a.entity_name, a.id) for a in addresses]
                # Each caller's next message accepted, waiting in its inbox:
                while sum(len(table[ident].inbox) for ident in idents) < callers:
                    await trio.sleep(0.001)
            # Leaving the block closed the store, with the callers' calls in flight.
        with pytest.raises(EcosystemClosedError):
            await eco.send_sync(addresses[0], "after close")  # refused: not OutcomeUnknownError
        if paused:  # the messages waiting were accepted, never applied
            kinds = {outcome for outcome in outcomes.values() if outcome != "returned"}
            assert kinds == {"unknown" if open_ecosystem.persistent else "refused"}
        if open_ecosystem.persistent:
            async with open_ecosystem() as eco:
                await eco.settle()
                finals = [await eco.state_of(address) for address in addresses]
        else:  # gone with the store: its last committed states are the followers' latest
            finals = [follower.state for follower in followers]
    for (number, message), outcome in outcomes.items():
        applied = finals[number].count(message)
        if outcome == "returned" or (outcome == "unknown" and open_ecosystem.persistent):
            assert applied == 1, (number, message, outcome, finals[number])
        elif outcome == "refused":
            assert applied == 0, (number, message, outcome, finals[number])
        else:
            assert applied <= 1, (number, message, outcome, finals[number])


async def test_send_sync_of_a_message_waiting_for_its_class_says_so(
    open_ecosystem: OpenEcosystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send_sync raises WaitingForClassError when its message must wait for a class.

    Whether its own message names the unregistered class, its entity already
    waits, or an earlier message in its inbox parks it: the caller is told
    instead of waiting forever, and every message is applied once, in order,
    when the class registers.
    """
    from pachyderm._entity import entity_classes

    class Vanishing(Entity[Any, Any]):
        entity_name = "tests.runtime.Vanishing"

    address = Vanishing("x")
    monkeypatch.delitem(entity_classes._by_name, "tests.runtime.Vanishing")
    with trio.fail_after(20):
        async with open_ecosystem() as eco:
            with pytest.raises(
                WaitingForClassError, match=r"'tests\.runtime\.Vanishing'"
            ) as caught:
                await eco.send_sync(Recorder("r"), address)  # its own message
            assert caught.value.address == Recorder("r")
            assert caught.value.name == "tests.runtime.Vanishing"
            with pytest.raises(WaitingForClassError):
                await eco.send_sync(Recorder("r"), "after")  # the entity waits already
            eco.runtime.pause()
            await eco.send(Recorder("q"), address)
            table = eco.runtime.residents.table
            ident = (eco.id, Recorder("q").entity_name, Recorder("q").id)

            async def behind() -> None:
                with pytest.raises(WaitingForClassError):
                    await eco.send_sync(Recorder("q"), "behind")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(behind)
                while len(table[ident].inbox) < 2:  # both accepted, neither run
                    await trio.sleep(0.001)
                eco.runtime.resume()  # the first parks the entity, with "behind" queued
            assert await eco.dead_letters() == []

            class Vanishing(Entity[Any, Any]):  # type: ignore[no-redef]  # registers it again
                entity_name = "tests.runtime.Vanishing"

            for recorder, expected in (
                (Recorder("r"), [Vanishing("x"), "after"]),
                (Recorder("q"), [Vanishing("x"), "behind"]),
            ):
                async with eco.follow(recorder) as updates:
                    while updates.state != expected:
                        await updates.__anext__()
            await eco.settle()
            assert await eco.state_of(Recorder("r")) == [Vanishing("x"), "after"]


LATE_MODULE = """
import time

from pachyderm import Entity


class Late(Entity):
    entity_name = "tests.runtime.Late"

    def init(self):
        return 0

    def activate(self, message, state):
        return [], bump(state)


time.sleep(0.3)  # the rest of the module: more imports, more definitions


def bump(state):
    return state + 1
"""


async def test_waiting_messages_run_once_their_class_module_is_imported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Messages waiting for a class run after the import of its module, not midway.

    The class registers as its class statement runs; what its activate() calls
    may be defined further down the module. Run at once, the waiting messages
    failed with NameError and became dead letters.
    """
    import importlib
    import sys

    from pachyderm._entity import entity_classes

    class Late(Entity[Any, Any]):  # a stand-in, to store messages for the class
        entity_name = "tests.runtime.Late"

    store = str(tmp_path / "store")
    (tmp_path / "late_entities.py").write_text(LATE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_entities", raising=False)
    with trio.fail_after(20):
        async with LocalDisk.open(store) as eco:
            eco.runtime.pause()
            for _ in range(3):
                await eco.send(Late("x"), "inc")  # accepted, left in the inbox
        monkeypatch.delitem(entity_classes._by_name, "tests.runtime.Late")
        async with LocalDisk.open(store) as eco:  # the class is not registered: they wait
            module = await trio.to_thread.run_sync(importlib.import_module, "late_entities")
            while await eco.state_of(module.Late("x")) < 3 and not await eco.dead_letters():
                await trio.sleep(0.01)  # (settle does not count messages waiting for a class)
            assert await eco.dead_letters() == []
            assert await eco.state_of(module.Late("x")) == 3
    sys.modules.pop("late_entities", None)


async def test_an_error_raised_in_the_block_comes_out_as_raised() -> None:
    """The block runs inside the runtime's nursery: its error comes out of open() alone,
    not in a group, with the cause and context it was raised with (the group was made
    its context, and the error it was handling hidden)."""

    known: dict[str, int] = {}

    async def handling_an_error() -> None:
        async with InMemory.open():
            try:
                known["missing"]
            except KeyError:
                raise ValueError("in the block")  # noqa: B904 (its context is the point)

    with pytest.raises(ValueError, match="in the block") as handling:
        await handling_an_error()
    assert isinstance(handling.value.__context__, KeyError)
    assert not handling.value.__suppress_context__
    cause = OSError("the cause")
    with pytest.raises(ValueError) as caused:
        async with InMemory.open():
            raise ValueError("from a cause") from cause
    assert caused.value.__cause__ is cause
    assert caused.value.__suppress_context__


class _Verbose(Exception):
    def __str__(self) -> str:
        return "start " + "E" * 1_000_000 + " end"


class _Talker(Entity[Any, int]):
    entity_name = "tests.runtime.Talker"

    def activate(self, message: Any, state: Any) -> tuple[Outbox, int]:
        raise _Verbose()


def test_an_exception_with_a_huge_text_makes_a_dead_letter_of_bounded_size() -> None:
    """A handler's exception text is user code's: one of a megabyte is kept as its start
    and its end, saying how much is left out, in the dead letter's error and traceback
    and in the ActivationError (a 50 MB one made a 100 MB dead letter)."""
    with pytest.raises(ActivationError) as caught:
        InMemory.send_sync(_Talker("t"), "x")
    try:
        [letter] = InMemory.dead_letters()
        for text in (letter.error, letter.traceback, str(caught.value)):
            assert len(text) < 11_000
            assert "characters left out" in text
        assert letter.error.startswith("_Verbose: start EEE")
        assert letter.error.endswith("EEE end")
        assert letter.traceback.rstrip().endswith("EEE end")
    finally:
        InMemory.close()
