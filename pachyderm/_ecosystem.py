"""``Ecosystem``: the trio face of one ecosystem, used inside the caller's ``trio.run``."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import trio

from pachyderm._arguments import MAX_NAME_BYTES, storable_name
from pachyderm._dead_letters import DeadLetter
from pachyderm._entity import Entity
from pachyderm._followers import DEFAULT_FOLLOWER_BUFFER, Follower
from pachyderm._runtime import Runtime
from pachyderm.errors import InvalidArgumentError, describe

__all__ = ["DEFAULT_ECOSYSTEM", "Ecosystem", "check_ecosystem_id"]

DEFAULT_ECOSYSTEM = "default"

MessageT = TypeVar("MessageT")
StateT = TypeVar("StateT")


def check_ecosystem_id(ecosystem_id: object) -> str:
    if type(ecosystem_id) is not str or not ecosystem_id or not storable_name(ecosystem_id):
        raise InvalidArgumentError(
            f"ecosystem ids are non-empty str that can be stored (UTF-8, at most "
            f"{MAX_NAME_BYTES} bytes, no lone surrogates, no NUL), got "
            f"{describe(ecosystem_id)}; e.g. participate('test-42'), or a digest of a long id"
        )
    return ecosystem_id


class Ecosystem:
    """One ecosystem of a running store: send, follow, inspect.

    Entities, inboxes, followers and dead letters of one ecosystem never cross
    into another, even in the same store. Get one from ``LocalDisk.open(...)``
    or ``InMemory.open()``, or from :meth:`participate`.
    """

    def __init__(self, runtime: Runtime, ecosystem_id: str) -> None:
        self._runtime = runtime
        self._id = check_ecosystem_id(ecosystem_id)

    @property
    def id(self) -> str:
        """This ecosystem's id."""
        return self._id

    @property
    def runtime(self) -> Runtime:
        """The runtime hosting this ecosystem's store."""
        return self._runtime

    def __repr__(self) -> str:
        return f"<Ecosystem {self._id!r} in {self._runtime.name}>"

    def participate(self, ecosystem_id: str) -> Ecosystem:
        """Another ecosystem in the same store, isolated from this one."""
        return Ecosystem(self._runtime, ecosystem_id)

    def send(self, address: Entity[MessageT, Any], message: MessageT) -> Coroutine[Any, Any, None]:
        """Send ``message``; returns once it is in the recipient's durable inbox.

        Raises:
            CodecError: the message cannot be stored (nothing is stored).
            MessageTooLargeError: the encoded message is over ``max_message_bytes``.
            EcosystemClosedError: refused, the store closed first: nothing
                happened, safe to send again once it is open.
            OutcomeUnknownError: the store stopped while writing it: it may
                be stored; ``state_of`` after reopening tells.
        """
        # The runtime's coroutine itself, not one wrapping it: every suspension
        # and resumption of a send would pass through the extra frame.
        return self._runtime.send(self._id, address, message)

    async def send_sync(self, address: Entity[MessageT, StateT], message: MessageT) -> StateT:
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
        state: StateT = await self._runtime.send_sync(self._id, address, message)
        return state

    def follow(
        self, address: Entity[Any, StateT], *, buffer: int = DEFAULT_FOLLOWER_BUFFER
    ) -> Follower[StateT]:
        """Follow ``address``: use as ``async with eco.follow(address) as updates``.

        ``updates.state`` is its committed state now; iterating yields
        ``(address, state)`` for every committed change, in commit order. At
        most ``buffer`` unread updates are kept: when full, the oldest is
        dropped (counted in ``updates.dropped``), never the newest.
        """
        return Follower(self._runtime.subscribe(self._id, address, buffer))

    async def state_of(self, address: Entity[Any, StateT]) -> StateT:
        """The latest committed state of ``address``, without activating it."""
        await trio.lowlevel.checkpoint()
        state: StateT = self._runtime.state_of(self._id, address)
        return state

    async def dead_letters(self) -> list[DeadLetter]:
        """The messages whose activation failed, oldest first."""
        await trio.lowlevel.checkpoint()
        return self._runtime.dead_letters(self._id)

    async def redeliver(self, dead_letter: DeadLetter | int) -> None:
        """Move a dead letter back into its entity's inbox, to be processed again."""
        await self._runtime.redeliver(self._id, dead_letter)

    async def discard(self, dead_letter: DeadLetter | int) -> None:
        """Delete a dead letter for good."""
        await self._runtime.discard(self._id, dead_letter)

    async def settle(self) -> None:
        """Wait until every accepted message has been processed and committed.

        Timers due by now count as accepted messages; later ones do not. On
        Postgres, the messages this process accepted count wherever they run;
        what their activations send from other processes does not.
        """
        await self._runtime.settle()
