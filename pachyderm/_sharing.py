"""Hosting on a storage that other processes share (Postgres): what the runtime adds.

A process runs only the entities of the partitions it owns. What the others
do reaches it as *news*, taken under the runtime's lock: messages stored for
its entities, partitions it gained (their timers) or must hand over, replies
to messages it forwarded, and changes to entities it follows.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import trio

from pachyderm._commit import call_now
from pachyderm._dead_letters import decode_dead_letter
from pachyderm._entity import entity_classes
from pachyderm._log import log
from pachyderm._storage import WAITING_FOR_CLASS, Ident, PendingMessage, SharedBatch, SharedStorage
from pachyderm.errors import (
    ActivationError,
    PachydermError,
    RemoteActivationFailure,
    UnregisteredNameError,
    WaitingForClassError,
)

if TYPE_CHECKING:
    from pachyderm._runtime import Runtime

__all__ = ["Sharing"]

_TOUCH_FOLLOWS = 30.0  # seconds between "still following" marks

Answers = list[tuple[int, bytes | None, int | None]]
Updates = list[tuple[Ident, int, bytes]]


class Sharing:
    """One runtime's part in a shared storage: its news task, hand-over and followers."""

    def __init__(self, runtime: Runtime, storage: SharedStorage) -> None:
        self.runtime = runtime
        self.storage = storage
        self.followed: dict[Ident, int] = {}  # the last version told, by entity
        self._touch_at = time.monotonic() + _TOUCH_FOLLOWS  # next "still following" mark

    @trio.lowlevel.enable_ki_protection  # (like the runtime's own tasks: Ctrl-C goes to
    async def run(self, scope: trio.CancelScope) -> None:  # the app, not into the news)
        """Wait for news and read it in a worker thread, take it under the lock; until
        cancelled."""
        runtime = self.runtime
        with scope:
            while True:
                news = await trio.to_thread.run_sync(
                    self._read_news, abandon_on_cancel=True, limiter=runtime.threads
                )
                lost = self.storage.lost
                if news is None and lost is not None:
                    with runtime.lock:
                        runtime._fail(lost, "keeping partition leases")
                    return
                assert news is not None
                arrivals, answers, updates = news
                with runtime.lock:
                    if runtime.closed:
                        return
                    try:
                        self._tell_followers(updates)
                        self._take(arrivals, answers)
                    except BaseException as error:
                        runtime._fail(error, "reading news from the store")
                        return

    def _read_news(self) -> tuple[list[PendingMessage], Answers, Updates] | None:
        """In a worker thread (one hop for all of it): wait for news, then read what came;
        None when a lease was lost."""
        storage = self.storage
        storage.wait_news(storage.poll)
        if storage.lost is not None:
            return None
        arrivals = storage.arrivals()
        # (a copy of the dict is made at once, in C: the runtime's thread may change it)
        waiting = list(self.runtime.dispatcher.remote.copy())
        answers: Answers = storage.answers(waiting) if waiting else []
        updates: Updates = []
        if storage.following:
            updates = storage.updates()
            now = time.monotonic()
            if now >= self._touch_at:
                self._touch_at = now + _TOUCH_FOLLOWS
                storage.touch_follows()
        return arrivals, answers, updates

    def _take(self, arrivals: list[PendingMessage], answers: Answers) -> None:
        runtime = self.runtime
        storage = self.storage
        dispatcher = runtime.dispatcher
        for pending in arrivals:
            dispatcher.start(dispatcher.recover(pending))
        releases = storage.take_releases()
        if releases:
            self._hand_over(releases)
        gained, forwarded = storage.take_gained()
        for pending, batch, token in forwarded:  # after what the scan found: they are newer
            dispatcher.start(dispatcher.adopt(pending, batch, token))
        if gained:
            timers = runtime.timers
            # At most a window of them: the rest stay in storage, beyond a lower horizon.
            found = storage.timers_of(gained, timers.horizon, timers.window + 1)
            if len(found) > timers.window:
                timers.lower_horizon(found.pop().key)
            for timer in found:
                timers.gain(timer)
            due = timers.next_due()
            if due is not None:
                runtime._signal_timer(due)
        for seq, record, dead_letter_id in answers:
            entry = dispatcher.answered(seq)
            if entry is None:
                continue  # read twice (a connection lost in between): told once
            reply, _, ident = entry
            if dead_letter_id is None:
                reply.resolve(None if record is None else bytes(record), None, call_now)
            elif dead_letter_id == WAITING_FOR_CLASS:
                assert record is not None
                reply.resolve(None, _waiting(ident, bytes(record).decode()), call_now)
            else:
                reply.resolve(None, self._remote_failure(ident[0], dead_letter_id), call_now)
        # Answered, or taken over here with the partition (adopted above), or handed over:
        # a committer waiting for replies writes now, and the callers woken here join it.
        runtime.check_linger()

    def _tell_followers(self, updates: Updates) -> None:
        """Changes committed by other processes to entities followed here, each told once."""
        followed = self.followed
        followers = self.runtime.followers
        for ident, version, record in updates:
            if version > followed.get(ident, 0):
                followed[ident] = version
                followers.push(ident, record, call_now, version)

    def _hand_over(self, partitions: list[int]) -> None:
        """Stop running the entities of ``partitions`` and release them in the open group.

        Their messages are all stored (or stored by the open group), so the next
        owner finds them; a caller here waiting on one gets its reply from there.
        """
        runtime = self.runtime
        storage = self.storage
        dispatcher = runtime.dispatcher
        group = runtime.commit.open
        batch = cast(SharedBatch, group.batch)
        leaving = set(partitions)
        dispatcher.hand_overs += 1
        for record in list(runtime.residents.table.values()):
            if storage.partition(record.handle) not in leaving:
                continue
            for envelope in record.inbox:
                if envelope.reply is not None:
                    batch.want_reply(
                        envelope.token if envelope.group is group else None, envelope.seq
                    )
                    # (its group: whether it was stored says what a failure tells the caller)
                    dispatcher.await_reply(
                        envelope.seq, envelope.reply, envelope.group, record.ident
                    )
            if record.scheduled:
                record.scheduled = False
                dispatcher.run_queue.remove(record)
            runtime.residents.forget(record)
        runtime.timers.drop(lambda timer: storage.timer_partition(timer) in leaving)
        batch.hand_over(partitions)
        log("partitions.handed_over", store=runtime.name, partitions=partitions)
        runtime._signal_commit()

    def _remote_failure(self, eco: str, dead_letter_id: int) -> PachydermError:
        """The error of an activation that failed in another process, from its dead letter."""
        blob = self.storage.dead_letter(eco, dead_letter_id)
        if blob is None:  # already redelivered or discarded
            cause = RemoteActivationFailure("the activation failed in another process")
            return ActivationError(None, None, cause, (), dead_letter_id)
        letter = decode_dead_letter(dead_letter_id, blob)
        return ActivationError(
            letter.address,
            letter.message,
            RemoteActivationFailure(letter.error),
            letter.recent_messages,
            dead_letter_id,
        )


def _waiting(ident: Ident, name: str) -> WaitingForClassError:
    """What a sender hears when the process running its message's entity lacks a class."""
    _, entity_name, entity_id = ident
    address: object = ident
    if entity_name in entity_classes:
        address = entity_classes.resolve(entity_name)(entity_id)
    return WaitingForClassError(address, UnregisteredNameError(name, "entity class or value type"))
