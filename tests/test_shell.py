"""The shell face: blocking verbs from ordinary threads, on every live ecosystem."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from ecosystems import InMemory, LocalDisk
from pachyderm import (
    ActivationError,
    CodecError,
    DeadLetter,
    EcosystemClosedError,
    EcosystemKind,
    Entity,
    InvalidArgumentError,
    Outbox,
    OutcomeUnknownError,
    PachydermError,
    ShellEcosystem,
    UnknownDeadLetterError,
)
from pachyderm._dispatch import Dispatcher
from tests.conftest import HeldWrite
from tests.entities import Counter, Fragile, Recorder, Relay, define_tally

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shell(kind: EcosystemKind, pachyderm_home: Path) -> EcosystemKind:
    """A kind whose shell face starts fresh (a new $PACHYDERM_HOME; InMemory reset)."""
    return kind


def test_send_sync_and_follow(shell: EcosystemKind) -> None:
    """The shell verbs mirror the quickstart: send_sync, follow, flush, get."""
    assert shell.send_sync(Counter("c"), "inc") == 1
    follower = shell.follow(Counter("c"))
    assert follower.state == 1
    assert shell.send_sync(Counter("c"), "inc") == 2
    assert follower.flush() == [(Counter("c"), 2)]
    shell.send(Counter("c"), "inc")
    assert follower.get(timeout=5) == (Counter("c"), 3)
    follower.close()


def test_a_class_defined_again_never_shows_a_state_not_yet_durable(
    shell: EcosystemKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class defined again while a group is written (state 2, held), and an activation
    then (state 3, in the open group): state_of says 1, the durable state, and a follower
    starts at 1 and hears 2 and 3, each once (the reloaded entity took 2 as durable)."""
    tally = define_tally("tests.shell.Tally")("t")
    eco = shell.connect()
    assert eco.send_sync(tally, "x") == 1
    held = HeldWrite(monkeypatch, eco.runtime.storage)
    armed, written, proceed = held.armed, held.written, held.proceed
    armed.set()
    second = threading.Thread(target=eco.send_sync, args=(tally, "x"))
    second.start()
    assert written.wait(10)
    reloaded = define_tally("tests.shell.Tally")("t")
    third = threading.Thread(target=eco.send, args=(reloaded, "x"))
    third.start()
    deadline = time.monotonic() + 10
    while not eco.runtime.commit.open.activations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert eco.state_of(reloaded) == 1
    follower = eco.follow(reloaded)
    assert follower.state == 1
    proceed.set()
    second.join(10)
    third.join(10)
    eco.settle()
    assert [state for _, state in follower.flush()] == [2, 3]
    follower.close()


def test_close_after_a_failure_waits_until_the_store_is_released(
    shell: EcosystemKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store stopped by a fault while carrying out a transition (its store still open),
    then close() and connect(): the store opens again at once, ten times over (close()
    returned before the stopped store was released, and connect() found it still open:
    StoreLockedError)."""
    for trial in range(10):
        counter = Counter(f"c{trial}")
        eco = shell.connect()
        eco.send_sync(counter, "inc")
        with monkeypatch.context() as patch:
            patch.setattr(Dispatcher, "_dead_letter", _broken)
            with pytest.raises(PachydermError, match="carrying out a transition failed"):
                eco.send_sync(Fragile("f"), "boom")
            shell.close()
        kept = 0 if shell is InMemory else 1  # (InMemory's store goes with its close)
        assert shell.connect().state_of(counter) == kept
        shell.close()


def _broken(*arguments: object) -> None:
    raise RuntimeError("a fault in the runtime")


def test_follower_get_times_out_and_iteration_ends_on_close(shell: EcosystemKind) -> None:
    """get(timeout) raises TimeoutError when nothing comes; iteration ends when closed."""
    with shell.follow(Recorder("r")) as follower:
        with pytest.raises(TimeoutError, match="no update"):
            follower.get(timeout=0.05)
        received: list[tuple[Entity[Any, list[Any]], list[Any]]] = []

        def consume() -> None:
            received.extend(follower)

        consumer = threading.Thread(target=consume)
        consumer.start()
        shell.send_sync(Relay("relay"), (Recorder("r"), "x"))
        shell.send_sync(Relay("relay"), (Recorder("r"), "y"))
        shell.settle()
    consumer.join(timeout=5)
    assert not consumer.is_alive()
    assert received == [(Recorder("r"), ["x"]), (Recorder("r"), ["x", "y"])]


def test_participate_isolates_and_seed_style_works(shell: EcosystemKind) -> None:
    """participate() isolates; the ecosystem may be passed as the seed's third argument."""
    eco = shell.participate("isolated")
    assert isinstance(eco, ShellEcosystem)
    assert shell.send_sync(Counter("c"), "inc", eco) == 1
    assert eco.send_sync(Counter("c"), "inc") == 2
    assert shell.send_sync(Counter("c"), "inc") == 1
    assert shell.state_of(Counter("c"), eco) == 2


def test_errors_reach_the_caller(shell: EcosystemKind) -> None:
    """ActivationError and CodecError are raised in the calling thread; nothing is stored."""
    with pytest.raises(ActivationError, match="boom"):
        shell.send_sync(Fragile("f"), "boom")
    with pytest.raises(CodecError):
        shell.send(Fragile("f"), object())
    [dead] = shell.dead_letters()
    assert dead.message == "boom"
    shell.discard(dead)
    assert shell.dead_letters() == []
    assert shell.state_of(Fragile("f")) == {"count": 0}


def test_many_threads_at_once(shell: EcosystemKind) -> None:
    """Sends from several threads are all applied exactly once."""

    def worker() -> None:
        for _ in range(20):
            shell.send_sync(Counter("shared"), "inc")

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shell.state_of(Counter("shared")) == 100


def test_bad_ecosystem_argument(shell: EcosystemKind) -> None:
    """Passing something else as the ecosystem says where ecosystems come from; so does
    passing another kind's ecosystem (a LocalDisk call must not land in memory)."""
    with pytest.raises(PachydermError, match=r"participate\(\.\.\.\)"):
        shell.send_sync(Counter("c"), "inc", "isolated")  # type: ignore[arg-type]
    other = InMemory if shell is not InMemory else LocalDisk
    foreign = other.participate("elsewhere")
    try:
        with pytest.raises(InvalidArgumentError, match=r"must be one of .*call its own verbs"):
            shell.send_sync(Counter("c"), "inc", foreign)
        assert foreign.state_of(Counter("c")) == 0  # nothing sent there
    finally:
        other.close()


def test_shell_face_inside_trio_points_to_the_trio_face(shell: EcosystemKind) -> None:
    """Calling the blocking face inside trio raises an error naming the trio face of the
    kind at hand (it named LocalDisk's on every kind)."""
    name = repr(shell).removeprefix("<ecosystem kind ").removesuffix(">")
    shell.send_sync(Counter("c"), "inc")  # opened outside trio

    async def main() -> None:
        with pytest.raises(PachydermError, match=rf"use the trio face.*{name}\.open\(") as caught:
            shell.send_sync(Counter("c"), "inc")
        assert f"({name}.send_sync, ...)" in str(caught.value)

    trio.run(main)


def test_cheap_trio_check_agrees_with_trio() -> None:
    """The shell face's own in-a-trio-run check says what trio's does, in and out of runs."""
    from pachyderm._shell import check_blocking_caller

    seen: list[tuple[str, bool]] = []

    def look() -> None:
        try:
            check_blocking_caller("LocalDisk('here')")
        except PachydermError as error:
            refused = "refused" if "use the trio face" in str(error) else repr(error)
        else:
            refused = "allowed"
        seen.append((refused, trio.lowlevel.in_trio_run()))

    async def main() -> None:
        look()  # inside this thread's run
        await trio.to_thread.run_sync(look)  # a worker thread of the run: outside it

    look()
    trio.run(main)
    look()
    assert seen == [
        ("allowed", False),
        ("refused", True),
        ("allowed", False),
        ("allowed", False),
    ]


def test_default_directory_is_pachyderm_home(pachyderm_home: Path) -> None:
    """The shell face's LocalDisk lives in $PACHYDERM_HOME."""
    LocalDisk.send_sync(Counter("c"), "inc")
    assert (pachyderm_home / "CURRENT").exists()


def test_local_disk_shell_state_survives_close(pachyderm_home: Path) -> None:
    """After LocalDisk.close(), the next call reopens the same directory with its state."""
    assert LocalDisk.send_sync(Counter("c"), "inc") == 1
    LocalDisk.close()
    assert LocalDisk.send_sync(Counter("c"), "inc") == 2


def test_a_call_racing_close_reopens_once_the_store_is_released(pachyderm_home: Path) -> None:
    """LocalDisk.send while LocalDisk.close() runs: refused or reopened, never StoreLockedError.

    close() marks the runtime closed before its store is released; a call
    reopening in between claimed the directory still held, and was told it
    was "already open in this process".
    """
    stop = threading.Event()
    errors: list[BaseException] = []
    returned: list[int] = []

    def sender(number: int) -> None:
        message = 0
        while not stop.is_set():
            message += 1
            try:
                LocalDisk.send(Recorder(("racing", number)), message)
            except EcosystemClosedError:
                continue  # refused: nothing happened (the message is not sent again)
            except BaseException as error:
                errors.append(error)
                return
            returned.append(number)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(15):
            time.sleep(0.01)
            LocalDisk.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert returned


def test_in_memory_takes_no_location() -> None:
    """InMemory refuses a location, saying what to use instead."""
    with pytest.raises(PachydermError, match="takes no location"):
        InMemory.connect("somewhere")


def test_fire_and_forget_sender_stays_within_the_queue_bound(pachyderm_home: Path) -> None:
    """One thread sending as fast as it can to InMemory: the queue stays bounded, and
    groups commit while it sends, not all at once at the end (memory stays flat)."""
    from pachyderm._runtime import _QUEUE_BOUND

    eco = InMemory.participate("flood")
    runtime = eco.runtime
    eco.send_sync(Counter("c"), "warm up")
    commits_before = runtime.commit.commits
    most_queued = 0
    for _ in range(30_000):
        eco.send(Counter("c"), "inc")
        most_queued = max(most_queued, runtime.lock.queued)
    commits_while_sending = runtime.commit.commits - commits_before
    eco.settle()
    assert eco.state_of(Counter("c")) == 30_001
    assert most_queued <= _QUEUE_BOUND
    assert commits_while_sending >= 3, commits_while_sending


def test_sending_from_inside_activate_is_refused(shell: EcosystemKind) -> None:
    """A handler that calls the shell face gets a clear error (it must use its outbox)."""

    class Impure(Entity[Any, Any]):
        entity_name = "tests.Impure"

        def activate(self, message: Any, state: Any) -> tuple[Outbox, Any]:
            shell.send(Counter("c"), "inc")
            return [], state

    with pytest.raises(ActivationError) as caught:
        shell.send_sync(Impure("i"), "go")
    assert "handlers must be pure" in str(caught.value.cause)
    assert "outbox" in str(caught.value.cause)
    assert shell.send_sync(Counter("c"), "inc") == 1  # nothing was sent, nothing hangs


def test_many_threads_share_writes_and_lose_no_wake_up(shell: EcosystemKind) -> None:
    """16 threads mixing send and send_sync: all applied once, in order, none left waiting."""
    threads, per_thread = 16, 150

    def caller(number: int) -> None:
        for message in range(per_thread):
            if message % 3:
                shell.send_sync(Recorder(number % 4), (number, message))
            else:
                shell.send(Recorder(number % 4), (number, message))

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in callers), "a caller was never answered"
    shell.settle()
    for entity in range(4):
        received = shell.state_of(Recorder(entity))
        for number in range(entity, threads, 4):
            mine = [message for sender, message in received if sender == number]
            assert mine == list(range(per_thread))  # each once, in send order


def _waiting_in_inboxes(shell: ShellEcosystem, addresses: list[Recorder]) -> int:
    """How many accepted messages wait in these entities' inboxes (an internal count)."""
    table = shell.runtime.residents.table
    records = [table.get((shell.id, a.entity_name, a.id)) for a in addresses]
    return sum(len(record.inbox) for record in records if record is not None)


@pytest.mark.parametrize("paused", [True, False], ids=["paused", "racing"])
def test_close_tells_refused_calls_from_unknown_outcomes(
    shell: EcosystemKind, paused: bool
) -> None:
    """send_sync calls cut short by close: EcosystemClosedError only when nothing was applied.

    A call that returned was applied once; one that raised EcosystemClosedError
    (safe to retry) not at all; one that raised OutcomeUnknownError at most
    once, and, where the store keeps its inboxes, once after reopening.
    ``paused``: every caller's message surely waits, accepted, in an inbox when
    the store closes; ``racing``: callers send as fast as they can meanwhile.
    """
    callers = 8
    eco = shell.connect()
    persistent = shell is not InMemory
    addresses = [Recorder(("close", n)) for n in range(callers)]
    followers = [eco.follow(address, buffer=100_000) for address in addresses]
    outcomes: dict[tuple[int, int], str] = {}
    warmed_up = threading.Barrier(callers + 1)

    def caller(number: int) -> None:
        for message in itertools.count():
            if message == 5:
                warmed_up.wait(timeout=30)
            try:
                eco.send_sync(addresses[number], message)
            except OutcomeUnknownError:
                outcomes[number, message] = "unknown"
                return
            except EcosystemClosedError:
                outcomes[number, message] = "refused"
                return
            outcomes[number, message] = "returned"

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    warmed_up.wait(timeout=30)
    if paused:
        eco.runtime.pause()
        deadline = time.monotonic() + 30
        while _waiting_in_inboxes(eco, addresses) < callers:  # each caller's next call
            assert time.monotonic() < deadline, "the callers' messages were never accepted"
            time.sleep(0.001)
    eco.close()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a caller was never answered"
    with pytest.raises(EcosystemClosedError):
        eco.send_sync(addresses[0], "after close")  # refused: not OutcomeUnknownError
    if paused:  # the messages waiting were accepted, never applied
        kinds = {outcome for outcome in outcomes.values() if outcome != "returned"}
        assert kinds == {"unknown" if persistent else "refused"}
    if persistent:
        reopened = shell.connect()
        reopened.settle()
        finals = [reopened.state_of(address) for address in addresses]
    else:  # gone with the store: its last committed states are the followers' latest
        finals = [follower.state for follower in followers]
    for (number, message), outcome in outcomes.items():
        applied = finals[number].count(message)
        if outcome == "returned" or (outcome == "unknown" and persistent):
            assert applied == 1, (number, message, outcome, finals[number])
        elif outcome == "refused":
            assert applied == 0, (number, message, outcome, finals[number])
        else:
            assert applied <= 1, (number, message, outcome, finals[number])


def test_close_waits_for_a_caller_leading_a_write(
    pachyderm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's thread about to write its own group when close begins: its call returns.

    Closing waits for that write: it neither answers the caller "closed"
    (the message is written and applied: a retry would apply it twice) nor
    closes the store under the write.
    """
    eco = LocalDisk.connect()
    runtime = eco.runtime
    leading, release, closing, caller_done = (threading.Event() for _ in range(4))
    lead, close_storage = runtime._lead, runtime.storage.close

    def paused_lead() -> None:
        if threading.current_thread().name == "leader":
            leading.set()  # its message is activated; it is about to write the group
            release.wait(timeout=30)
        lead()

    def watched_close() -> None:
        closing.set()
        caller_done.wait(timeout=30)  # (so that the old way it does not close under the write)
        close_storage()

    monkeypatch.setattr(runtime, "_lead", paused_lead)
    monkeypatch.setattr(runtime.storage, "close", watched_close)
    outcome: list[object] = []

    def leader() -> None:
        try:
            outcome.append(eco.send_sync(Counter("c"), "inc"))
        except PachydermError as error:
            outcome.append(error)
        finally:
            caller_done.set()

    caller = threading.Thread(target=leader, name="leader")
    caller.start()
    assert leading.wait(timeout=30)
    closer = threading.Thread(target=eco.close)
    closer.start()
    closing.wait(timeout=1)  # the old way, the store got this far without the write
    release.set()
    caller.join(timeout=30)
    closer.join(timeout=30)
    assert not caller.is_alive()
    assert not closer.is_alive()
    assert outcome == [1]
    assert LocalDisk.state_of(Counter("c")) == 1  # reopened


@pytest.mark.parametrize("kind", ["InMemory", "LocalDisk"])
def test_a_thread_iterating_a_follower_does_not_keep_the_process_alive(
    kind: str, tmp_path: Path
) -> None:
    """Once only followers keep the process alive, they end: the threads iterating them finish.

    Not before: a non-daemon thread still sending after the main thread
    returned is waited for, and its updates reach the follower. Idle
    ``concurrent.futures`` workers, stopped by their own exit hook, do not
    keep the followers waiting either.
    """
    location = None if kind == "InMemory" else str(tmp_path / "store")
    code = f"""
import concurrent.futures, threading
# Idle non-daemon workers, stopped by their own exit hook, which runs after ours:
pool = concurrent.futures.ThreadPoolExecutor(2)
pool.submit(int).result()
from ecosystems import {kind} as kind
from tests.entities import Counter
eco = kind.connect({location!r})
eco.send_sync(Counter("c"), "inc")
follower = eco.follow(Counter("c"))
main_returned = threading.Event()
def watch():
    states = [state for _, state in follower]
    print("follower ended at", states[-1], flush=True)
def send_later():
    main_returned.wait()
    for _ in range(20):
        eco.send_sync(Counter("c"), "inc")
threading.Thread(target=watch).start()  # not a daemon
threading.Thread(target=send_later).start()  # neither
main_returned.set()
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,  # (raises TimeoutExpired: the old way, the process never exited)
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["follower ended at 21"]


def test_ctrl_c_during_send_sync_leaves_the_store_open_for_every_handle(
    tmp_path: Path,
) -> None:
    """A real Ctrl-C during the main thread's send_sync stops that call only.

    Another thread, sending through another ecosystem's handle all along, goes
    on without an error; the main thread's handle works after; each message
    that was answered is applied once, the interrupted one at most once.
    """
    code = """
import itertools, json, sys, threading
from ecosystems import LocalDisk
from tests.entities import Recorder
eco = LocalDisk.connect(sys.argv[1])
other = eco.participate("other")
report = {"main": [], "other": [], "errors": []}
running, stop = threading.Event(), threading.Event()
def send_from_another_thread():
    for n in itertools.count():
        try:
            other.send_sync(Recorder("r"), n)
        except BaseException as error:
            report["errors"].append(repr(error))
            return
        report["other"].append(n)
        running.set()
        if stop.is_set():
            return
sender = threading.Thread(target=send_from_another_thread)
sender.start()
running.wait()
print("ready", flush=True)
try:
    for n in itertools.count():
        eco.send_sync(Recorder("r"), n)
        report["main"].append(n)
except KeyboardInterrupt:  # (the call not yet listed: n, or n + 1 if after the append)
    report["interrupted"] = len(report["main"])
for n in range(report["interrupted"] + 1, report["interrupted"] + 21):
    eco.send_sync(Recorder("r"), n)
    report["main"].append(n)
before = len(report["other"])
while len(report["other"]) < before + 20 and not report["errors"]:
    eco.state_of(Recorder("r"))  # (waiting: the other thread sends after the interrupt)
stop.set()
sender.join()
print(json.dumps(report), flush=True)
"""
    for trial, delay in enumerate((0.05, 0.15, 0.3, 0.5)):  # (one trial missed it, the old way)
        store = str(tmp_path / f"store-{trial}")
        process = subprocess.Popen(
            [sys.executable, "-c", code, store],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        time.sleep(delay)  # both threads sending
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        report = json.loads(out)
        assert report["errors"] == []
        interrupted = report["interrupted"]
        main = LocalDisk.connect(store).state_of(Recorder("r"))
        assert [n for n in main if n != interrupted] == report["main"]  # each once, in order
        assert main.count(interrupted) <= 1
        other = LocalDisk.participate("other", location=store)
        assert other.state_of(Recorder("r")) == report["other"]
        LocalDisk.close()


class Flaky(Entity[Any, dict[str, Any]]):
    """Fails on every message until it is sent ``"fix"``; then keeps them."""

    entity_name = "tests.shell.Flaky"

    def init(self) -> dict[str, Any]:
        return {"fixed": False, "applied": []}

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        if message == "fix":
            return [], {**state, "fixed": True}
        if not state["fixed"]:
            raise ValueError("not fixed yet")
        return [], {**state, "applied": [*state["applied"], message]}


def _take(
    eco: ShellEcosystem,
    verb: str,
    dead: DeadLetter,
    barrier: threading.Barrier,
    won: list[str],
    lost: list[BaseException],
) -> None:
    """``redeliver`` or ``discard`` a dead letter, at once with another thread."""
    barrier.wait(timeout=30)
    try:
        getattr(eco, verb)(dead)
    except UnknownDeadLetterError as error:
        lost.append(error)
    else:
        won.append(verb)


@pytest.mark.parametrize("rival", ["redeliver", "discard"])
def test_racing_redeliver_applies_a_dead_letter_at_most_once(
    pachyderm_home: Path, rival: str
) -> None:
    """Two threads take the same dead letter at once (redeliver, or discard): one wins.

    The other gets UnknownDeadLetterError; the message is applied once if a
    redeliver won, never if the discard did, and the dead letter is gone.
    """
    eco = LocalDisk.connect()
    for trial in range(100):
        address = Flaky(trial)
        with pytest.raises(ActivationError):
            eco.send_sync(address, ("message", trial))
        eco.send_sync(address, "fix")
        [dead] = [letter for letter in eco.dead_letters() if letter.address == address]
        barrier = threading.Barrier(2)
        won: list[str] = []
        lost: list[BaseException] = []
        threads = [
            threading.Thread(target=_take, args=(eco, verb, dead, barrier, won, lost))
            for verb in ("redeliver", rival)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(won) == 1, (trial, won, lost)
        assert len(lost) == 1, (trial, won, lost)
        eco.settle()
        applied = eco.state_of(address)["applied"]
        assert applied == ([] if won == ["discard"] else [("message", trial)]), (trial, won)
        assert all(letter.address != address for letter in eco.dead_letters())
    LocalDisk.close()
    reopened = LocalDisk.connect()
    reopened.settle()
    assert reopened.dead_letters() == []
    assert all(len(reopened.state_of(Flaky(trial))["applied"]) <= 1 for trial in range(100))


@pytest.mark.parametrize("kind", [InMemory, LocalDisk], ids=["InMemory", "LocalDisk"])
def test_a_caller_handed_the_lead_before_it_waits_leads_once(
    kind: EcosystemKind, pachyderm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller asked to write the next group before it started waiting: every call returns.

    Submitting is slowed down at random, so that a writer often hands its
    lead to a caller still between submitting and waiting. (That caller led
    without taking the hand-over's wake-up; its own answer then failed with
    "release unlocked lock", and the callers of its group were never answered.)
    """
    eco = kind.connect()
    submit = eco.runtime.lock.submit
    chance = random.Random(7)

    def slow_submit(request: Any) -> None:
        submit(request)
        time.sleep(chance.random() * 0.002)  # between submitting and waiting

    monkeypatch.setattr(eco.runtime.lock, "submit", slow_submit)
    errors: list[BaseException] = []

    def caller(number: int) -> None:
        try:
            for message in range(60):
                eco.send_sync(Recorder(number % 4), (number, message))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert errors == []
    assert not any(thread.is_alive() for thread in threads), "a caller was never answered"
    for entity in range(4):
        received = eco.state_of(Recorder(entity))
        for number in range(entity, 16, 4):
            assert [m for n, m in received if n == number] == list(range(60))
