"""Ctrl-C at every instant of a shell-face call, run as a process of its own.

    python tests/interrupt_worker.py KIND PATH LOCATION

For N = 0, 1, 2, ... one call of PATH is made with SIGINT raised in the main
thread at the N-th line it executes in Pachyderm's code or in a handler, until
three calls in a row end before their N-th line (on Postgres a call's length
varies with the server's timing, so one short call does not end the walk).
After every call, interrupted or not, the runtime must still work:
``settle()`` returns, and the ledger entity holds every number whose call
returned, exactly once, and the number of an interrupted call at most once.
Prints one JSON line of counts; exits non-zero (with the reason on stderr) if
a check fails. The paths:

- ``send_sync``: to an idle entity: activated and written in the caller's thread
  (on Postgres the entity is sent a message first, so that its state is loaded:
  one still to be read waits for the runtime's thread, as in ``send_sync_cold``);
- ``send_sync_cold`` (Postgres): to an entity whose state is still to be read:
  the runtime's own thread reads it, with others', and runs the message;
- ``send``: acceptance only, written (LocalDisk) or queued (InMemory) here;
- ``send_at_bound`` (InMemory): the queue of accepted messages is full, so the
  call takes the runtime's lock and processes it, queued messages of the same
  ledger (negative numbers) included: those were accepted, and must each be
  applied once, in order, however the call was interrupted, none of them
  dead-lettered for an interrupt that came while this thread ran them;
- ``send_sync_queued``: to an entity with messages waiting: the caller's message
  joins its inbox and waits for the runtime's own thread;
- ``handler``: the interrupt lands in a handler's own code too: that message
  becomes a dead letter, and the entity keeps its state.
- ``combined``: the main thread's ``state_of`` holds the runtime's lock while
  another thread's ``send_sync`` is queued; the main thread then runs that
  thread's activation, and is interrupted at every line of it: the other
  thread's message must be applied once, not dead-lettered for a Ctrl-C that
  was not its caller's, and the main thread gets its KeyboardInterrupt after.
- ``sigterm``: like ``send_sync``, the signal being SIGTERM with a handler
  raising SystemExit, as servers install.
- ``trio`` and ``trio_state_of``: ``await eco.send_sync`` / ``eco.state_of`` on
  the trio face in the main thread's ``trio.run``, where trio's own handler
  decides (LocalDisk and Postgres: the store is opened again in a new
  ``trio.run`` to be checked).

On Postgres (LOCATION is a DSN) the lines counted on the shell face include the
storage's own (``ecosystems/``), run in the calling thread: reads, and waits on
the server. (On the trio face, where each call opens the database twice, they
would make the walk too long.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from ecosystems import InMemory, LocalDisk, Postgres  # noqa: E402
from pachyderm import ActivationError, Entity, Outbox, _runtime  # noqa: E402

PACKAGE = str(ROOT / "pachyderm")
TRACED = [PACKAGE]  # where lines are counted (and the storage's code on Postgres)
KINDS: dict[str, Any] = {"InMemory": InMemory, "LocalDisk": LocalDisk, "Postgres": Postgres}
THIS = str(Path(__file__).resolve())
SETTLE_TIMEOUT = 30.0
CONFIRMATIONS = 3
"""Calls in a row that must end before line N for the walk to stop there."""


class Ledger(Entity[Any, list[int]]):
    """Keeps the numbers it is sent; a ``("slow", n)`` message runs a few lines first."""

    entity_name = "tests.interrupts.Ledger"

    def init(self) -> list[int]:
        return []

    def activate(self, message: Any, state: list[int]) -> tuple[Outbox, list[int]]:
        if isinstance(message, tuple):
            _, number = message
            total = 0
            for step in range(20):  # a handler's own lines, for the interrupt to land in
                total += step
            return [], [*state, number]
        return [], [*state, message]


class Injector:
    """Delivers a signal at the N-th line executed in Pachyderm or in a handler.

    Delivered as CPython delivers a signal between two bytecodes: the
    installed handler is called with the running frame, and what it raises
    is raised there. With ``arm``, counting starts only once ``arm`` (called
    at every line until then) returns True.
    """

    def __init__(self, at: int, number: int = signal.SIGINT, arm: Any = None) -> None:
        self.at = at
        self.signal = number
        self.arm = arm
        self.lines = 0
        self.fired = False
        self.in_handler = False

    def __call__(self, frame: FrameType, event: str, argument: Any) -> Any:
        filename = frame.f_code.co_filename
        if not (
            filename.startswith(tuple(TRACED))
            or (filename == THIS and frame.f_code.co_name == "activate")
        ):
            return None
        return self.line

    def line(self, frame: FrameType, event: str, argument: Any) -> Any:
        if event == "line" and not self.fired:
            if self.arm is not None:
                if not self.arm(frame):
                    return self.line
                self.arm = None
            if self.lines == self.at:
                self.fired = True
                self.in_handler = frame.f_code.co_filename == THIS
                handler = signal.getsignal(self.signal)
                assert callable(handler)
                handler(self.signal, frame)
            self.lines += 1
        return self.line


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def fail(reason: str) -> None:
    print(reason, file=sys.stderr, flush=True)
    os._exit(1)


def settle(eco: Any, what: str) -> None:
    """settle() must return; a hang is the bug this looks for."""
    watchdog = threading.Timer(SETTLE_TIMEOUT, fail, [f"settle() hung after {what}"])
    watchdog.start()
    try:
        eco.settle()
    finally:
        watchdog.cancel()


def main_trio(kind_name: str, location: str, verb: str) -> None:
    """The trio face: interrupt one call at every instant, check in a new trio.run."""
    interrupted = returned = at = call = untouched = 0
    kind = KINDS[kind_name]

    async def send(number: int, injector: Injector) -> None:
        async with kind.open(location) as eco:
            if kind is Postgres and verb == "send_sync":
                await eco.send_sync(Ledger(number), -1)  # loaded: run in the sender's step
            sys.settrace(injector)
            try:
                if verb == "state_of":
                    await eco.state_of(Ledger(number))
                    await eco.send_sync(Ledger(number), number)
                else:
                    await eco.send_sync(Ledger(number), number)
            finally:
                sys.settrace(None)

    async def check(number: int) -> list[int]:
        async with kind.open(location) as eco:
            with trio.fail_after(SETTLE_TIMEOUT):
                await eco.settle()
            state: list[int] = await eco.state_of(Ledger(number))
            return [n for n in state if n >= 0]

    while True:
        injector = Injector(at)
        try:
            trio.run(send, call, injector)
        except KeyboardInterrupt:
            done = False
        else:
            done = True
        numbers = trio.run(check, call)
        if numbers not in ([], [call]) or (done and not numbers):
            fail(f"trio face, interrupt at line {at}: the ledger holds {numbers}, done={done}")
        call += 1
        if not injector.fired:
            untouched += 1
            if untouched == CONFIRMATIONS:
                break
            continue
        untouched = 0
        interrupted += not done
        returned += done
        at += 1
    print(
        json.dumps(
            {
                "kind": kind_name,
                "path": f"trio {verb}",
                "lines": at,
                "interrupted": interrupted,
                "returned": returned,
            }
        ),
        flush=True,
    )


def combined_call(eco: Any, at: int, call: int) -> tuple[bool, bool]:
    """One main-thread state_of, interrupted at line ``at`` of another thread's activation.

    Returns (interrupted, fired). Once the main thread holds the runtime's
    lock, another thread's send_sync (to a ledger of its own, numbered
    ``call``) is started and waited for until queued: the main thread
    processes it, while counting lines towards ``at``.
    """
    other: dict[str, Any] = {}
    queued = threading.Event()

    def other_thread() -> None:
        try:
            other["state"] = eco.send_sync(Ledger(("other", call)), ("slow", call))
        except BaseException as error:
            other["error"] = error

    def arm(frame: FrameType) -> bool:
        if queued.is_set():
            return True
        if frame.f_code.co_name != "_committed_record":
            return False
        thread = threading.Thread(target=other_thread)
        other["thread"] = thread
        thread.start()
        while not eco.runtime.lock.queued:
            thread.join(0.001)
        queued.set()
        return True

    injector = Injector(at, arm=arm)
    sys.settrace(injector)
    try:
        eco.state_of(Ledger("main"))
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    finally:
        sys.settrace(None)
    other["thread"].join(SETTLE_TIMEOUT)
    if other["thread"].is_alive():
        fail(f"another thread's send_sync never returned (interrupt at line {at})")
    if "error" in other:
        fail(f"another thread's send_sync failed for the main thread's interrupt: {other}")
    if other["state"] != [call]:
        fail(f"another thread's message applied {other['state']} (line {at})")
    return interrupted, injector.fired


def main_combined(eco: Any, kind_name: str) -> None:
    """Interrupt the main thread while it runs another thread's activation for it."""
    interrupted = at = call = untouched = 0
    while True:
        was_interrupted, fired = combined_call(eco, at, call)
        call += 1
        settle(eco, f"line {at} of combined")
        if eco.dead_letters():
            fail(f"another thread's message was dead-lettered: {eco.dead_letters()}")
        if not fired:
            untouched += 1
            if untouched == CONFIRMATIONS:
                break
            continue
        untouched = 0
        interrupted += was_interrupted
        at += 1
    counts = {"kind": kind_name, "path": "combined", "lines": at, "interrupted": interrupted}
    print(json.dumps(counts), flush=True)


def queued_request(eco: Any, address: Ledger, message: int) -> Any:
    """A message accepted for a volatile store and queued, as ``send`` queues it,
    without telling the runtime (so that it waits until the call under test)."""
    runtime = eco.runtime
    blob = runtime.encode_message(address, message)
    return ((eco._id, address.entity_name, address._id), address, blob, None, False, 0)


def main(kind_name: str, path: str, location: str) -> None:
    if path in ("trio", "trio_state_of"):
        main_trio(kind_name, location, "state_of" if path == "trio_state_of" else "send_sync")
        return
    if kind_name == "Postgres":
        TRACED.append(str(ROOT / "ecosystems"))
    kind = KINDS[kind_name]
    eco = kind.participate(f"ki-{path}") if kind is InMemory else kind.connect(location)
    if path == "combined":
        main_combined(eco, kind_name)
        return
    if path == "send_at_bound":
        _runtime._QUEUE_BOUND = 4  # a short drain, so that the walk through it is short too
    number = signal.SIGINT
    if path == "sigterm":
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        number = signal.SIGTERM
    interrupted = returned = dead = 0
    at = call = untouched = 0
    while True:
        # A ledger per call: small, so the call's length does not grow with the test.
        ledger = Ledger(call)
        fillers: list[int] = []
        if path == "send_at_bound":
            fillers = [-1 - n for n in range(_runtime._QUEUE_BOUND - 1)]
            for filler in fillers:
                if eco.runtime.lock.post(queued_request(eco, ledger, filler)) >= len(fillers) + 1:
                    fail("the queue was full before the call")
        if path == "send_sync_queued":
            eco.runtime.pause()  # a message waits in the inbox...
            eco.send(ledger, -1)
            eco.runtime.resume()  # ...for the runtime's own thread
        if kind is Postgres and path in ("send_sync", "handler", "sigterm"):
            eco.send_sync(ledger, -1)  # loaded: the call runs it in this thread
        injector = Injector(at, number)
        message: Any = ("slow", call) if path == "handler" else call
        sys.settrace(injector)
        try:
            if path in ("send", "send_at_bound"):
                eco.send(ledger, message)
            else:
                eco.send_sync(ledger, message)
        except (KeyboardInterrupt, SystemExit):
            sys.settrace(None)
            done = False
        except ActivationError as error:
            sys.settrace(None)
            fail(f"an activation failed without an interrupt: {error}")
        else:
            sys.settrace(None)
            done = True
        settle(eco, f"line {at} of {path}")
        state = eco.state_of(ledger)
        numbers = [n for n in state if n >= 0]
        if fillers and [n for n in state if n < 0] != fillers:
            fail(f"after an interrupt at line {at}, queued messages were applied as {state}")
        if numbers not in ([], [call]):
            fail(f"after an interrupt at line {at}, the ledger holds {numbers}")
        if done and not numbers:
            fail(f"the call returned but its message was lost (line {at})")
        if path == "send_at_bound":
            # Accepted messages run with the interrupt deferred: none is a dead letter.
            if eco.dead_letters():
                fail(f"an accepted message was dead-lettered: {eco.dead_letters()}")
        elif injector.in_handler:
            letters = [d for d in eco.dead_letters() if d.message == message]
            if (
                numbers
                or len(letters) != 1
                or not letters[0].error.startswith(("KeyboardInterrupt", "SystemExit"))
            ):
                fail(f"an interrupted handler left no dead letter: {numbers}, {letters}")
            dead += 1
        call += 1
        if not injector.fired:  # the call ended before its at-th line
            untouched += 1
            if untouched == CONFIRMATIONS:
                break  # every instant was tried
            continue
        untouched = 0
        interrupted += not done
        returned += done
        at += 1
    # The runtime still works, and (LocalDisk) what it holds survives a reopen.
    if eco.send_sync(Ledger("last"), 1) != [1]:
        fail("send_sync after the interrupts did not apply once")
    if kind is not InMemory:
        before = [eco.state_of(Ledger(n)) for n in range(call)]
        kind.close()
        again = kind.connect(location)
        if [again.state_of(Ledger(n)) for n in range(call)] != before:
            fail("the store read back differs after reopening")
    print(
        json.dumps(
            {
                "kind": kind_name,
                "path": path,
                "lines": at,
                "interrupted": interrupted,
                "returned": returned,
                "dead_letters": dead,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
