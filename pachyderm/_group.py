"""A commit group: everything to write in one atomic batch, and whom to tell once it is durable."""

from __future__ import annotations

import trio

from pachyderm._resident import Reply, Resident, Wake, wake_now
from pachyderm._store import Operation

__all__ = ["Group", "finish", "operations", "wait_durable"]


class Group:
    """Everything to write in one atomic batch, and who to tell once it is durable."""

    __slots__ = (
        "awaited",
        "cancelled",
        "done",
        "error",
        "finished",
        "operations",
        "published",
        "records",
        "replies",
        "waiters",
    )

    def __init__(self) -> None:
        self.operations: list[Operation | None] = []  # None: a put cancelled by its delete
        self.cancelled = 0
        self.published: list[tuple[Resident, bytes]] = []
        self.records: list[Resident] = []
        self.replies: list[tuple[Reply, bytes | None, BaseException | None]] = []
        self.waiters: list[Reply] = []  # other threads waiting for this group to be durable
        self.done = trio.Event()
        self.awaited = False  # a trio task waits on done
        self.finished = False
        self.error: BaseException | None = None


def finish(group: Group, error: BaseException | None = None, wake: Wake = wake_now) -> None:
    """Tell everyone waiting on ``group`` that it is durable, or why it is not."""
    group.error = error
    for reply, state_blob, failure in group.replies:
        reply.resolve(state_blob, failure or error, wake)
    for waiter in group.waiters:
        waiter.resolve(None, error, wake)
    group.finished = True
    if group.awaited:  # a wake-up nobody waits for would still cost a thread hop
        wake(group.done.set)


def operations(group: Group) -> list[Operation]:
    """The group's writes, without the cancelled ones."""
    if not group.cancelled:
        return group.operations  # type: ignore[return-value]
    return [operation for operation in group.operations if operation is not None]


async def wait_durable(group: Group) -> None:
    """Wait until ``group`` is written; raise what stopped it, if anything did."""
    if not group.finished:
        group.awaited = True
        await group.done.wait()
    if group.error is not None:
        raise group.error
