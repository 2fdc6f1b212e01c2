"""A commit group: everything to write in one atomic batch, and whom to tell once it is durable."""

from __future__ import annotations

import trio

from pachyderm._resident import Reply, Resident
from pachyderm._store import Operation

__all__ = ["Group", "wait_durable"]


class Group:
    """Everything to write in one atomic batch, and who to tell once it is durable."""

    __slots__ = ("done", "error", "operations", "published", "records", "replies")

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self.published: list[tuple[Resident, bytes]] = []
        self.records: list[Resident] = []
        self.replies: list[tuple[Reply, bytes | None, BaseException | None]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


async def wait_durable(group: Group) -> None:
    """Wait until ``group`` is written; raise what stopped it, if anything did."""
    await group.done.wait()
    if group.error is not None:
        raise group.error
