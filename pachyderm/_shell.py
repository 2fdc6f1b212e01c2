"""The shell face: blocking verbs for a Python shell, backed by trio in a background thread."""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from pachyderm._activation import load_state, refuse_inside_activation
from pachyderm._dead_letters import DeadLetter
from pachyderm._ecosystem import Ecosystem
from pachyderm._entity import Entity
from pachyderm._follower import DEFAULT_FOLLOWER_BUFFER, ShellFollower
from pachyderm._log import log
from pachyderm._resident import ThreadReply
from pachyderm._runtime import Runtime
from pachyderm.errors import EcosystemClosedError, PachydermError

__all__ = ["Portal", "ShellEcosystem"]

T = TypeVar("T")


def check_blocking_caller() -> None:
    """The shell face blocks: refuse it inside activate() and inside trio, saying why."""
    refuse_inside_activation("the shell face (send_sync, send, follow, ...)")
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return
    raise PachydermError(
        "the shell face (LocalDisk.send_sync, ...) blocks, so it cannot be used "
        "inside trio; use the trio face instead: async with LocalDisk.open(path) as eco"
    )


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

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._runtimes: list[Runtime] = []
        # The portal's thread holds this whenever it runs, and lends it out
        # while it sleeps waiting for I/O: a caller that gets it may work on
        # an idle runtime's state in its own thread (Runtime.send_here).
        self.state_lock = threading.Lock()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), name="pachyderm-shell", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        atexit.register(self.stop)

    async def _main(self) -> None:
        self.state_lock.acquire()
        trio.lowlevel.add_instrument(_LendWhileAsleep(self.state_lock))
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            for runtime in self._runtimes:
                await runtime.aclose()
            nursery.cancel_scope.cancel()

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an async function in the portal and wait for its result."""
        check_blocking_caller()
        return trio.from_thread.run(function, *args, trio_token=self._token)

    def call_sync(self, function: Callable[..., T], *args: Any) -> T:
        """Run a sync function in the portal's thread and wait for its result."""
        check_blocking_caller()
        return trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def start(self, runtime: Runtime) -> None:
        """Start ``runtime`` in the portal; errors while opening are raised here."""
        self.call(self._nursery.start, self._host, runtime)
        self._runtimes.append(runtime)

    async def _host(self, runtime: Runtime, *, task_status: trio.TaskStatus[None]) -> None:
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

    def close_runtime(self, runtime: Runtime) -> None:
        if runtime in self._runtimes:
            self.call(runtime.aclose)
            self._runtimes.remove(runtime)


class _LendWhileAsleep(trio.abc.Instrument):
    """Release the portal's state lock while trio waits for I/O; take it back on waking."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def before_io_wait(self, timeout: float) -> None:
        self._lock.release()

    def after_io_wait(self, timeout: float) -> None:
        self._lock.acquire()


class ShellEcosystem:
    """The shell face of one ecosystem: the trio face's verbs, blocking, from any thread."""

    def __init__(self, portal: Portal, ecosystem: Ecosystem) -> None:
        self._portal = portal
        self._ecosystem = ecosystem

    @property
    def id(self) -> str:
        """This ecosystem's id."""
        return self._ecosystem.id

    def __repr__(self) -> str:
        return f"<ShellEcosystem {self.id!r} in {self._ecosystem.runtime.name}>"

    def _check_open(self) -> None:
        self._ecosystem.runtime.check_open()

    def participate(self, ecosystem_id: str) -> ShellEcosystem:
        """Another ecosystem in the same store, isolated from this one."""
        return ShellEcosystem(self._portal, self._ecosystem.participate(ecosystem_id))

    def send(self, address: Entity[Any, Any], message: Any) -> None:
        """Send ``message``; returns once it is in the recipient's durable inbox."""
        self._send(address, message, wait_for_activation=False).wait()

    def send_sync(self, address: Entity[Any, Any], message: Any) -> Any:
        """Send ``message`` and return the entity's state once its activation is durable."""
        reply = self._send(address, message, wait_for_activation=True)
        return load_state(address, reply.wait())

    def _send(
        self, address: Entity[Any, Any], message: Any, *, wait_for_activation: bool
    ) -> ThreadReply:
        check_blocking_caller()
        runtime = self._ecosystem.runtime
        runtime.check_open()
        blob = runtime.encode_message(address, message)  # errors surface in this thread
        key = self._ecosystem.key
        lock = self._portal.state_lock
        if lock.acquire(blocking=False):  # the portal sleeps: do the work in this thread
            try:
                reply = runtime.send_here(key, address, blob, sync=wait_for_activation)
            finally:
                lock.release()
            if reply is not None:
                return reply
        return runtime.send_threadsafe(key, address, blob, wait_for_activation=wait_for_activation)

    def follow(
        self, address: Entity[Any, Any], *, buffer: int = DEFAULT_FOLLOWER_BUFFER
    ) -> ShellFollower:
        """Follow ``address``: ``.state`` now, then every committed change."""
        self._check_open()
        runtime = self._ecosystem.runtime
        subscription = self._portal.call_sync(
            runtime.subscribe, self._ecosystem.key, address, buffer
        )

        def close() -> None:
            if runtime.closed:
                subscription.end()
            else:
                self._portal.call_sync(subscription.close)

        return ShellFollower(subscription, close)

    def state_of(self, address: Entity[Any, Any]) -> Any:
        """The latest committed state of ``address``, without activating it."""
        self._check_open()
        return self._portal.call(self._ecosystem.state_of, address)

    def dead_letters(self) -> list[DeadLetter]:
        """The messages whose activation failed, oldest first."""
        self._check_open()
        return self._portal.call(self._ecosystem.dead_letters)

    def redeliver(self, dead_letter: DeadLetter | int) -> None:
        """Move a dead letter back into its entity's inbox, to be processed again."""
        self._check_open()
        self._portal.call(self._ecosystem.redeliver, dead_letter)

    def discard(self, dead_letter: DeadLetter | int) -> None:
        """Delete a dead letter for good."""
        self._check_open()
        self._portal.call(self._ecosystem.discard, dead_letter)

    def settle(self) -> None:
        """Wait until every accepted message has been processed and committed."""
        self._check_open()
        self._portal.call(self._ecosystem.settle)

    def close(self) -> None:
        """Close the store this ecosystem lives in (every ecosystem of it)."""
        runtime = self._ecosystem.runtime
        if runtime.closed:
            return
        with contextlib.suppress(EcosystemClosedError):
            self._portal.close_runtime(runtime)
