"""The live runtime: hosts every ecosystem of one storage.

It composes the parts, each with one job: resident entities (``_residents``),
dispatch (``_dispatch``: activations and what their transitions become),
group commit (``_commit``), followers (``_followers``) and timers
(``_timers``). One lock guards them all; it is only ever held for short work
that never waits, and never while writing. Three trio tasks drive them:

- the *dispatcher* runs activations from the FIFO run queue;
- the *committer* writes the open group (everything produced since the last
  write) as one atomic batch, with one fsync for all of it, then answers the
  callers and tells the followers;
- the *timekeeper* fires timers when they are due.

Callers drive them too. A message sent to an idle entity is activated in the
sender's own step (the dispatcher would run it next anyway). A caller in
another thread (the shell face) does that under the lock, and if nobody is
writing, writes the open group itself and completes it: group commit with no
hop to the runtime's thread, which is woken only when work is left for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

import trio

from pachyderm._clock import Clock, WallClock, check_clock
from pachyderm._codec import encode
from pachyderm._combining import CombiningLock
from pachyderm._commit import (
    Group,
    GroupCommit,
    ThreadReply,
    TrioReply,
    Wake,
    call_now,
    sleep_until_finished,
)
from pachyderm._dead_letters import DeadLetter, dead_letter_message_blob, decode_dead_letter
from pachyderm._dispatch import Dispatcher, stored_under_former_name
from pachyderm._entity import Entity, entity_classes
from pachyderm._followers import DEFAULT_FOLLOWER_BUFFER, Followers, Subscription, check_buffer
from pachyderm._forks import track
from pachyderm._log import log
from pachyderm._residents import Resident, Residents
from pachyderm._sharing import Sharing
from pachyderm._step import DEFAULT_MAX_MESSAGE_BYTES, inside_handler, load_state, own_call
from pachyderm._storage import Ident, SharedBatch, SharedStorage, Storage
from pachyderm._timers import Timers
from pachyderm._values import value_types
from pachyderm.errors import (
    EcosystemClosedError,
    ForkedProcessError,
    InvalidAddressError,
    InvalidArgumentError,
    MessageTooLargeError,
    OutcomeUnknownError,
    PachydermError,
    UnknownDeadLetterError,
    describe,
    safe_repr,
    shown,
)

__all__ = ["DEFAULT_MAX_RESIDENT", "Runtime"]

DEFAULT_MAX_RESIDENT = 10_000
_DISPATCH_BATCH = 256
_FIRE_BATCH = 256
_JOIN_ROUNDS = 4
_QUEUE_BOUND = 256  # messages queued for a volatile store before their sender processes them
_MAIN_THREAD = threading.main_thread().ident
_MAX_DEAD_LETTER_ID = 1 << 63  # ids are sequence numbers: no stored key holds a larger one
_REFRESH_WAIT = 1.0  # seconds a redefined class waits for the lock to refresh residents
_WALL_CLOCK_NAP = 60.0  # the longest a timekeeper on the wall clock sleeps without looking
_SETTLE_POLL = 0.02  # seconds between looks at messages run elsewhere, while settling
_MAX_SKIPS = 64  # writes not waiting for replies due, at most, after waits that ran out
INLINE_WRITE = 0.002
"""Writes faster than this (seconds, moving average) run in the runtime's thread when no
other task is runnable and no activation waits; slower ones go to a worker thread."""

protect = trio.lowlevel.enable_ki_protection

_Request = tuple[Ident, Entity[Any, Any], bytes, ThreadReply | None, bool, int]
"""A message sent from another thread: (entity, address, message, reply, sync, thread).

Without a reply: queued for a volatile store, accepted once queued."""


class Runtime:
    """Hosts every ecosystem of one storage. Start with ``await nursery.start(runtime.run)``."""

    def __init__(
        self,
        storage: Storage,
        *,
        durability: str = "fsync",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        clock: Clock | None = None,
    ) -> None:
        self.check_options(durability, max_message_bytes, max_resident, clock)
        self.name = storage.name
        self.storage = storage
        self.volatile = storage.volatile  # (read on every shell send)
        shared = bool(getattr(storage, "shared", False))  # other processes share it
        self.clock: Clock = WallClock() if clock is None else clock
        self.max_message_bytes = max_message_bytes
        self.lock: CombiningLock[_Request] = CombiningLock(self._accept_requests)
        self._forming = False  # a caller's thread is about to write the open group
        self.residents = Residents(storage, max_resident)
        self.commit = GroupCommit(storage, sync=durability == "fsync")
        self.timers = Timers(storage)
        self.followers = Followers()
        self.dispatcher = Dispatcher(
            storage,
            self.residents,
            self.commit,
            self.timers,
            self.clock,
            max_message_bytes=max_message_bytes,
            on_work=self._signal_work,
            on_timer=self._signal_timer,
            on_commit=self._signal_commit,
            wake=self._post_wake,
        )
        self._linger_limit = 0.0  # seconds a write waits for replies due (shared storages)
        self.sharing: Sharing | None = None
        if shared:
            shared_storage = cast(SharedStorage, storage)
            self.sharing = Sharing(self, shared_storage)
            self._linger_limit = shared_storage.linger
            self.dispatcher.owns = shared_storage.owns
            self.dispatcher.check_address = shared_storage.check_address
            self.dispatcher.load_many = shared_storage.load_many
            self.dispatcher.max_state_bytes = shared_storage.max_state_bytes
        self.token: trio.lowlevel.TrioToken | None = None
        # Worker threads of the runtime's own (news, reads, writes: one each at most),
        # apart from trio's default limiter: an app whose threads all wait on the
        # runtime there (trio.from_thread) would otherwise stall it.
        self.threads: trio.CapacityLimiter | None = None
        self.started = False
        self.closed = False
        self.failure: BaseException | None = None
        self._failure_text = ""
        self._thread: int | None = None  # the ident of the thread running our trio tasks
        self._work = trio.Event()
        self._dirty = trio.Event()
        self._timers_changed = trio.Event()
        self._timer_target: float | None = None
        self._progress = trio.Event()
        self._settling = 0  # tasks in settle(), waiting for progress
        self._posted: set[str] = set()  # wake-ups posted from other threads, not yet run
        self._writing_elsewhere = 0  # groups being written by callers' threads
        self._asked: Group | None = None  # the last group written that asked other processes
        self._skips = self._backoff = 0  # writes not to wait before, after waits that ran out
        self.replies_in: trio.Event | None = None  # set, while lingering, when none is due
        self._taken: dict[tuple[str, int], int] = {}  # dead letters taken, by group number
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self.forked_from: int | None = None  # set in a forked child: the process that owns us
        track(self)

    def __repr__(self) -> str:
        return f"<Runtime of {self.name}>"

    @staticmethod
    def check_options(
        durability: object, max_message_bytes: object, max_resident: object, clock: object
    ) -> None:
        """Refuse bad options before anything is opened.

        Raises:
            InvalidArgumentError: naming the option, the value and what it must be.
        """
        if durability not in ("fsync", "flush"):
            raise InvalidArgumentError(
                f"durability must be 'fsync' or 'flush', got {describe(durability)}"
            )
        for option, value in (
            ("max_message_bytes", max_message_bytes),
            ("max_resident", max_resident),
        ):
            if type(value) is not int or value < 1:
                raise InvalidArgumentError(f"{option} must be an int >= 1, got {describe(value)}")
        if clock is not None:
            check_clock(clock)

    @property
    def statistics(self) -> dict[str, int]:
        """Counters since the store opened: activations, failures, commits, passivated, timers."""
        dispatcher = self.dispatcher
        return {
            "activations": dispatcher.activations,
            "failures": dispatcher.failures,
            "commits": self.commit.commits,
            "passivated": self.residents.passivated,
            "timers_fired": dispatcher.timers_fired,
        }

    # -- lifecycle ---------------------------------------------------------

    @protect
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then dispatch, commit and keep time until :meth:`aclose`."""
        self.token = trio.lowlevel.current_trio_token()
        self.threads = trio.CapacityLimiter(3)
        self._thread = threading.get_ident()
        unsubscribes = []
        try:
            with self.lock:
                self.dispatcher.seq = self.storage.open()
                self._recover()
            for registry in (entity_classes, value_types):
                unsubscribes.append(registry.subscribe(self._on_registered))
            unsubscribes.append(self.clock.subscribe(self._on_clock))
            try:
                async with trio.open_nursery() as nursery:
                    dispatching = trio.CancelScope()
                    timekeeping = trio.CancelScope()
                    nursery.start_soon(self._dispatch_loop, dispatching)
                    nursery.start_soon(self._commit_loop)
                    nursery.start_soon(self._timekeeper, timekeeping)
                    news = trio.CancelScope()
                    if self.sharing is not None:
                        nursery.start_soon(self.sharing.run, news)
                    self.started = True
                    task_status.started()
                    await self._stop.wait()
                    # Refuse new work, stop activating, let the committer write
                    # what is done; it returns once the open group is empty.
                    with self.lock:
                        self.closed = True
                    if self.replies_in is not None:
                        self.replies_in.set()  # (stopping: no more waiting for replies)
                    dispatching.cancel()
                    timekeeping.cancel()
                    news.cancel()
                    self._dirty.set()
            except BaseExceptionGroup as group:
                _, errors = group.split(trio.Cancelled)
                if errors is None:
                    raise
                with self.lock:
                    self._fail(errors.exceptions[0], "running")
            if self.failure is not None:
                raise self._stopped_error() from self.failure
        except BaseException as error:
            if self.failure is None:
                self.failure = error
            raise
        finally:
            with self.lock:
                self.closed = True
                self._fail_waiters()
            for unsubscribe in unsubscribes:
                unsubscribe()
            with trio.CancelScope(shield=True):
                while self._writing_elsewhere:  # a caller's thread is still writing
                    await trio.sleep(0.001)
            self.storage.close()
            self._stopped.set()
            log("runtime.closed", store=self.name)

    async def aclose(self) -> None:
        """Commit what is done, answer what can be answered, and close the store."""
        self._stop.set()
        await self._stopped.wait()

    @property
    def stopped(self) -> bool:
        """Whether the store is closed and released (by :meth:`aclose` or a failure)."""
        return self._stopped.is_set()

    async def wait_stopped(self) -> None:
        """Wait until :attr:`stopped`."""
        await self._stopped.wait()

    def _recover(self) -> None:
        started = time.perf_counter()
        count = 0
        recovered = {}
        for pending in self.storage.pending():
            record = self.dispatcher.recover(pending)
            recovered[record.ident] = record
            count += 1
        for record in recovered.values():
            self.dispatcher.start(record)
        next_due = self.timers.next_due()  # loads the first window of timers
        log(
            "store.opened",
            store=self.name,
            pending_messages=count,
            pending_entities=len(recovered),
            waiting_for_classes=sorted(self.residents.parked),
            next_timer_due=next_due,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _fail_waiters(self) -> None:
        """Answer everyone still waiting as the store closes: refused, or outcome unknown.

        ``EcosystemClosedError`` only where nothing happened (safe to send
        again); ``OutcomeUnknownError`` where the message was accepted and may
        be applied (see :meth:`_waiting_message_error`).
        """
        wake = self._post_wake
        for record in self.residents.table.values():
            for envelope in record.inbox:
                if envelope.reply is not None:
                    error = self._waiting_message_error(record.address, envelope.group)
                    envelope.reply.resolve(None, error, wake)
        writing = self.commit.writing
        if writing is not None and not self._writing_elsewhere:
            writing.finish(self._write_failed_error(), wake)
        # Never written (after a failure; empty after a clean close): nothing happened,
        # but to messages accepted before it, which still wait (their activations are lost).
        for reply, accepted, address in self.commit.open.carried:
            reply.resolve(None, self._waiting_message_error(address, accepted), wake)
        # (before the open group is finished: a message forwarded in it was never written)
        remote, self.dispatcher.remote = self.dispatcher.remote, {}
        self._asked = None  # (nothing is due any more)
        for reply, group, ident in remote.values():
            reply.resolve(None, self._elsewhere_message_error(ident, group), wake)
        self.commit.open.finish(self._closed_error(), wake)
        self.followers.end_all(wake)
        wake(self._pulse)

    def _waiting_message_error(
        self, address: Entity[Any, Any] | None, group: Group | None
    ) -> PachydermError:
        """What to tell a caller whose accepted message waits, unapplied, as the store closes."""
        failure = f" ({self._failure_text})" if self.failure is not None else ""
        if group is not None:  # else recovered when the store opened: durable
            if group is self.commit.writing or group.error is not None:
                return self._write_failed_error()
            if not group.finished:  # its acceptance was never written
                return self._closed_error()
        if self.volatile:
            return EcosystemClosedError(
                f"the ecosystem store {self.name} closed{failure} before applying this message "
                f"to {address!r}; the store's memory, and the message, are gone with it, so it "
                f"was not and will not be applied: sending it again (to a new store) is safe"
            )
        return OutcomeUnknownError(
            f"the ecosystem store {self.name} closed{failure} after accepting this message "
            f"to {address!r}, before applying it: it waits in the entity's durable inbox and "
            f"is applied, once, when the store is next opened. Do not send it again (it "
            f"would be applied twice); after reopening, settle() and state_of() show its effect"
        )

    def _elsewhere_message_error(self, ident: Ident, group: Group | None) -> PachydermError:
        """What to tell a caller here whose accepted message another process runs (its
        entity's partition is that worker's), as this store closes before the reply."""
        if group is not None and (
            group is self.commit.writing or group.error is not None or not group.finished
        ):
            return self._waiting_message_error(None, group)  # never, or maybe, stored
        eco, name, entity_id = ident
        address = f"{_entity_text(name, entity_id)} in ecosystem {eco!r}"
        failure = f" ({self._failure_text})" if self.failure is not None else ""
        return OutcomeUnknownError(
            f"the ecosystem store {self.name} closed{failure} after storing this message to "
            f"{address} and before its reply came: the worker process that runs that entity "
            f"applies it, once, whether or not this process opens the store again (maybe it "
            f"has already). Do not send it again (it would be applied twice); state_of() "
            f"shows its effect once applied (a store opened again here does not wait for it "
            f"in settle(): it is another process's to run)"
        )

    def _write_failed_error(self) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"{self.name} stopped while writing this call's changes ({self._failure_text}): "
            f"they may or may not be stored. Do not send it again blindly; after reopening, "
            f"state_of() shows whether it was applied"
        )

    def check_open(self) -> None:
        if self.closed:
            raise self._closed_error()

    def _closed_error(self) -> EcosystemClosedError:
        if self.forked_from is not None:
            return ForkedProcessError(
                f"{self.name} was opened by process {self.forked_from}; this process "
                f"({os.getpid()}) is a fork of it and cannot use it: both would write the "
                f"same store, and its runtime runs in a thread of the parent only. Nothing "
                f"was done. Use the store in the parent; give a child a store of its own, "
                f"opened in the child (a forked child cannot open its parent's LocalDisk "
                f"directory, even once the parent closes it), or start children with "
                f"multiprocessing.get_context('spawn')."
            )
        if self.failure is not None:
            return self._stopped_error()
        return EcosystemClosedError(
            f"the ecosystem store {self.name} is closed; open it again to use it"
        )

    def forsake(self, parent: int) -> None:
        """In a child forked from this process: refuse every verb, touch nothing.

        The store, the threads and whoever held the lock at the fork are the
        parent's. A fresh lock keeps the verbs from waiting on a holder that
        is not here; ``closed`` makes each of them raise ForkedProcessError.
        """
        if self._stopped.is_set():
            return  # closed before the fork: nothing of the parent's is left to guard
        self.lock = CombiningLock(self._accept_requests)
        self.forked_from = parent
        self.closed = True
        self.followers.forsake()

    # -- wake-ups across threads ----------------------------------------------

    def _on_trio_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def _post_wake(self, wake_up: Callable[[], object]) -> None:
        """A :data:`Wake` for any thread: at once on the runtime's, else posted to it."""
        if self._on_trio_thread():
            wake_up()
        else:
            self._post(wake_up)

    def _post(self, function: Callable[..., object], *arguments: Any) -> None:
        token = self.token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(function, *arguments)

    def _signal(self, name: str, event_name: str) -> None:
        """Set the trio event called ``event_name``; from another thread, once until it runs."""
        if self._on_trio_thread():
            getattr(self, event_name).set()
        elif name not in self._posted:
            self._posted.add(name)
            self._post(self._set_posted, name, event_name)

    def _set_posted(self, name: str, event_name: str) -> None:
        self._posted.discard(name)
        getattr(self, event_name).set()

    def _signal_work(self) -> None:
        self._signal("work", "_work")

    def _signal_commit(self) -> None:
        self._signal("commit", "_dirty")

    def _signal_timer(self, due: float) -> None:
        target = self._timer_target
        if target is None or due < target:
            self._timer_target = due
            self._signal("timers", "_timers_changed")

    def _on_clock(self) -> None:
        """The clock jumped (a ManualClock advanced): look at the timers again."""
        self._post(self._timers_changed_now)

    def _timers_changed_now(self) -> None:
        self._timers_changed.set()

    def _on_registered(self, names: tuple[str, ...], replaced: bool) -> None:
        """A class was registered (in any thread): wake what waited for it.

        A class defined again (a REPL, a reload) must be the one that runs
        from now on, for resident entities too: they take it up at once when
        the lock can be had, so a send right after the new definition runs
        it. Inside a handler this thread may hold the lock already; and
        another thread holding it might wait on this one (an import lock),
        so the wait is bounded: then the runtime's thread does it soon after.
        """
        if self.closed:
            return
        if replaced:
            if not inside_handler() and self.lock.acquire(timeout=_REFRESH_WAIT):
                try:
                    self.dispatcher.refresh()
                finally:
                    self.lock.__exit__(None, None, None)
            else:
                self._post(self._refresh)
        module = _module_being_imported(names)
        if module is not None and any(name in self.residents.parked for name in names):
            # Its module is still being imported: what activate() calls may be
            # defined further down. Its waiting messages run once the import is done.
            threading.Thread(
                target=self._unpark_once_imported,
                args=(module, names),
                name="pachyderm-import-wait",
                daemon=True,
            ).start()
            return
        for name in names:
            self._post(self._unpark, name)

    def _unpark_once_imported(self, module: ModuleType, names: tuple[str, ...]) -> None:
        while _importing(module) and sys.modules.get(module.__name__) is module:
            time.sleep(_IMPORT_POLL)
        for name in names:
            self._post(self._unpark, name)

    def _refresh(self) -> None:
        with self.lock:
            self.dispatcher.refresh()

    def _unpark(self, name: str) -> None:
        with self.lock:
            self.dispatcher.unpark(name)

    # -- accepting messages --------------------------------------------------

    def encode_message(self, address: object, message: Any) -> bytes:
        """Check an address and encode a message for it, before anything is stored."""
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        blob = encode(message)
        if len(blob) > self.max_message_bytes:
            raise MessageTooLargeError(len(blob), self.max_message_bytes)
        check_address = self.dispatcher.check_address
        if check_address is not None:
            check_address(address.entity_name, address._id)
        return blob

    @protect
    async def send(self, eco: str, address: Entity[Any, Any], message: Any) -> None:
        """Accept a message durably; returns once it is in the recipient's durable inbox."""
        self._check_caller()
        blob = self.encode_message(address, message)
        with self.lock:
            if self.closed:
                self.check_open()
            group = self.commit.open
            ident = (eco, address.entity_name, address._id)
            try:
                self.dispatcher.deliver(ident, address, blob, None)
            except BaseException as error:
                raise self._fail(error, "carrying out a transition") from error
            self.check_linger()  # (run at once, it may answer others)
            sleeper = sleep_until_finished(group.tasks)
        self._dirty.set()
        await sleeper
        if group.error is not None:
            raise group.error

    @protect
    async def send_sync(self, eco: str, address: Entity[Any, Any], message: Any) -> Any:
        """Deliver a message and return the state after its activation is durable."""
        self._check_caller()
        blob = self.encode_message(address, message)
        reply = TrioReply()
        with self.lock:
            if self.closed:
                self.check_open()
            ident = (eco, address.entity_name, address._id)
            try:
                self.dispatcher.deliver(ident, address, blob, reply)
            except BaseException as error:
                raise self._fail(error, "carrying out a transition") from error
            self.check_linger()  # (run at once, it may answer others)
        self._dirty.set()
        return load_state(address, await reply.wait())

    def send_from_thread(
        self, eco: str, address: Entity[Any, Any], blob: bytes, *, sync: bool
    ) -> ThreadReply:
        """Accept an encoded message from a thread other than the runtime's.

        The reply resolves once the message is durably accepted, or with
        ``sync`` once its activation is durable, carrying the new record. The
        request is processed by whichever thread holds the runtime's lock
        (this one, if it is free); then, if nobody is writing, this thread
        writes and completes the open group. Must not be interrupted halfway:
        the shell face defers Ctrl-C around it.
        """
        reply = ThreadReply()
        self.lock.submit(
            ((eco, address.entity_name, address._id), address, blob, reply, sync, reply.thread)
        )
        if reply.lead:
            reply.lead = False
            self._lead()
        return reply

    def wait_from_thread(self, reply: ThreadReply) -> bytes | None:
        """Wait for a :meth:`send_from_thread` reply, writing a group if asked to lead."""
        while True:
            reply.wait_signal()
            if reply.resolved:
                if reply.error is not None:
                    raise reply.error
                return reply.record
            self._lead()  # woken to write the group its work is in

    def queue_from_thread(self, eco: str, address: Entity[Any, Any], message: Any) -> bool:
        """Encode a message for a volatile store and accept it from another thread: queue it.

        Encoded as :meth:`encode_message` does (its errors surface before
        anything is queued), here rather than there: one call less per send.
        Queued in the runtime's memory, it is as durable as a volatile store
        makes anything; whoever next holds the lock processes it (the
        committer is told). Returns True when so many wait that the caller
        should take the lock itself (Ctrl-C deferred), waiting for it if
        busy: that bounds the queue however fast a sender sends.
        """
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        blob = encode(message)
        if len(blob) > self.max_message_bytes:
            raise MessageTooLargeError(len(blob), self.max_message_bytes)
        if self.closed:
            self.check_open()
        requests = self.lock.requests  # (CombiningLock.post, inlined: every send)
        requests.append(((eco, address.entity_name, address._id), address, blob, None, False, 0))
        if len(requests) >= _QUEUE_BOUND:
            return True
        if "commit" not in self._posted:  # (this is never the runtime's thread)
            self._signal_commit()
        return False

    def _accept_requests(self, requests: deque[_Request]) -> None:
        """Process the requests of other threads, oldest first (the lock held; never raises).

        Messages queued for a volatile store (no reply: accepted already) are
        delivered here, in one loop; the committer is told once, after the
        run of them, not once per message.
        """
        deliver = self.dispatcher.deliver
        delivered = False
        try:
            while requests:
                request = requests.popleft()
                ident, address, blob, reply, _, _ = request
                if reply is not None:
                    self._accept_request(request)
                elif not self.closed:  # (closed: its queued messages are gone with the store)
                    delivered = True
                    try:
                        deliver(ident, address, blob, None)
                    except BaseException as error:
                        self._fail(error, "carrying out a transition")
        finally:
            if delivered and not self._dirty.is_set():  # (set: the committer looks again)
                self._signal_commit()

    def _accept_request(self, request: _Request) -> None:
        """Process a thread's message (with the lock held; never raises).

        If the group then needs writing and nobody is writing: a request
        processed by its own caller's thread is written by that thread (it
        leads); one processed by another thread goes to the committer.
        """
        ident, address, blob, reply, sync, thread = request
        assert reply is not None, "queued messages are delivered by _accept_requests"
        if self.closed:
            reply.resolve(None, self._closed_error(), call_now)
            return
        group = self.commit.open
        # Signals run in the main thread only: there, mark whether this is the caller's own
        # activation (an interrupt may then stop it) or another thread's (it may not).
        mine = thread == _MAIN_THREAD and threading.get_ident() == thread
        if mine:
            own_call(True)
        try:
            ran = self.dispatcher.deliver(ident, address, blob, reply if sync else None)
            if ran and self.replies_in is not None:  # (it may answer others)
                if threading.get_ident() == self._thread:
                    self.check_linger()
                else:
                    self._post(self._check_linger_locked)
        except BaseException as error:
            problem = self._fail(error, "carrying out a transition")
            if reply is not None:
                reply.resolve(None, problem, call_now)
            return
        finally:
            if mine:
                own_call(False)
        if not sync:
            group.waiters.append(reply)
        elif not ran:
            return  # queued: the dispatcher runs it, then the committer writes it
        if self.commit.writing is not None or self._forming:
            return  # the writer, or a leader about to write, writes this group
        if threading.get_ident() == thread:
            reply.lead = True  # nobody writes: the caller itself will, no thread hop at all
            self._forming = True
        else:
            self._signal_commit()

    def _lead(self) -> None:
        """Write the open group in this (non-trio) thread, if nobody else is writing it."""
        with self.lock:
            self._forming = False
            if self.failure or self.commit.writing is not None or not len(self.commit.open.batch):
                if self.closed:
                    self._signal_commit()  # a closing committer waits for leaders to finish
                return
            self._writing_elsewhere += 1
            group = self._seal()
        self._write_here(group)

    def _write_here(self, group: Group) -> None:
        """Write and complete a group in this (non-trio) thread, then pass the lead on.

        Callers whose work joined the open group while this one was written
        are waiting on it. One of them is woken to write it next (leadership
        handed over, as LevelDB's own writers do): this thread returns to its
        caller, and the open group goes on filling while the next leader
        wakes. Never the main thread, whose wait Ctrl-C may cut short; with
        no one to hand it to, the committer writes it.
        """
        try:
            seconds = self.commit.write(group)
        except BaseException as error:
            with self.lock:
                self._writing_elsewhere -= 1
                self._fail(error, "writing to the store")
                group.finish(self._write_failed_error(), self._post_wake)
            return
        with self.lock:
            self._complete(group, seconds)
            self._writing_elsewhere -= 1
            if self.closed:
                self._signal_commit()
            elif len(self.commit.open.batch) and not self._forming:
                successor = self._successor()
                if successor is None:
                    self._signal_commit()
                else:
                    self._forming = True
                    successor.hand_over()

    def _successor(self) -> ThreadReply | None:
        """A caller's thread waiting on the open group that may lead its write.

        The newest: it may not be asleep yet, and then leads without a wake-up.
        """
        group = self.commit.open
        for reply, _, _ in reversed(group.replies):
            if isinstance(reply, ThreadReply) and reply.thread != _MAIN_THREAD:
                return reply
        for reply in reversed(group.waiters):
            if isinstance(reply, ThreadReply) and reply.thread != _MAIN_THREAD:
                return reply
        return None

    def _fail(self, error: BaseException, doing: str) -> EcosystemClosedError:
        """Stop, saying why: ``doing`` failed with ``error`` (call with the lock held).

        A failed write leaves memory ahead of the store; a failed read, or a
        fault while carrying out a transition, leaves the open group
        incomplete: it is never written. Returns the error to give callers.
        """
        if self.failure is None:
            self.failure = error
            self._failure_text = f"{doing} failed: {type(error).__name__}: {error}"
            log("runtime.failed", level="error", store=self.name, error=self._failure_text)
        self.closed = True
        self._post(self._stop.set)
        self._signal_commit()  # a committer waiting for a write (closing, say) sees it failed
        return self._stopped_error()

    def _stopped_error(self) -> EcosystemClosedError:
        return EcosystemClosedError(f"{self.name} stopped: {self._failure_text}")

    # -- dispatching ---------------------------------------------------------

    @protect
    def pause(self) -> None:
        """Stop running activations; messages are still accepted (for maintenance and tests)."""
        with self.lock:
            self.dispatcher.paused = True

    @protect
    def resume(self) -> None:
        """Run activations again after :meth:`pause`."""
        with self.lock:
            self.dispatcher.paused = False
            if self.dispatcher.run_queue:
                self._signal_work()

    @protect
    async def _dispatch_loop(self, scope: trio.CancelScope) -> None:
        dispatcher = self.dispatcher
        run_queue = dispatcher.run_queue
        with scope:
            while True:
                while not run_queue or dispatcher.paused:
                    self._work = trio.Event()
                    if run_queue and not dispatcher.paused:
                        break  # filled by another thread while we made the event
                    await self._work.wait()
                with self.lock:
                    unread = dispatcher.unread(_DISPATCH_BATCH)
                    hand_overs = dispatcher.hand_overs
                read = None
                if unread:  # (round trips, read without the lock, while the tasks here go on)
                    try:
                        read = await trio.to_thread.run_sync(
                            dispatcher.read, unread, limiter=self.threads
                        )
                    except Exception as error:  # (as a read in the transition itself)
                        with self.lock:
                            self._fail(error, "carrying out a transition")
                        return
                with self.lock:
                    if self.closed:
                        return
                    if dispatcher.paused:
                        continue  # paused while reading: what was read is read again later
                    if dispatcher.hand_overs != hand_overs:
                        read = None  # read again, each when it runs
                    try:
                        dispatcher.run_ready(_DISPATCH_BATCH, read)
                    except Exception as error:  # a read of the store failed: nothing changed
                        self._fail(error, "carrying out a transition")
                        return
                    self.check_linger()
                self._dirty.set()
                if self._settling:
                    self._pulse()
                if run_queue:  # else waiting for work is the checkpoint
                    await trio.lowlevel.checkpoint()

    # -- committing ----------------------------------------------------------

    def _seal(self) -> Group:
        return self.commit.seal(self.dispatcher.seq)

    @protect
    async def _commit_loop(self) -> None:
        commit = self.commit
        run_queue = self.dispatcher.run_queue
        while True:
            with self.lock:
                if self.failure is not None:
                    return
                ready = commit.writing is None and not self._forming and len(commit.open.batch) > 0
                if not ready:
                    # Closing: done once nothing is written or about to be, by anyone.
                    # (A caller's thread may be leading the write of the open group:
                    # returning before it did would answer its callers "closed", and
                    # close the store under its write.)
                    if self.closed and commit.writing is None and not self._forming:
                        return
                    self._dirty = trio.Event()
            if not ready:
                await self._dirty.wait()
                continue
            # Let activations that are ready join this group first: a message
            # accepted and consumed in one group is never written at all. A
            # bound keeps an endless stream of work from holding commits back.
            for _ in range(_JOIN_ROUNDS):
                if not run_queue or self.dispatcher.paused or self.closed:
                    break
                await trio.lowlevel.checkpoint()
            if self._asked is not None and self._linger_limit and not self.closed:
                with self.lock:  # (callers' threads add to what it reads)
                    if self._should_linger():
                        self.replies_in = trio.Event()  # (now: whatever comes next ends it)
                if self.replies_in is not None:
                    await self._linger()
            with self.lock:
                if self.failure is not None:
                    return  # (failed meanwhile: the open group may be incomplete)
                if commit.writing is not None or self._forming or not len(commit.open.batch):
                    continue
                inline = self._write_inline()
                group = self._seal()
            # Inline only when no other task of this trio run could use the time:
            # a quick write then delays nothing but I/O readiness.
            try:
                if inline and trio.lowlevel.current_statistics().tasks_runnable == 0:
                    seconds = commit.write(group)
                else:
                    seconds = await trio.to_thread.run_sync(
                        commit.write, group, limiter=self.threads
                    )
            except Exception as error:
                with self.lock:
                    self._fail(error, "writing to the store")
                raise
            with self.lock:
                self._complete(group, seconds)

    def awaiting_replies(self) -> bool:
        """Whether callers here still wait on replies to the last group written that
        asked other processes (only that one: a reply long in coming holds up one write).
        With the lock held."""
        asked = self._asked
        if asked is None:
            return False
        if asked.replies_due:
            return True
        self._asked = None
        return False

    def _should_linger(self) -> bool:
        """Whether to wait for replies due before writing the open group (lock held).

        Not when it holds activations, replies or released partitions (see
        :meth:`_answering`): others may wait on them (two workers asking each
        other would each wait for the other's group, in step). Not for the next
        writes after a wait that ran out (1, 2, 4... up to ``_MAX_SKIPS``, until
        a wait ends early): a stream of callers asking a paused or slow worker
        would hold up every write.
        """
        if self._answering() or not self.awaiting_replies():
            return False
        if self._skips:
            self._skips -= 1
            self._asked = None
            return False
        return True

    def check_linger(self) -> None:
        """End the committer's wait for replies due, if the open group now answers
        anyone or nothing is due (in the runtime's thread, the lock held)."""
        waiting = self.replies_in
        if waiting is not None and (self._answering() or not self.awaiting_replies()):
            waiting.set()

    def _check_linger_locked(self) -> None:
        with self.lock:
            self.check_linger()

    def _answering(self) -> bool:
        """Whether the open group answers anyone: activations (callers here, or other
        processes), replies to senders elsewhere, partitions it releases (lock held)."""
        group = self.commit.open
        return bool(group.activations) or cast(SharedBatch, group.batch).answers_others()

    async def _linger(self) -> None:
        """Wait until no reply is due, the storage's ``linger`` at most; then let the
        callers the replies woke send, into the open group.

        Each worker answers its share of a write in turn; the callers each answer
        wakes send again, and without the wait each wave would be a write of its
        own, waking every worker again. It ends once the group answers anyone
        (an activation, a reply, a release: :meth:`check_linger`), nothing is
        due any more, or the store stops.
        """
        asked = self._asked
        assert self.replies_in is not None
        with trio.move_on_after(self._linger_limit) as waiting:
            await self.replies_in.wait()
        self.replies_in = None
        with self.lock:
            if self._asked is asked:  # (a caller's thread may have written a newer one)
                self._asked = None  # waited for once: a late reply holds up one write
        if waiting.cancelled_caught:
            self._backoff = self._skips = min(2 * self._backoff or 1, _MAX_SKIPS)
        else:
            self._backoff = 0
        await trio.lowlevel.checkpoint()

    def _check_caller(self) -> None:
        """Refuse a trio-face call from outside the trio run the runtime lives in (another
        thread's trio run, asyncio): its wake-ups would fail halfway, and stall the store."""
        if threading.get_ident() != self._thread:
            raise PachydermError(
                f"the trio face of {self.name} belongs to the trio run that opened it, in "
                f"another thread: from this thread, call it through trio.from_thread.run() "
                f"with that run's token, or use the shell face (LocalDisk.send_sync, ...)"
            )

    def _write_inline(self) -> bool:
        """Whether to write in this thread: nothing to overlap with, and writes are quick.

        A hop to a worker thread and back costs more than a quick write (about
        0.25 ms of this thread's time on the machines measured), and with every
        sender waiting on the write there is nothing to do meanwhile.
        """
        return not self.storage.blocking or (
            not self.dispatcher.run_queue and self.commit.seconds < INLINE_WRITE
        )

    def _complete(self, group: Group, seconds: float) -> None:
        """``group`` is durable: tell the followers, answer the callers, forget the idle."""
        self.commit.written(seconds)
        if group.replies_due:
            self._asked = group
        posts: list[Callable[[], object]] = []
        wake: Wake = call_now if threading.get_ident() == self._thread else posts.append
        followers = self.followers if self.followers else None
        for record, stored in group.activations:
            record.uncommitted -= 1
            if stored is None:  # a failed activation: the state did not change
                continue
            record.durable = stored
            if followers is not None:
                followers.push(record.ident, stored, wake)
        group.finish(None, wake)
        self.timers.durable(group.number)
        if self._taken:
            number = group.number
            for taken in [key for key, at in self._taken.items() if at == number]:
                del self._taken[taken]
        self.residents.passivate()
        if self._settling:
            wake(self._pulse)
        if posts:
            self._post(_run_all, posts)

    def _pulse(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    @protect
    async def settle(self) -> None:
        """Wait until every accepted message has been processed and committed.

        Timers due by now count as accepted messages. Messages waiting for an
        entity class this process has not registered do not count: they wait
        until it is. In a store shared by processes, the messages this one
        accepted before the call count wherever they run (those accepted since
        do not: other threads sending all the while would keep it waiting);
        what their activations send from other processes does not.
        """
        self._check_caller()
        with self.lock:
            below = self.dispatcher.seq  # the next message's: those before it count
        while True:
            await self._settle_here()
            if self.sharing is None:
                return
            storage = cast(SharedStorage, self.storage)
            if not await trio.to_thread.run_sync(storage.sent_waiting, below, limiter=self.threads):
                return
            await trio.sleep(_SETTLE_POLL)

    async def _settle_here(self) -> None:
        """:meth:`settle` for what this process runs."""
        while True:
            with self.lock:
                self.check_open()
                dispatcher = self.dispatcher
                if not (
                    (dispatcher.run_queue and not dispatcher.paused)
                    or self.lock.queued
                    or len(self.commit.open.batch)
                    or self.commit.writing is not None
                    or self._timer_due()
                ):
                    return
                self._settling += 1
                progress = self._progress
            try:
                await progress.wait()
            finally:
                with self.lock:
                    self._settling -= 1

    # -- time ------------------------------------------------------------------

    def _timer_due(self) -> bool:
        due = self.timers.next_due()
        return due is not None and due <= self.clock.now()

    @protect
    async def _timekeeper(self, scope: trio.CancelScope) -> None:
        clock = self.clock
        real_time = isinstance(clock, WallClock)
        with scope:
            while True:
                with self.lock:
                    fired = self.timers.pop_due(clock.now(), _FIRE_BATCH)
                    if fired:
                        self.dispatcher.fire(fired)
                    next_due = self.timers.next_due()
                    self._timer_target = next_due
                    self._timers_changed = changed = trio.Event()
                if fired:
                    self._dirty.set()
                    if self._settling:
                        self._pulse()
                    await trio.lowlevel.checkpoint()
                    continue
                if next_due is None or not real_time:
                    await changed.wait()  # a new timer, or the manual clock moved
                    continue
                delay = next_due - clock.now()
                if delay > 0:
                    with trio.move_on_after(min(delay, _WALL_CLOCK_NAP)):
                        await changed.wait()

    # -- reading -------------------------------------------------------------

    def _committed_record(self, ident: Ident) -> bytes | None:
        record = self.residents.get(ident)
        if record is not None:
            if record.loaded:
                return record.durable
            return self.storage.load(record.handle)
        return self.storage.load(self.storage.handle(ident))

    @protect
    def state_of(self, eco: str, address: Entity[Any, Any]) -> Any:
        """The latest committed state of ``address`` (``init()`` if it has none)."""
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        with self.lock:
            self.check_open()
            stored = self._committed_record((eco, address.entity_name, address._id))
            if stored is None and type(address).former_names:
                renamed = stored_under_former_name(self.storage, eco, address)
                if renamed is not None:
                    raise renamed
        return load_state(address, stored)

    @protect
    def subscribe(
        self, eco: str, address: Entity[Any, Any], buffer: int = DEFAULT_FOLLOWER_BUFFER
    ) -> Subscription:
        """Follow ``address``: its committed state now, and every change after."""
        if not isinstance(address, Entity):
            raise _not_an_address(address)
        ident = (eco, address.entity_name, address._id)
        with self.lock:
            self.check_open()
            check_buffer(buffer)  # (before the store registers anything)
            here = self._followed_here(ident)
            since = 0
            if self.sharing is not None:  # changes committed elsewhere come through the store
                record, since = cast(SharedStorage, self.storage).follow(ident)
            elif here is None:
                record = self.storage.load(self.storage.handle(ident))
            if here is not None:
                record = here.durable
            subscription = Subscription(address, record, buffer, since)
            self.followers.add(ident, subscription)
        return subscription

    def _followed_here(self, ident: Ident) -> Resident | None:
        """The record of ``ident`` whose durable state a new follower starts at, if this
        runtime has one: loaded here, or with activations in the group being written.

        Their states are told to followers when the group completes, so a follower
        registered before that starts at the state before them, even if the store
        holds them already (a record handed over, or to be loaded again after a class
        was defined again, while its group is written): else it would hear them twice.
        """
        record = self.residents.get(ident)
        if record is not None and (record.loaded or record.record is not None):
            return record
        writing = self.commit.writing
        if writing is not None:  # handed over while its group is written
            for written, _ in writing.activations:
                if written.ident == ident and (written.loaded or written.record is not None):
                    return written
        return None

    @protect
    def end_followers(self) -> None:
        """End every follower: their iterations finish (the interpreter is exiting)."""
        with self.lock:
            self.followers.end_all(self._post_wake)

    # -- dead letters --------------------------------------------------------

    @protect
    def dead_letters(self, eco: str) -> list[DeadLetter]:
        """Every dead letter of the ecosystem, oldest first."""
        with self.lock:
            self.check_open()
            stored = list(self.storage.dead_letters(eco))
        letters = [decode_dead_letter(dead_letter_id, blob) for dead_letter_id, blob in stored]
        # By time: in a shared store an id's high bits are its process's incarnation.
        letters.sort(key=_failed_at)
        return letters

    def _find_dead_letter(self, eco: str, dead_letter: DeadLetter | int) -> tuple[int, bytes]:
        """A dead letter's id and stored record, if not claimed already (with the lock held)."""
        self.check_open()
        dead_letter_id = dead_letter.id if isinstance(dead_letter, DeadLetter) else dead_letter
        if type(dead_letter_id) is not int:
            raise InvalidArgumentError(
                f"dead letters are named by a DeadLetter or its int id, got "
                f"{describe(dead_letter)}; dead_letters() lists them"
            )
        if (
            not 0 <= dead_letter_id < _MAX_DEAD_LETTER_ID  # (ids are sequence numbers)
            or (eco, dead_letter_id) in self._taken
            or (blob := self._read_dead_letter_to_claim(eco, dead_letter_id)) is None
        ):
            raise UnknownDeadLetterError(
                f"no dead letter {shown(dead_letter_id)} in this ecosystem; dead_letters() lists "
                f"them"
            )
        if isinstance(dead_letter, DeadLetter):  # ids are a store's: another's may be here
            found = decode_dead_letter(dead_letter_id, blob)
            given = (dead_letter.address, dead_letter.failed_at, dead_letter.error)
            if (found.address, found.failed_at, found.error) != given:
                if self.sharing is not None:
                    self.sharing.storage.unclaim_dead_letter(eco, dead_letter_id)
                raise UnknownDeadLetterError(
                    f"{dead_letter!r} is not this ecosystem's: its dead letter "
                    f"{dead_letter_id} is another ({found!r}). Take the letter from this "
                    f"ecosystem's dead_letters()"
                )
        return dead_letter_id, blob

    def _read_dead_letter_to_claim(self, eco: str, dead_letter_id: int) -> bytes | None:
        # Another process may redeliver or discard the same letter at once: a shared
        # store claims it first, or the loser's group would fail to write and stop it.
        if self.sharing is not None:
            return self.sharing.storage.claim_dead_letter(eco, dead_letter_id)
        return self.storage.dead_letter(eco, dead_letter_id)

    def _claim_dead_letter(self, eco: str, dead_letter_id: int) -> None:
        """Remove a found dead letter in the open group (with the lock held)."""
        group = self.commit.open
        group.batch.remove_dead_letter(eco, dead_letter_id)
        self._taken[(eco, dead_letter_id)] = group.number

    @protect
    async def redeliver(self, eco: str, dead_letter: DeadLetter | int) -> None:
        """Put a dead letter back in its entity's inbox, atomically, as a new message.

        Raises:
            UnregisteredNameError: its address or message names a class not
                registered here; the letter stays as it is.
        """
        self._check_caller()
        with self.lock:
            dead_letter_id, blob = self._find_dead_letter(eco, dead_letter)
            # Read before it is claimed: a letter that cannot be read here stays as it is.
            try:
                address, message_blob = dead_letter_message_blob(dead_letter_id, blob)
            except BaseException:
                if self.sharing is not None:
                    self.sharing.storage.unclaim_dead_letter(eco, dead_letter_id)
                raise
            self._claim_dead_letter(eco, dead_letter_id)
            ident = (eco, address.entity_name, address._id)
            dispatcher = self.dispatcher
            group = self.commit.open
            # As an activation's message: in a shared store, an entity run by another
            # process gets it in its stored inbox (never run here, see Dispatcher.owns).
            dispatcher.send(ident, address, message_blob)
            sleeper = sleep_until_finished(group.tasks)
        self._dirty.set()
        await sleeper
        if group.error is not None:
            raise group.error

    @protect
    async def discard(self, eco: str, dead_letter: DeadLetter | int) -> None:
        """Delete a dead letter for good."""
        self._check_caller()
        with self.lock:
            dead_letter_id, _ = self._find_dead_letter(eco, dead_letter)
            self._claim_dead_letter(eco, dead_letter_id)
            group = self.commit.open
            sleeper = sleep_until_finished(group.tasks)
        self._dirty.set()
        await sleeper
        if group.error is not None:
            raise group.error


_IMPORT_POLL = 0.005  # seconds between looks at a module being imported


def _importing(module: ModuleType) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _module_being_imported(names: tuple[str, ...]) -> ModuleType | None:
    """The module defining the class registered under ``names``, if its import is under way."""
    for registry in (entity_classes, value_types):
        cls = registry.get(names[0])
        if cls is not None:
            module = sys.modules.get(cls.__module__)
            if module is not None and _importing(module):
                return module
    return None


def _run_all(callbacks: list[Callable[[], object]]) -> None:
    for callback in callbacks:
        callback()


def _failed_at(letter: DeadLetter) -> tuple[float, int]:
    return letter.failed_at, letter.id


def _entity_text(name: str, entity_id: Any) -> str:
    """An entity known by its stored name, as errors show it: ``Counter('c')``."""
    cls = entity_classes.get(name)  # (registered: a caller here sent to it)
    try:
        return repr(cls(entity_id)) if cls is not None else f"{name}({safe_repr(entity_id)})"
    except Exception:  # (a class registered again since, that refuses the id): never mind
        return f"{name}({safe_repr(entity_id)})"


def _not_an_address(value: object) -> PachydermError:
    return InvalidAddressError(
        f"messages are sent to entity addresses, like Counter('my_counter'); got {describe(value)}"
    )
