"""The live runtime: serial activations, durable group commit, followers, passivation.

One runtime serves one store (a LevelDB directory, or a set of dicts) and every
ecosystem in it. It runs two trio tasks:

- the *dispatcher* takes entities from a FIFO run queue and runs one
  activation at a time: an entity is in the queue at most once, so it never
  has two activations running, and its inbox is consumed in acceptance order;
- the *committer* takes everything the dispatcher and senders produced since
  its last write (the open group) and writes it as one atomic batch, with one
  fsync for all of it: group commit. Only then are callers answered and
  followers told.

A message sent through the trio face to an idle entity skips the queue: its
activation runs in the sender's step, as the dispatcher would have run it next.

A write goes to a worker thread, or runs inline when it is quick and no
other task could use the time (see ``_commit_open_group``). While a worker
thread writes, activations go on: they are pipelined. That is safe because
groups are written in order: a later activation's effects can only become
durable together with, or after, the effects it saw.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from pachyderm import _layout as layout
from pachyderm._activation import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Failure,
    activate,
    encode_message,
    load_state,
)
from pachyderm._codec import decode
from pachyderm._dead_letters import (
    DeadLetter,
    dead_letter_message_blob,
    decode_dead_letter,
    encode_dead_letter,
)
from pachyderm._entity import Entity, entity_classes
from pachyderm._follower import DEFAULT_FOLLOWER_BUFFER, Subscription
from pachyderm._group import Group, finish, operations, sleep_until_finished, wait_durable
from pachyderm._log import log, logging_enabled
from pachyderm._resident import (
    RECENT_MESSAGES,
    Envelope,
    Ident,
    Reply,
    Resident,
    ThreadReply,
    TrioReply,
)
from pachyderm._store import Operation, Store
from pachyderm._values import value_types
from pachyderm.errors import (
    ActivationError,
    EcosystemClosedError,
    InvalidAddressError,
    PachydermError,
    UnknownDeadLetterError,
    UnregisteredNameError,
    describe,
)

__all__ = ["DEFAULT_MAX_RESIDENT", "Runtime"]

DEFAULT_MAX_RESIDENT = 10_000
_encode_seq = layout.encode_seq
_DISPATCH_BATCH = 256
_JOIN_ROUNDS = 4
INLINE_WRITE = 0.002
"""Writes faster than this (seconds, moving average) run in the runtime's thread when no
other task is runnable and no activation waits; slower ones go to a worker thread."""


class Runtime:
    """Hosts every ecosystem of one store. Start with ``await nursery.start(runtime.run)``."""

    def __init__(
        self,
        store: Store,
        *,
        name: str,
        durability: str = "fsync",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_resident: int = DEFAULT_MAX_RESIDENT,
    ) -> None:
        if durability not in ("fsync", "flush"):
            raise ValueError(f"durability must be 'fsync' or 'flush', got {durability!r}")
        for option, value in (
            ("max_message_bytes", max_message_bytes),
            ("max_resident", max_resident),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{option} must be an int >= 1, got {describe(value)}")
        self.name = name
        self.store = store
        self.sync = durability == "fsync"
        self.max_message_bytes = max_message_bytes
        self.max_resident = max_resident
        self.token: trio.lowlevel.TrioToken | None = None
        self.started = False
        self.closed = False
        self.failure: BaseException | None = None
        self.statistics = {"activations": 0, "failures": 0, "commits": 0, "passivated": 0}
        self._resident: OrderedDict[Ident, Resident] = OrderedDict()
        self._run_queue: deque[Resident] = deque()
        self._parked: dict[str, list[Resident]] = {}
        self._followers: dict[Ident, list[Subscription]] = {}
        self._group = Group()
        self._group_number = 0  # which group is open: envelopes remember where their put is
        self._seq = 0
        self._committing: Group | None = None  # the group being written
        self._write_seconds = 0.0  # moving average of how long a write takes
        self._posts: list[Callable[[], object]] | None = None  # see send_here
        self._paused = False
        self._work = trio.Event()
        self._dirty = trio.Event()
        self._progress = trio.Event()
        self._settling = 0  # tasks in settle(), waiting for progress
        self._stop = trio.Event()
        self._stopped = trio.Event()

    # -- lifecycle ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then dispatch and commit until :meth:`aclose`."""
        self.token = trio.lowlevel.current_trio_token()
        unsubscribes = []
        try:
            self._seq = layout.prepare(self.store, self.name, sync=self.sync)
            self._recover()
            for registry in (entity_classes, value_types):
                unsubscribes.append(registry.subscribe(self._on_registered))
            try:
                async with trio.open_nursery() as nursery:
                    dispatching = trio.CancelScope()
                    nursery.start_soon(self._dispatch_loop, dispatching)
                    nursery.start_soon(self._commit_loop)
                    self.started = True
                    task_status.started()
                    await self._stop.wait()
                    # Refuse new work, stop activating, let the committer write
                    # what is done; it returns once the open group is empty.
                    self.closed = True
                    dispatching.cancel()
                    self._dirty.set()
            except BaseExceptionGroup as group:
                _, errors = group.split(trio.Cancelled)
                if errors is None:
                    raise
                if self.failure is None:
                    self.failure = errors.exceptions[0]
            if self.failure is not None:
                raise EcosystemClosedError(
                    f"{self.name} stopped: writing to the store failed"
                ) from self.failure
        except BaseException as error:
            if self.failure is None:
                self.failure = error
            raise
        finally:
            self.closed = True
            for unsubscribe in unsubscribes:
                unsubscribe()
            self._fail_waiters()
            self.store.close()
            self._stopped.set()
            log("runtime.closed", store=self.name)

    async def aclose(self) -> None:
        """Commit what is done, answer what can be answered, and close the store."""
        self._stop.set()
        await self._stopped.wait()

    def _recover(self) -> None:
        started = time.perf_counter()
        count = 0
        record: Resident | None = None
        for key, blob in self.store.scan(layout.INBOX):
            eco, address_key, seq = layout.parse_inbox_key(key)
            if record is None or record.key != address_key or record.eco != eco:
                # Keys sort by ecosystem and address: one entity's messages are adjacent.
                name, entity_id = layout.parse_address_key(address_key)
                record = self._new_record((eco, name, entity_id), address_key, None)
            record.inbox.append(Envelope(seq, blob, None))
            self._seq = max(self._seq, seq + 1)
            count += 1
        for record in list(self._resident.values()):
            _, name, entity_id = record.ident
            if name in entity_classes:
                record.address = _make_address(name, entity_id)
                self._schedule(record)
            else:
                self._park(record, name)
        log(
            "store.opened",
            store=self.name,
            pending_messages=count,
            pending_entities=len(self._resident),
            waiting_for_classes=sorted(self._parked),
            seconds=round(time.perf_counter() - started, 3),
        )

    def _fail_waiters(self) -> None:
        error = EcosystemClosedError(
            f"the ecosystem store {self.name} closed before this completed"
            + (f": {type(self.failure).__name__}: {self.failure}" if self.failure else "")
        )
        for record in self._resident.values():
            for envelope in record.inbox:
                if envelope.reply is not None:
                    envelope.reply.resolve(None, error)
        if self._committing is not None:
            finish(self._committing, error)
        finish(self._group, error)
        for subscriptions in self._followers.values():
            for subscription in subscriptions:
                subscription.end()
        self._progress.set()

    def check_open(self) -> None:
        if self.closed:
            raise EcosystemClosedError(
                f"the ecosystem store {self.name} is closed; open it again to use it"
            )

    # -- accepting messages ------------------------------------------------

    def _new_record(self, ident: Ident, key: bytes, address: Entity[Any, Any] | None) -> Resident:
        record = Resident(ident, key, address)
        self._resident[ident] = record
        return record

    def _record_for(self, eco: bytes, address: Entity[Any, Any]) -> Resident:
        ident = (eco, address.entity_name, address._id)
        record = self._resident.get(ident)
        if record is None:
            return self._new_record(ident, layout.address_key(address), address)
        if record.address is None:  # recovered while its class was unregistered
            record.address = address
            if record.parked_on == address.entity_name:
                self._unpark(record.parked_on)
        return record

    def _accept(
        self, eco: bytes, address: Entity[Any, Any], blob: bytes, reply: Reply | None
    ) -> Group:
        """Put a message in its recipient's inbox, in the open group; schedule the recipient."""
        return self._enqueue(self._record_for(eco, address), blob, reply)

    def _enqueue(self, record: Resident, blob: bytes, reply: Reply | None) -> Group:
        seq = self._seq
        self._seq = seq + 1
        group = self._group
        operations = group.operations
        record.inbox.append(Envelope(seq, blob, reply, self._group_number, len(operations)))
        operations.append((record.inbox_prefix + _encode_seq(seq), blob))
        if not record.scheduled and record.parked_on is None:
            self._schedule(record)
        return group

    def _deliver(self, eco: bytes, address: Entity[Any, Any], blob: bytes) -> Group:
        """Accept a message from outside, activating it at once if its entity is idle.

        An idle entity (nothing in its inbox, not queued, not parked) would run
        this message next anyway; running it here, in the sender's step, skips
        the inbox and the run queue: accepted and consumed in the same group,
        the message is never written, only its effects are.
        """
        record = self._record_for(eco, address)
        if not (record.inbox or record.scheduled or record.parked_on or self._paused):
            group = self._group
            seq = self._seq
            self._seq = seq + 1
            if self._activate(record, seq, blob, None):
                return group
        return self._enqueue(record, blob, None)

    def _schedule(self, record: Resident) -> None:
        if not record.scheduled:
            record.scheduled = True
            run_queue = self._run_queue
            run_queue.append(record)
            # Only a queue that was empty can have the dispatcher waiting on it;
            # off the runtime's thread, send_here posts one wake-up at its end.
            if len(run_queue) == 1 and self._posts is None:
                self._work.set()

    def encode_message(self, address: object, message: Any) -> bytes:
        """Check an address and encode a message for it, before anything is stored."""
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        return encode_message(message, self.max_message_bytes)

    async def send(self, eco: bytes, address: Entity[Any, Any], message: Any) -> None:
        """Accept a message durably; returns once it is in the recipient's durable inbox."""
        if self.closed:
            self.check_open()
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        blob = encode_message(message, self.max_message_bytes)
        group = self._deliver(eco, address, blob)
        self._dirty.set()
        if not group.finished:  # wait_durable, inlined: this is the hottest await
            await sleep_until_finished(group.tasks)
        if group.error is not None:
            raise group.error

    async def send_sync(self, eco: bytes, address: Entity[Any, Any], message: Any) -> Any:
        """Deliver a message and return the state after its activation is durable."""
        self.check_open()
        blob = self.encode_message(address, message)
        reply = TrioReply()
        # No commit is asked for here: the activation's own batch carries the
        # acceptance, so a send_sync costs one fsync, not two.
        self._accept_and_run(eco, address, blob, reply, sync=True)
        return load_state(address, await reply.wait())

    def _accept_and_run(
        self, eco: bytes, address: Entity[Any, Any], blob: bytes, reply: Reply, *, sync: bool
    ) -> None:
        """Accept a message someone waits on; when the runtime is idle, process it right here.

        Idle means nothing else to run and nothing being written: then running
        the activation and committing in this call gives the same order and
        the same batches as the dispatcher and committer would, minus the
        task switches, which are most of a sequential send_sync's cost. With
        ``sync`` the reply carries the state after the activation; otherwise it
        resolves once the message is durably accepted.
        """
        group = self._accept(eco, address, blob, reply if sync else None)
        if not sync:
            group.waiters.append(reply)
        run_queue = self._run_queue
        if len(run_queue) == 1 and self._committing is None and not self._paused:
            record = run_queue.popleft()
            record.scheduled = False
            self._run_next(record)
            if record.inbox and record.parked_on is None:
                self._schedule(record)
            if self._write_inline():
                self._commit_now()
                return
        self._wake(self._signal_dirty)

    def send_here(
        self, eco: bytes, address: Entity[Any, Any], blob: bytes, *, sync: bool
    ) -> ThreadReply | None:
        """Process a message in the calling (non-trio) thread, if the runtime is idle.

        The caller must hold the lock the runtime's thread gives up while it
        sleeps (see the shell face's portal): then no task of the runtime is
        running, and this thread may work on its state. Trio wake-ups are
        collected and posted to the runtime's thread at the end. Returns None,
        having done nothing, if the runtime is not idle.
        """
        if (
            self.closed
            or self._paused
            or self._run_queue
            or self._committing is not None
            or not self._write_inline()
        ):
            return None
        reply = ThreadReply()
        posts: list[Callable[[], object]] = []
        self._posts = posts
        try:
            self._accept_and_run(eco, address, blob, reply, sync=sync)
        finally:
            self._posts = None
            if self._run_queue:
                posts.append(self._signal_work)
            if posts and self.token is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    self.token.run_sync_soon(_run_all, posts)
        return reply

    def _wake(self, wake_up: Callable[[], object]) -> None:
        """Run a trio wake-up now, or post it if another thread is working (:meth:`send_here`)."""
        if self._posts is None:
            wake_up()
        else:
            self._posts.append(wake_up)

    def _signal_work(self) -> None:
        self._work.set()

    def _signal_dirty(self) -> None:
        self._dirty.set()

    def send_threadsafe(
        self, eco: bytes, address: Entity[Any, Any], blob: bytes, *, wait_for_activation: bool
    ) -> ThreadReply:
        """Accept an encoded message from another thread; the reply resolves when durable.

        Cheaper than entering trio (no task is started): the shell face's path.
        With ``wait_for_activation``, the reply carries the state after the
        message's activation; otherwise it resolves once the message is accepted.
        """
        reply = ThreadReply()

        def accept() -> None:
            # A run_sync_soon callback must not raise: errors go to the caller.
            if self.closed:
                reply.resolve(None, EcosystemClosedError(f"{self.name} is closed"))
                return
            try:
                self._accept_and_run(eco, address, blob, reply, sync=wait_for_activation)
            except BaseException as error:  # a failed write; the runtime is stopping
                reply.resolve(None, error)

        if self.token is None:
            raise EcosystemClosedError(f"the ecosystem store {self.name} is not running")
        try:
            self.token.run_sync_soon(accept)
        except trio.RunFinishedError:
            raise EcosystemClosedError(f"the ecosystem store {self.name} is closed") from None
        return reply

    # -- dispatching ---------------------------------------------------------

    async def _dispatch_loop(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._dispatch(self._run_queue)

    def pause(self) -> None:
        """Stop running activations; messages are still accepted (for maintenance and tests)."""
        self._paused = True

    def resume(self) -> None:
        """Run activations again after :meth:`pause`."""
        self._paused = False
        self._work.set()

    async def _dispatch(self, run_queue: deque[Resident]) -> None:
        while True:
            while not run_queue or self._paused:
                self._work = trio.Event()
                await self._work.wait()
            for _ in range(min(len(run_queue), _DISPATCH_BATCH)):
                record = run_queue.popleft()
                record.scheduled = False
                self._run_next(record)
                if record.inbox and record.parked_on is None:
                    self._schedule(record)
            self._dirty.set()
            if self._settling:
                self._pulse()
            if run_queue:  # else waiting for work is the checkpoint, and leaves nothing runnable
                await trio.lowlevel.checkpoint()

    def _run_next(self, record: Resident) -> None:
        """Run one activation of ``record`` on the first message of its inbox."""
        envelope = record.inbox[0]
        if not self._activate(record, envelope.seq, envelope.blob, envelope.reply):
            return  # parked: the message stays first in the inbox
        record.inbox.popleft()
        group = self._group
        if envelope.group_number == self._group_number:
            group.operations[envelope.put_index] = None  # never written, so nothing to delete
            group.cancelled += 1
        else:
            group.operations.append((record.inbox_prefix + _encode_seq(envelope.seq), None))

    def _activate(self, record: Resident, seq: int, blob: bytes, reply: Reply | None) -> bool:
        """Run one activation of ``record`` on a message; its effects join the open group.

        Returns False, having changed nothing, when the state or the message
        names a class this process has not registered: the entity is parked.
        Removing the message from the inbox is the caller's business.
        """
        address = record.address
        assert address is not None
        self._resident.move_to_end(record.ident)
        message: Any = None
        try:
            if not record.loaded:
                record.durable_blob = record.state_blob = self.store.get(record.state_key)
                record.state = load_state(address, record.state_blob)
                record.loaded = True
            message = decode(blob)
        except UnregisteredNameError as missing:
            self._park(record, missing.name)
            return False
        except Exception as error:
            outcome: Any = Failure(error, "".join(traceback.format_exception(error)))
        else:
            outcome = activate(address, record.state, message, self.max_message_bytes)
        recent = record.recent
        recent.append(blob)
        if len(recent) > RECENT_MESSAGES:
            del recent[0]
        group = self._group
        record.uncommitted += 1
        self.statistics["activations"] += 1
        if type(outcome) is Failure:
            group.activations.append((record, None))
            self._dead_letter(record, blob, reply, message, outcome, group)
            return True
        record.state = outcome.state
        record.state_blob = state_blob = outcome.state_blob
        group.operations.append((record.state_key, state_blob))
        group.activations.append((record, state_blob))
        outbox = outcome.outbox
        for recipient, sent in outbox:
            self._accept(record.eco, recipient, sent, None)
        if reply is not None:
            group.replies.append((reply, state_blob, None))
        if logging_enabled():
            log("activation", level="debug", address=address, seq=seq, sent=len(outbox))
        return True

    def _dead_letter(
        self,
        record: Resident,
        blob: bytes,
        reply: Reply | None,
        message: Any,
        failure: Failure,
        group: Group,
    ) -> None:
        address = record.address
        assert address is not None
        self.statistics["failures"] += 1
        if record.loaded:
            # activate() may have changed the state in place before raising:
            # go back to the last state it returned, from its stored form.
            try:
                record.state = load_state(address, record.state_blob)
            except Exception:
                record.loaded = False
        dead_letter_id = self._seq
        self._seq += 1
        error_text = f"{type(failure.error).__name__}: {failure.error}"
        group.operations.append(
            (
                layout.dead_letter_key(record.eco, dead_letter_id),
                encode_dead_letter(
                    address,
                    blob,
                    error_text,
                    failure.traceback,
                    list(record.recent),
                    time.time(),
                ),
            )
        )
        log(
            "activation.failed",
            level="warning",
            address=address,
            message=message,
            error=error_text,
            dead_letter_id=dead_letter_id,
        )
        if reply is not None:
            recent = []
            for earlier in record.recent:
                try:
                    recent.append(decode(earlier))
                except PachydermError:
                    recent.append(earlier)
            error = ActivationError(address, message, failure.error, recent, dead_letter_id)
            group.replies.append((reply, None, error))

    # -- parking: messages for classes this process has not registered -------

    def _park(self, record: Resident, name: str) -> None:
        if record.parked_on is None:
            record.parked_on = name
            self._parked.setdefault(name, []).append(record)
            log("entity.waiting_for_class", store=self.name, name=name, pending=len(record.inbox))

    def _on_registered(self, name: str) -> None:
        token = self.token
        if token is not None and not self.closed:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._unpark, name)

    def _unpark(self, name: str) -> None:
        for record in self._parked.pop(name, []):
            record.parked_on = None
            if record.address is None:
                record.address = _make_address(*layout.parse_address_key(record.key))
            if record.inbox:
                self._schedule(record)

    # -- committing ----------------------------------------------------------

    async def _commit_loop(self) -> None:
        while self.failure is None:
            while not self._group.operations:
                if self.closed:
                    return
                self._dirty = trio.Event()
                await self._dirty.wait()
            # Let activations that are ready join this group first: a message
            # accepted and consumed in one group is never written at all. A
            # bound keeps an endless stream of work from holding commits back.
            for _ in range(_JOIN_ROUNDS):
                if not self._run_queue or self._paused or self.closed:
                    break
                await trio.lowlevel.checkpoint()
            await self._commit_open_group()

    def _write_inline(self) -> bool:
        """Whether to write in this thread: nothing to overlap with, and writes are quick.

        A hop to a worker thread and back costs more than a quick write (about
        0.25 ms of this thread's time on the machines measured), and with every
        sender waiting on the write there is nothing to do meanwhile.
        """
        return not self.store.blocking or (
            not self._run_queue and self._write_seconds < INLINE_WRITE
        )

    async def _commit_open_group(self) -> None:
        # Inline only when no other task of this trio run could use the time:
        # a quick write then delays nothing but I/O readiness.
        if self._write_inline() and trio.lowlevel.current_statistics().tasks_runnable == 0:
            self._commit_now()
            return
        group = self._seal()
        seconds = await trio.to_thread.run_sync(self._write, operations(group))
        self._committed(group, seconds)

    def _commit_now(self) -> None:
        group = self._seal()
        try:
            seconds = self._write(operations(group))
        except BaseException as error:
            # Memory is now ahead of the store: stop, as a failed commit task would.
            self.failure = error
            self._wake(self._stop.set)
            raise
        self._committed(group, seconds)

    def _write(self, batch: list[Operation]) -> float:
        """Write one batch to the store; return how long that took, thread hops excluded."""
        started = time.perf_counter()
        self.store.write(batch, sync=self.sync)
        return time.perf_counter() - started

    def _seal(self) -> Group:
        group = self._group
        self._group = Group()
        self._group_number += 1
        group.operations.append((layout.NEXT_SEQ, layout.encode_seq(self._seq)))
        self._committing = group  # stays set if the write raises: _fail_waiters answers it
        return group

    def _committed(self, group: Group, seconds: float) -> None:
        self._committing = None
        self._write_seconds = 0.8 * self._write_seconds + 0.2 * seconds
        self.statistics["commits"] += 1
        self._complete(group)

    def _complete(self, group: Group) -> None:
        followers = self._followers
        for record, blob in group.activations:
            record.uncommitted -= 1
            if blob is None:  # a failed activation: the state did not change
                continue
            record.durable_blob = blob
            for subscription in followers.get(record.ident, ()) if followers else ():
                subscription.push(blob, self._wake)
        finish(group, wake=self._wake)
        if len(self._resident) > self.max_resident:
            self._passivate()
        if self._settling:
            self._wake(self._pulse)

    def _passivate(self) -> None:
        """Forget idle entities beyond ``max_resident``, least recently used first."""
        excess = len(self._resident) - self.max_resident
        victims = []
        for key, record in self._resident.items():
            if record.idle and record.parked_on is None:
                victims.append(key)
                if len(victims) >= excess:
                    break
        for key in victims:
            del self._resident[key]
        self.statistics["passivated"] += len(victims)

    def _pulse(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def settle(self) -> None:
        """Wait until every accepted message has been processed and committed.

        Messages waiting for an entity class this process has not registered
        do not count: they wait until it is.
        """
        self.check_open()
        while (
            (self._run_queue and not self._paused)
            or self._group.operations
            or self._committing is not None
        ):
            self._settling += 1
            try:
                await self._progress.wait()
            finally:
                self._settling -= 1
            self.check_open()

    # -- reading -------------------------------------------------------------

    def committed_state_blob(self, eco: bytes, address: Entity[Any, Any]) -> bytes | None:
        record = self._resident.get((eco, address.entity_name, address._id))
        if record is not None and record.loaded:
            return record.durable_blob
        return self.store.get(layout.state_key(eco, layout.address_key(address)))

    def state_of(self, eco: bytes, address: Entity[Any, Any]) -> Any:
        """The latest committed state of ``address`` (``init()`` if it has none)."""
        self.check_open()
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        return load_state(address, self.committed_state_blob(eco, address))

    def subscribe(
        self, eco: bytes, address: Entity[Any, Any], buffer: int = DEFAULT_FOLLOWER_BUFFER
    ) -> Subscription:
        """Follow ``address``: its committed state now, and every change after."""
        self.check_open()
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        ident = (eco, address.entity_name, address._id)
        subscription = Subscription(
            address,
            self.committed_state_blob(eco, address),
            buffer,
            partial(self._unsubscribe, ident),
        )
        self._followers.setdefault(ident, []).append(subscription)
        return subscription

    def _unsubscribe(self, ident: Ident, subscription: Subscription) -> None:
        subscriptions = self._followers.get(ident, [])
        if subscription in subscriptions:
            subscriptions.remove(subscription)
        if not subscriptions:
            self._followers.pop(ident, None)

    # -- dead letters --------------------------------------------------------

    def dead_letters(self, eco: bytes) -> list[DeadLetter]:
        """Every dead letter of the ecosystem, oldest first."""
        self.check_open()
        return [
            decode_dead_letter(layout.parse_dead_letter_key(key), blob)
            for key, blob in self.store.scan(layout.dead_letter_prefix(eco))
        ]

    def _take_dead_letter(self, eco: bytes, dead_letter: DeadLetter | int) -> tuple[bytes, bytes]:
        self.check_open()
        dead_letter_id = dead_letter.id if isinstance(dead_letter, DeadLetter) else dead_letter
        if type(dead_letter_id) is not int:
            raise UnknownDeadLetterError(
                f"dead letters are named by a DeadLetter or its int id, got {describe(dead_letter)}"
            )
        key = layout.dead_letter_key(eco, dead_letter_id)
        blob = self.store.get(key)
        if blob is None or any(op is not None and op[0] == key for op in self._group.operations):
            raise UnknownDeadLetterError(
                f"no dead letter {dead_letter_id!r} in this ecosystem; dead_letters() lists them"
            )
        return key, blob

    async def redeliver(self, eco: bytes, dead_letter: DeadLetter | int) -> None:
        """Put a dead letter back in its entity's inbox, atomically, as a new message."""
        key, blob = self._take_dead_letter(eco, dead_letter)
        address, message_blob = dead_letter_message_blob(blob)
        self._group.operations.append((key, None))
        group = self._accept(eco, address, message_blob, None)
        self._dirty.set()
        await wait_durable(group)

    async def discard(self, eco: bytes, dead_letter: DeadLetter | int) -> None:
        """Delete a dead letter for good."""
        key, _ = self._take_dead_letter(eco, dead_letter)
        group = self._group
        group.operations.append((key, None))
        self._dirty.set()
        await wait_durable(group)


def _run_all(callbacks: list[Callable[[], object]]) -> None:
    for callback in callbacks:
        callback()


def _make_address(name: str, entity_id: Any) -> Entity[Any, Any]:
    return entity_classes.resolve(name)(entity_id)


def _not_an_address(value: object) -> PachydermError:
    return InvalidAddressError(
        f"messages are sent to entity addresses, like Counter('my_counter'); got {describe(value)}"
    )
