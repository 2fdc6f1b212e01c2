"""Group commit: everything produced since the last write goes out in one atomic batch.

The *open* group collects the changes of every acceptance and activation as
they happen (its storage batch) and remembers who to tell once they are
durable: callers waiting for a reply, tasks and threads waiting for their
message to be accepted, followers. One group at a time is *being written*;
groups are written in order, so an activation can only become durable
together with, or after, the effects it saw. Whoever writes (the runtime's
committer task, or a caller's thread that found nobody writing) seals the open
group, writes it without holding the runtime's lock, then completes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from pachyderm._storage import Batch, Storage

if TYPE_CHECKING:
    from pachyderm._entity import Entity
    from pachyderm._residents import Resident

__all__ = [
    "Group",
    "GroupCommit",
    "Reply",
    "ThreadReply",
    "TrioReply",
    "Wake",
    "call_now",
    "sleep_until_finished",
    "wait_durable",
]

Wake = Callable[[Callable[[], object]], None]
"""Runs a trio wake-up (an ``Event.set``): now on the runtime's thread, or posted to it."""


def call_now(wake_up: Callable[[], object]) -> None:
    wake_up()


class Reply:
    """An outcome someone waits for: a stored record, or an error. Resolved once."""

    __slots__ = ("error", "record", "resolved")

    def __init__(self) -> None:
        self.record: bytes | None = None
        self.error: BaseException | None = None
        self.resolved = False

    def resolve(self, record: bytes | None, error: BaseException | None, wake: Wake) -> None:
        if not self.resolved:
            self.resolved = True
            self.record = record
            self.error = error
            self._wake(wake)

    def _wake(self, wake: Wake) -> None:
        raise NotImplementedError

    def result(self) -> bytes | None:
        """The record, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.record


class TrioReply(Reply):
    """A reply awaited by a task in the runtime's own trio run.

    The task sleeps and is rescheduled directly, as a group's waiters are
    (no trio.Event: a send_sync waits once, so this is a hot wait too). The
    wake-up runs on the runtime's thread, so it and :meth:`wait` never race.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self.record = self.error = None
        self.resolved = False
        self._task: trio.lowlevel.Task | None = None

    def _wake(self, wake: Wake) -> None:
        wake(self._reschedule)

    def _reschedule(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._task = None  # cancelled: the message stays accepted; nobody waits for it
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> bytes | None:
        if not self.resolved:
            self._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        return self.result()


_get_ident = threading.get_ident
_new_lock = threading.Lock


class ThreadReply(Reply):
    """A reply waited for by another thread (the shell face), without entering trio.

    ``lead`` is set when the caller's own thread accepted its message and
    should write its group at once, without any wake-up. Its thread may also
    be woken before it is resolved (:meth:`hand_over`), to write the group its
    work is in. Each wake-up releases the lock once and is consumed by
    :meth:`wait_signal`, even one that came before the thread waited; a thread
    asked to lead is resolved only by its own write, after it woke.
    """

    __slots__ = ("_lock", "lead", "thread")

    def __init__(self) -> None:
        self.record = self.error = None
        self.resolved = self.lead = False
        self.thread = _get_ident()
        self._lock = lock = _new_lock()
        lock.acquire()  # released when resolved, from whichever thread resolves it

    def _wake(self, wake: Wake) -> None:
        self._lock.release()  # thread-safe: no need to go through the runtime's thread

    def hand_over(self) -> None:
        """Wake the waiting thread to lead (call with the runtime's lock held).

        Not through ``lead``: a thread that saw it before waiting would lead
        without consuming this wake-up, and its own resolution would then
        release an unlocked lock.
        """
        self._lock.release()

    def wait_signal(self) -> None:
        """Block until resolved or asked to lead (interruptible: the outcome stays unknown)."""
        if not self.resolved:
            self._lock.acquire()

    def wait(self) -> bytes | None:
        """Block until resolved; the record, or raise the error."""
        self.wait_signal()
        return self.result()


class Group:
    """One atomic batch of changes, and who to tell once it is durable."""

    __slots__ = (
        "activations",
        "batch",
        "carried",
        "error",
        "finished",
        "number",
        "replies",
        "replies_due",
        "tasks",
        "waiters",
    )

    def __init__(self, batch: Batch, number: int) -> None:
        self.batch = batch
        self.number = number
        # One per activation: the entity and its new record (None: it failed).
        self.activations: list[tuple[Resident, bytes | None]] = []
        self.replies: list[tuple[Reply, bytes | None, BaseException | None]] = []
        # Replies to messages accepted in an earlier group (None: found at open), and the
        # entity: if this group is never written, the message still waits in its inbox.
        self.carried: list[tuple[Reply, Group | None, Entity[Any, Any] | None]] = []
        self.waiters: list[Reply] = []  # threads waiting for this group to be durable
        # Trio tasks asleep until this group is durable, woken directly rather
        # than through a trio.Event: every send sleeps once, so this is the
        # hottest wait there is.
        self.tasks: list[trio.lowlevel.Task] = []
        self.finished = False
        self.error: BaseException | None = None
        # Callers waiting on replies to its messages from other processes (shared storage).
        self.replies_due = 0

    def finish(self, error: BaseException | None, wake: Wake) -> None:
        """Tell everyone waiting on this group that it is durable, or why it is not."""
        self.error = error
        for reply, record, failure in self.replies:
            # A failed write first: what the reply would say (a dead letter, say) was not stored.
            reply.resolve(record, error or failure, wake)
        for waiter in self.waiters:
            waiter.resolve(None, error, wake)
        self.finished = True
        if self.tasks:  # a wake-up nobody waits for would still cost a thread hop
            wake(partial(_reschedule_all, self.tasks))


def _reschedule_all(tasks: list[trio.lowlevel.Task]) -> None:
    reschedule = trio.lowlevel.reschedule
    for task in tasks:
        reschedule(task)
    tasks.clear()


class GroupCommit:
    """The open group, the one being written, and how long writes take.

    Every method but :meth:`write` must be called with the runtime's lock held.
    """

    def __init__(self, storage: Storage, *, sync: bool) -> None:
        self.storage = storage
        self.sync = sync
        self.open = Group(storage.batch(), 0)
        self.writing: Group | None = None
        self.seconds = 0.0  # moving average of how long a write takes
        self.commits = 0

    def seal(self, next_seq: int) -> Group:
        """Close the open group for writing and open the next one."""
        group = self.open
        group.batch.next_sequence(next_seq)
        self.open = Group(self.storage.batch(), group.number + 1)
        self.writing = group  # stays set if the write fails: the runtime answers it
        return group

    def write(self, group: Group) -> float:
        """Write ``group`` (without the lock); return how long that took, thread hops excluded."""
        started = time.perf_counter()
        self.storage.write(group.batch, sync=self.sync)
        return time.perf_counter() - started

    def written(self, seconds: float) -> None:
        """The group being written is durable."""
        self.writing = None
        self.seconds = 0.8 * self.seconds + 0.2 * seconds
        self.commits += 1


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
