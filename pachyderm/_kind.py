"""``EcosystemKind``: what ``LocalDisk`` and ``InMemory`` are, a way of hosting ecosystems.

A kind opens storages. Its trio face, :meth:`EcosystemKind.open`, runs one in
the caller's ``trio.run``; its shell face (``send_sync``, ``send``,
``follow``, ``participate``, ...) runs one per location in a background
thread, shared by the whole process, so a Python shell can use it with no setup.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from pachyderm._clock import Clock
from pachyderm._dead_letters import DeadLetter
from pachyderm._ecosystem import DEFAULT_ECOSYSTEM, Ecosystem, check_ecosystem_id
from pachyderm._entity import Entity
from pachyderm._followers import DEFAULT_FOLLOWER_BUFFER, ShellFollower
from pachyderm._forks import track
from pachyderm._runtime import DEFAULT_MAX_RESIDENT, Runtime
from pachyderm._shell import Portal, ShellEcosystem, kind_of
from pachyderm._step import DEFAULT_MAX_MESSAGE_BYTES
from pachyderm._storage import Storage
from pachyderm.errors import InvalidArgumentError, describe

__all__ = ["EcosystemKind", "StorageOpener"]

StorageOpener = Callable[[str | None], Storage]
"""Opens the storage at a location (None: the kind's default location)."""

MessageT = TypeVar("MessageT")
StateT = TypeVar("StateT")


class EcosystemKind:
    """A kind of ecosystem (``LocalDisk``, ``InMemory``): opens stores, and has a shell face.

    Args:
        name: how the kind is called in messages (``"LocalDisk"``).
        open_storage: opens the storage at a location.
        default_location: the shell face's location when none is given.
    """

    _paths = True  # locations are file paths (made absolute); a Postgres DSN is not

    def __init__(
        self,
        name: str,
        open_storage: StorageOpener,
        default_location: Callable[[], str | None],
    ) -> None:
        self._name = name
        self._open_storage = open_storage
        self._default_location = default_location
        self._shell: dict[str | None, ShellEcosystem] = {}
        self._lock = threading.Lock()
        track(self)

    def forsake(self, parent: int) -> None:
        """In a forked child: a fresh lock (its holder may be a thread the child lacks).

        The shell ecosystems stay: their runtimes refuse use, and :meth:`connect`
        does not reopen them; :meth:`close` forgets them.
        """
        self._lock = threading.Lock()
        Portal.forsake()

    def __repr__(self) -> str:
        return f"<ecosystem kind {self._name}>"

    # -- trio face -----------------------------------------------------------

    @asynccontextmanager
    async def open(
        self,
        location: str | None = None,
        *,
        ecosystem: str = DEFAULT_ECOSYSTEM,
        durability: str = "fsync",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        clock: Clock | None = None,
    ) -> AsyncIterator[Ecosystem]:
        """Open a store in this ``trio.run``: ``async with LocalDisk.open("data/") as eco``.

        Pending messages found in the store are processed, and overdue timers
        fire. On exit, what is done is committed and the store is closed;
        accepted messages not yet processed stay in their durable inboxes for
        next time.

        Args:
            location: where the store lives (LocalDisk: a directory).
            ecosystem: the id of the ecosystem to hand back.
            durability: ``"fsync"`` (default: a commit survives power loss) or
                ``"flush"`` (survives a process crash, not an OS crash or power loss).
            max_message_bytes: the largest encoded message accepted.
            max_resident: how many entities stay in memory; idle ones beyond
                it are passivated (their state stays stored).
            clock: what timers are timed by: the wall clock unless given
                (a :class:`~pachyderm.ManualClock` in tests).
        """
        async with self._open(
            self._open_storage,
            location,
            ecosystem=ecosystem,
            durability=durability,
            max_message_bytes=max_message_bytes,
            max_resident=max_resident,
            clock=clock,
        ) as opened:
            yield opened

    @asynccontextmanager
    async def _open(
        self,
        opener: StorageOpener,
        location: str | None,
        *,
        ecosystem: str,
        durability: str,
        max_message_bytes: int,
        max_resident: int,
        clock: Clock | None,
    ) -> AsyncIterator[Ecosystem]:
        """:meth:`open` with the storage opened by ``opener`` (a kind's own options in it)."""
        check_ecosystem_id(ecosystem)
        runtime = self._runtime(
            opener, location, durability, max_message_bytes, max_resident, clock
        )
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(runtime.run)
                except BaseException:
                    runtime.storage.close()
                    raise
                try:
                    yield Ecosystem(runtime, ecosystem)
                finally:
                    with trio.CancelScope(shield=True):
                        await runtime.aclose()
        except BaseExceptionGroup as group:
            # The caller's block runs inside the runtime's nursery; hand its
            # error back as raised, not wrapped in a group of one. When the
            # runtime stopped on a failure and the block failed because of it,
            # the block's error names that failure: it alone is raised.
            errors = list(group.exceptions)
            if len(errors) == 2 and runtime.failure is not None:
                errors = [e for e in errors if e.__cause__ is not runtime.failure] or errors
            if len(errors) == 1:
                _raise_as_raised(errors[0])
            raise

    def _runtime(
        self,
        opener: StorageOpener,
        location: str | None,
        durability: str,
        max_message_bytes: int,
        max_resident: int,
        clock: Clock | None,
    ) -> Runtime:
        """A runtime on the storage at ``location``, options checked before it is opened."""
        Runtime.check_options(durability, max_message_bytes, max_resident, clock)
        storage = opener(location)
        try:
            return Runtime(
                storage,
                durability=durability,
                max_message_bytes=max_message_bytes,
                max_resident=max_resident,
                clock=clock,
            )
        except BaseException:
            storage.close()
            raise

    # -- shell face ----------------------------------------------------------

    def connect(
        self,
        location: str | None = None,
        *,
        durability: str = "fsync",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        clock: Clock | None = None,
    ) -> ShellEcosystem:
        """The shell face of the default ecosystem at ``location``, opened on first use.

        Options are those of :meth:`open`; they apply when this call opens the store.
        """
        return self._connect(
            self._open_storage,
            location,
            durability=durability,
            max_message_bytes=max_message_bytes,
            max_resident=max_resident,
            clock=clock,
        )

    def _connect(
        self,
        opener: StorageOpener,
        location: str | None,
        *,
        durability: str,
        max_message_bytes: int,
        max_resident: int,
        clock: Clock | None,
    ) -> ShellEcosystem:
        """:meth:`connect` with the storage opened by ``opener``."""
        if location is None:
            location = self._default_location()
        if self._paths and isinstance(location, str | os.PathLike):
            location = os.path.abspath(location)  # else the kind's opener says what it wants
        Runtime.check_options(durability, max_message_bytes, max_resident, clock)
        with self._lock:
            shell = self._shell.get(location)
            if shell is not None and not shell.runtime.closed:
                if clock is not None and clock is not shell.runtime.clock:
                    raise InvalidArgumentError(
                        f"{self._name}{'' if location is None else f' at {location!r}'} is "
                        f"already open here with "
                        f"clock={shell.runtime.clock!r}, so clock={clock!r} would be ignored: "
                        f"close() it first, or pass the clock on the first connect"
                    )
            else:
                if shell is not None and shell.runtime.forked_from is not None:
                    shell.runtime.check_open()  # ForkedProcessError: not reopened behind the parent
                if shell is not None:  # a close() may be under way: its store is released first
                    shell.wait_closed()
                runtime = self._runtime(
                    opener, location, durability, max_message_bytes, max_resident, clock
                )
                try:
                    portal = Portal.get()
                except BaseException:
                    runtime.storage.close()
                    raise
                portal.start(runtime)  # if it fails, the store is closed (never under a reader)
                shell = ShellEcosystem(portal, Ecosystem(runtime, DEFAULT_ECOSYSTEM))
                self._shell[location] = shell
            return shell

    def participate(self, ecosystem_id: str, *, location: str | None = None) -> ShellEcosystem:
        """An ecosystem isolated from all others in the same store (default store unless given)."""
        return self.connect(location).participate(ecosystem_id)

    def _pick(self, ecosystem: ShellEcosystem | None) -> ShellEcosystem:
        if ecosystem is None:
            return self.connect()
        if not isinstance(ecosystem, ShellEcosystem):
            raise InvalidArgumentError(
                f"the ecosystem argument must come from {self._name}.participate(...), "
                f"got {describe(ecosystem)}"
            )
        store = ecosystem.runtime.name
        if kind_of(store) != self._name:
            raise InvalidArgumentError(
                f"the ecosystem argument must be one of {self._name}'s, from "
                f"{self._name}.participate(...); got {ecosystem!r}, of {store}: call its own "
                f"verbs instead (ecosystem.send_sync(...))"
            )
        return ecosystem

    def send_sync(
        self,
        address: Entity[MessageT, StateT],
        message: MessageT,
        ecosystem: ShellEcosystem | None = None,
    ) -> StateT:
        """Send and return the entity's new state once durable (default ecosystem unless given)."""
        return self._pick(ecosystem).send_sync(address, message)

    def send(
        self,
        address: Entity[MessageT, Any],
        message: MessageT,
        ecosystem: ShellEcosystem | None = None,
    ) -> None:
        """Send; returns once the message is in the recipient's durable inbox."""
        self._pick(ecosystem).send(address, message)

    def follow(
        self,
        address: Entity[Any, StateT],
        ecosystem: ShellEcosystem | None = None,
        *,
        buffer: int = DEFAULT_FOLLOWER_BUFFER,
    ) -> ShellFollower[StateT]:
        """Follow an entity: ``.state`` now, then ``.flush()``, ``.get()`` or iteration."""
        return self._pick(ecosystem).follow(address, buffer=buffer)

    def state_of(
        self, address: Entity[Any, StateT], ecosystem: ShellEcosystem | None = None
    ) -> StateT:
        """The latest committed state of an entity, without activating it."""
        return self._pick(ecosystem).state_of(address)

    def dead_letters(self, ecosystem: ShellEcosystem | None = None) -> list[DeadLetter]:
        """The messages whose activation failed, oldest first."""
        return self._pick(ecosystem).dead_letters()

    def redeliver(
        self, dead_letter: DeadLetter | int, ecosystem: ShellEcosystem | None = None
    ) -> None:
        """Move a dead letter back into its entity's inbox."""
        self._pick(ecosystem).redeliver(dead_letter)

    def discard(
        self, dead_letter: DeadLetter | int, ecosystem: ShellEcosystem | None = None
    ) -> None:
        """Delete a dead letter for good."""
        self._pick(ecosystem).discard(dead_letter)

    def settle(self, ecosystem: ShellEcosystem | None = None) -> None:
        """Wait until every accepted message has been processed and committed."""
        self._pick(ecosystem).settle()

    def close(self) -> None:
        """Close every store the shell face opened (they reopen on next use)."""
        # Kept in the table while they close: a call meanwhile finds its store
        # closing, and waits for it to be released before opening it again.
        with self._lock:
            shells = list(self._shell.items())
        for _, shell in shells:
            shell.close()
        with self._lock:
            for location, shell in shells:
                if self._shell.get(location) is shell:  # (not opened again meanwhile)
                    del self._shell[location]


def _raise_as_raised(error: BaseException) -> None:
    """Raise ``error``, taken out of the group that held it, with the cause and context it
    was raised with (a lost partition, say, or the error it was handling): raising it
    here would make the group its context."""
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
