"""A commit group: everything to write in one atomic batch, and whom to tell once it is durable."""

from __future__ import annotations

from collections.abc import Coroutine
from functools import partial
from typing import Any

import trio

from pachyderm._resident import Reply, Resident, Wake, wake_now
from pachyderm._store import Operation

__all__ = ["Group", "finish", "operations", "sleep_until_finished", "wait_durable"]


class Group:
    """Everything to write in one atomic batch, and who to tell once it is durable."""

    __slots__ = (
        "activations",
        "cancelled",
        "error",
        "finished",
        "operations",
        "replies",
        "tasks",
        "waiters",
    )

    def __init__(self) -> None:
        self.operations: list[Operation | None] = []  # None: a put cancelled by its delete
        self.cancelled = 0
        # One per activation: the entity and its new state blob (None: it failed).
        self.activations: list[tuple[Resident, bytes | None]] = []
        self.replies: list[tuple[Reply, bytes | None, BaseException | None]] = []
        self.waiters: list[Reply] = []  # other threads waiting for this group to be durable
        # Trio tasks asleep until this group is durable. Woken directly rather
        # than through a trio.Event: every send sleeps once, so this is the
        # hottest wait there is.
        self.tasks: list[trio.lowlevel.Task] = []
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
    if group.tasks:  # a wake-up nobody waits for would still cost a thread hop
        wake(partial(_reschedule_all, group.tasks))


def _reschedule_all(tasks: list[trio.lowlevel.Task]) -> None:
    reschedule = trio.lowlevel.reschedule
    for task in tasks:
        reschedule(task)
    tasks.clear()


def operations(group: Group) -> list[Operation]:
    """The group's writes, without the cancelled ones."""
    if not group.cancelled:
        return group.operations  # type: ignore[return-value]
    return [operation for operation in group.operations if operation is not None]


async def wait_durable(group: Group) -> None:
    """Wait until ``group`` is written; raise what stopped it, if anything did."""
    if not group.finished:
        await sleep_until_finished(group.tasks)
    if group.error is not None:
        raise group.error


def sleep_until_finished(tasks: list[trio.lowlevel.Task]) -> Coroutine[Any, Any, object]:
    """Put the current task to sleep among a group's ``tasks`` (await the result)."""
    task = trio.lowlevel.current_task()
    tasks.append(task)

    def forget(_: object) -> trio.lowlevel.Abort:
        tasks.remove(task)  # cancelled: it no longer waits (the message stays accepted)
        return trio.lowlevel.Abort.SUCCEEDED

    return trio.lowlevel.wait_task_rescheduled(forget)
