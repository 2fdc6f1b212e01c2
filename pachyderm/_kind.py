"""``EcosystemKind``: what ``LocalDisk`` and ``InMemory`` are, a way of hosting ecosystems.

A kind opens stores. Its trio face, :meth:`EcosystemKind.open`, runs one in the
caller's ``trio.run``; its shell face (``send_sync``, ``send``, ``follow``,
``participate``, ...) runs one per location in a background thread, shared by
the whole process, so a Python shell can use it with no setup.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from pachyderm._activation import DEFAULT_MAX_MESSAGE_BYTES
from pachyderm._dead_letters import DeadLetter
from pachyderm._ecosystem import DEFAULT_ECOSYSTEM, Ecosystem, check_ecosystem_id
from pachyderm._entity import Entity
from pachyderm._follower import DEFAULT_FOLLOWER_BUFFER, ShellFollower
from pachyderm._runtime import DEFAULT_MAX_RESIDENT, Runtime
from pachyderm._shell import Portal, ShellEcosystem
from pachyderm._store import Store
from pachyderm.errors import PachydermError, describe

__all__ = ["EcosystemKind"]

StoreOpener = Callable[[str | None], tuple[Store, str]]
"""Opens the store at a location (None: the kind's default); returns it and a display name."""


class EcosystemKind:
    """A kind of ecosystem (``LocalDisk``, ``InMemory``): opens stores, and has a shell face."""

    def __init__(
        self, name: str, open_store: StoreOpener, default_location: Callable[[], str | None]
    ) -> None:
        self._name = name
        self._open_store = open_store
        self._default_location = default_location
        self._shell: dict[str | None, ShellEcosystem] = {}
        self._lock = threading.Lock()

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
    ) -> AsyncIterator[Ecosystem]:
        """Open a store in this ``trio.run``: ``async with LocalDisk.open("data/") as eco``.

        Pending messages found in the store are processed. On exit, what is
        done is committed and the store is closed; accepted messages not yet
        processed stay in their durable inboxes for next time.

        Args:
            location: where the store lives (LocalDisk: a directory).
            ecosystem: the id of the ecosystem to hand back.
            durability: ``"fsync"`` (default: a commit survives power loss) or
                ``"flush"`` (survives a process crash, not an OS crash or power loss).
            max_message_bytes: the largest encoded message accepted.
            max_resident: how many entities stay in memory; idle ones beyond
                it are passivated (their state stays stored).
        """
        check_ecosystem_id(ecosystem)
        store, name = self._open_store(location)
        runtime = Runtime(
            store,
            name=name,
            durability=durability,
            max_message_bytes=max_message_bytes,
            max_resident=max_resident,
        )
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(runtime.run)
                except BaseException:
                    store.close()
                    raise
                try:
                    yield Ecosystem(runtime, ecosystem)
                finally:
                    with trio.CancelScope(shield=True):
                        await runtime.aclose()
        except BaseExceptionGroup as group:
            # The caller's block runs inside the runtime's nursery; hand its
            # error back as raised, not wrapped in a group of one.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    # -- shell face ----------------------------------------------------------

    def connect(self, location: str | None = None, **options: Any) -> ShellEcosystem:
        """The shell face of the default ecosystem at ``location``, opened on first use.

        Options are those of :meth:`open`; they apply when this call opens the store.
        """
        if location is None:
            location = self._default_location()
        if location is not None:
            location = os.path.abspath(location)
        with self._lock:
            shell = self._shell.get(location)
            if shell is None or shell._ecosystem.runtime.closed:
                store, name = self._open_store(location)
                try:
                    runtime = Runtime(store, name=name, **options)
                    portal = Portal.get()
                    portal.start(runtime)
                except BaseException:
                    store.close()
                    raise
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
            raise PachydermError(
                f"the ecosystem argument must come from {self._name}.participate(...), "
                f"got {describe(ecosystem)}"
            )
        return ecosystem

    def send_sync(
        self, address: Entity[Any, Any], message: Any, ecosystem: ShellEcosystem | None = None
    ) -> Any:
        """Send and return the entity's new state once durable (default ecosystem unless given)."""
        return self._pick(ecosystem).send_sync(address, message)

    def send(
        self, address: Entity[Any, Any], message: Any, ecosystem: ShellEcosystem | None = None
    ) -> None:
        """Send; returns once the message is in the recipient's durable inbox."""
        self._pick(ecosystem).send(address, message)

    def follow(
        self,
        address: Entity[Any, Any],
        ecosystem: ShellEcosystem | None = None,
        *,
        buffer: int = DEFAULT_FOLLOWER_BUFFER,
    ) -> ShellFollower:
        """Follow an entity: ``.state`` now, then ``.flush()``, ``.get()`` or iteration."""
        return self._pick(ecosystem).follow(address, buffer=buffer)

    def state_of(self, address: Entity[Any, Any], ecosystem: ShellEcosystem | None = None) -> Any:
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
        with self._lock:
            shells = list(self._shell.values())
            self._shell.clear()
        for shell in shells:
            shell.close()
