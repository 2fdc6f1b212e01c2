"""The shell face: blocking verbs for a Python shell, a script or a web server's threads.

Every runtime the shell face opens runs in one trio run in a background
thread, the *portal*. A ``send`` or ``send_sync`` does its work in the
caller's own thread: it hands its message to the runtime's combining lock
(whoever holds it processes every queued message: an idle entity is
activated at once), and if nobody is writing, writes the open group and
completes it there too. So one caller costs one write, and many callers
share one: the caller that finishes a write wakes one whose work is in the
next group to write it. The portal's tasks do what nobody waits for: queued
activations, outbox deliveries, timers, groups left open. The work done in
the caller's main thread is Ctrl-C safe: interrupts are deferred until it is done.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from pachyderm._dead_letters import DeadLetter
from pachyderm._ecosystem import Ecosystem
from pachyderm._entity import Entity
from pachyderm._followers import DEFAULT_FOLLOWER_BUFFER, ShellFollower, waiting_on_followers
from pachyderm._interrupts import deferred_interrupts
from pachyderm._log import log
from pachyderm._runtime import Runtime
from pachyderm._step import handler_marks, load_state, refuse_inside_activation
from pachyderm.errors import EcosystemClosedError, PachydermError

__all__ = ["Portal", "ShellEcosystem"]

T = TypeVar("T")
MessageT = TypeVar("MessageT")
StateT = TypeVar("StateT")


def kind_of(store: str) -> str:
    """The kind of the store named ``store``: stores are named ``Kind(...)``, or ``Kind``."""
    return store.partition("(")[0]


def check_blocking_caller(store: str) -> None:
    """The shell face blocks: refuse it inside activate() and inside trio, saying why.

    Every shell call checks: both marks are read here, without a call each.
    ``store``: the store's name, ``Postgres(...)`` say, whose kind the refusal names.
    """
    if handler_marks.active or (
        "runner" in _TRIO_RUN_CONTEXT.__dict__
        if _TRIO_RUN_CONTEXT is not None
        else trio.lowlevel.in_trio_run()
    ):
        refuse_inside_activation("the shell face (send_sync, send, follow, ...)")
        kind = kind_of(store)
        raise PachydermError(
            f"the shell face ({kind}.send_sync, ...) blocks, so it cannot be used inside "
            f"trio; use the trio face instead: async with {kind}.open(...) as eco"
        )


def _trio_run_context() -> threading.local | None:
    """trio's per-thread run context: it holds a ``runner`` inside a run. None if it moved.

    ``trio.lowlevel.in_trio_run`` raises and catches an AttributeError
    outside a run: about 0.9 us, a tenth of a fire-and-forget ``send``.
    Whether the context holds a runner is the same fact, read without
    raising. If trio's internals move, trio's own check it is (a test compares
    the two).
    """
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT
    except ImportError:
        return None
    if not isinstance(GLOBAL_RUN_CONTEXT, threading.local):
        return None
    return GLOBAL_RUN_CONTEXT


_TRIO_RUN_CONTEXT = _trio_run_context()


_get_ident = threading.get_ident
_MAIN_THREAD = threading.main_thread().ident
_EXIT_POLL = 0.02  # seconds between looks at the threads still running, at exit


class Portal:
    """One trio run in a daemon thread, hosting every runtime the shell face opens."""

    _instance: Portal | None = None
    _instance_lock = threading.Lock()

    @classmethod
    def get(cls) -> Portal:
        """The process's portal, started on first use."""
        with cls._instance_lock:
            if cls._instance is None or not cls._instance._thread.is_alive():
                cls._instance = cls()
            return cls._instance

    @classmethod
    def forsake(cls) -> None:
        """In a forked child: a fresh lock; the inherited portal's thread is not there."""
        cls._instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._runtimes: list[Runtime] = []
        # Whether a runtime's opening began in the portal (True), or was given up before
        # it could (False): decided under the lock, so that exactly one side closes the
        # store of a runtime given up on.
        self._opening: weakref.WeakKeyDictionary[Runtime, bool] = weakref.WeakKeyDictionary()
        self._opening_lock = threading.Lock()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), name="pachyderm-shell", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        atexit.register(self.stop)
        # At exit, Python joins non-daemon threads before it runs atexit handlers: a
        # thread iterating a follower would wait forever for the store to close. This
        # hook runs before that join (private, but concurrent.futures relies on it too).
        register_at_shutdown = getattr(threading, "_register_atexit", None)
        if register_at_shutdown is not None:
            with contextlib.suppress(RuntimeError):  # already shutting down
                register_at_shutdown(self.end_followers_at_exit)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            for runtime in self._runtimes:
                await runtime.aclose()
            nursery.cancel_scope.cancel()

    def call(self, store: str, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an async function in the portal for store ``store`` (its name: errors show
        it) and wait for its result."""
        check_blocking_caller(store)
        return trio.from_thread.run(function, *args, trio_token=self._token)

    def start(self, runtime: Runtime) -> None:
        """Start ``runtime`` in the portal; errors while opening are raised here.

        If this fails, or is interrupted (Ctrl-C while a backlog is recovered),
        the runtime's store is closed before this returns, never while the
        portal still reads it.
        """
        try:
            self.call(runtime.name, self._nursery.start, self._host, runtime)
            self._runtimes.append(runtime)
        except BaseException:
            with deferred_interrupts():  # a second Ctrl-C waits until the store is closed
                self._give_up(runtime)
            raise

    def _give_up(self, runtime: Runtime) -> None:
        """Close a runtime whose start failed or was interrupted, wherever it got to."""
        with self._opening_lock:
            began = self._opening.setdefault(runtime, False)  # False: too late to begin now
        if not began:
            runtime.storage.close()  # the portal never touched it
            return
        # It may still be opening in the portal: stopped there, it closes its store itself.
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run(runtime.aclose, trio_token=self._token)
        if runtime in self._runtimes:
            self._runtimes.remove(runtime)

    async def _host(self, runtime: Runtime, *, task_status: trio.TaskStatus[None]) -> None:
        with self._opening_lock:
            if self._opening.setdefault(runtime, True) is False:  # given up on before it began
                task_status.started()  # (to a caller that is gone)
                return
        try:
            await runtime.run(task_status=task_status)
        except Exception as error:
            if not runtime.started:
                raise  # nursery.start hands it to the caller that tried to open
            # Kept as runtime.failure; callers get EcosystemClosedError naming it.
            log("runtime.failed", level="error", store=runtime.name, error=repr(error))

    def stop(self) -> None:
        """Close every runtime (committing what is done) and end the thread."""
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                return
            self._thread.join(timeout=10)

    def end_followers_at_exit(self) -> None:
        """End every follower once nothing but followers keeps the process alive.

        Called as the interpreter shuts down (the main thread has returned),
        before it waits for non-daemon threads. It returns at once (other such
        hooks, like the one stopping idle ``concurrent.futures`` workers, must
        run too); a daemon thread then watches: once every other non-daemon
        thread has ended or waits for a follower's next update, the followers
        end, and the threads iterating them finish. The stores close at exit.
        """
        threading.Thread(
            target=self._end_followers_when_idle,
            args=(threading.current_thread(),),
            name="pachyderm-exit",
            daemon=True,
        ).start()

    def _end_followers_when_idle(self, exiting: threading.Thread) -> None:
        while any(
            thread is not exiting and not thread.daemon and not waiting_on_followers(thread)
            for thread in threading.enumerate()
        ):
            time.sleep(_EXIT_POLL)  # another thread still works: it may still send
        for runtime in list(self._runtimes):
            runtime.end_followers()

    def close_runtime(self, runtime: Runtime) -> None:
        if runtime in self._runtimes:
            self.call(runtime.name, runtime.aclose)
            self._runtimes.remove(runtime)


class ShellEcosystem:
    """The shell face of one ecosystem: the trio face's verbs, blocking, from any thread."""

    def __init__(self, portal: Portal, ecosystem: Ecosystem) -> None:
        self._portal = portal
        self._ecosystem = ecosystem
        # Looked up on every call: kept as plain attributes rather than properties.
        self._runtime = ecosystem.runtime
        self._id = ecosystem.id

    @property
    def id(self) -> str:
        """This ecosystem's id."""
        return self._ecosystem.id

    @property
    def runtime(self) -> Runtime:
        """The runtime hosting this ecosystem's store."""
        return self._ecosystem.runtime

    def __repr__(self) -> str:
        return f"<ShellEcosystem {self.id!r} in {self._runtime.name}>"

    def participate(self, ecosystem_id: str) -> ShellEcosystem:
        """Another ecosystem in the same store, isolated from this one."""
        return ShellEcosystem(self._portal, self._ecosystem.participate(ecosystem_id))

    def send(self, address: Entity[MessageT, Any], message: MessageT) -> None:
        """Send ``message``; returns once it is in the recipient's durable inbox.

        Raises:
            CodecError: the message cannot be stored (nothing is stored).
            EcosystemClosedError: refused, the store closed first: nothing
                happened, safe to send again once it is open.
            OutcomeUnknownError: the store stopped while writing it: it may
                be stored; ``state_of`` after reopening tells.
        """
        check_blocking_caller(self._runtime.name)
        runtime = self._runtime
        if runtime.volatile:  # accepted once queued in memory (InMemory)
            if runtime.queue_from_thread(self._id, address, message):  # (encodes it first)
                # At the bound: wait for the lock (its holder drains the queue meanwhile),
                # then process what is left. The queue stays bounded, and the committer,
                # which needs the lock too, gets its turn.
                with deferred_interrupts(), runtime.lock:
                    pass
            return
        blob = runtime.encode_message(address, message)  # errors surface before anything is stored
        with deferred_interrupts():
            reply = runtime.send_from_thread(self._id, address, blob, sync=False)
        runtime.wait_from_thread(reply)  # Ctrl-C may interrupt the wait: the message stays accepted

    def send_sync(self, address: Entity[MessageT, StateT], message: MessageT) -> StateT:
        """Send ``message`` and return the entity's state once its activation is durable.

        Raises:
            ActivationError: ``activate`` failed; the entity kept its state and
                the message became a dead letter.
            CodecError: the message cannot be stored (nothing is stored).
            EcosystemClosedError: refused, the store closed first (or, InMemory,
                closed before applying it, which it then never will): nothing
                happened, safe to send again.
            OutcomeUnknownError: accepted, but the store closed before applying
                it; LocalDisk applies it, once, when the store is next opened
                (``settle()`` and ``state_of`` after reopening show its effect);
                on Postgres the worker that runs the entity applies it, once,
                whether or not this process reopens. Do not send it again.
            WaitingForClassError: accepted, but its entity's data names a class
                not registered in this process: it waits, and is applied once
                that class registers. Do not send it again.
        """
        check_blocking_caller(self._runtime.name)
        runtime = self._runtime
        blob = runtime.encode_message(address, message)
        if _get_ident() == _MAIN_THREAD:  # signals run there: hold them back meanwhile
            with deferred_interrupts():
                reply = runtime.send_from_thread(self._id, address, blob, sync=True)
        else:
            reply = runtime.send_from_thread(self._id, address, blob, sync=True)
        state: StateT = load_state(address, runtime.wait_from_thread(reply))
        return state

    def follow(
        self, address: Entity[Any, StateT], *, buffer: int = DEFAULT_FOLLOWER_BUFFER
    ) -> ShellFollower[StateT]:
        """Follow ``address``: ``.state`` now, then every committed change."""
        check_blocking_caller(self._runtime.name)
        runtime = self._runtime
        with deferred_interrupts():  # the runtime's lock, and the requests it processes
            subscription = runtime.subscribe(self._id, address, buffer)
        return ShellFollower(subscription)

    def state_of(self, address: Entity[Any, StateT]) -> StateT:
        """The latest committed state of ``address``, without activating it."""
        check_blocking_caller(self._runtime.name)
        with deferred_interrupts():
            state: StateT = self._runtime.state_of(self._id, address)
        return state

    def dead_letters(self) -> list[DeadLetter]:
        """The messages whose activation failed, oldest first."""
        check_blocking_caller(self._runtime.name)
        with deferred_interrupts():
            return self._runtime.dead_letters(self._id)

    def redeliver(self, dead_letter: DeadLetter | int) -> None:
        """Move a dead letter back into its entity's inbox, to be processed again."""
        self._runtime.check_open()
        self._portal.call(self._runtime.name, self._ecosystem.redeliver, dead_letter)

    def discard(self, dead_letter: DeadLetter | int) -> None:
        """Delete a dead letter for good."""
        self._runtime.check_open()
        self._portal.call(self._runtime.name, self._ecosystem.discard, dead_letter)

    def settle(self) -> None:
        """Wait until every accepted message has been processed and committed.

        Timers due by now count as accepted messages; later ones do not.
        """
        self._runtime.check_open()
        self._portal.call(self._runtime.name, self._ecosystem.settle)

    def wait_closed(self) -> None:
        """Once closed (or closing), wait until the store is released, to be opened again."""
        if self._runtime.stopped or self._runtime.forked_from is not None:
            return  # (in a forked child: the runtime is the parent's, no thread runs it here)
        with contextlib.suppress(trio.RunFinishedError):
            self._portal.call(self._runtime.name, self._runtime.wait_stopped)

    def close(self) -> None:
        """Close the store this ecosystem lives in (every ecosystem of it)."""
        runtime = self._runtime
        if runtime.closed:  # stopped by a failure, say: its store may not be released yet
            self.wait_closed()
            return
        with contextlib.suppress(EcosystemClosedError):
            self._portal.close_runtime(runtime)
