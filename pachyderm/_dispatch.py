"""Dispatch: one activation at a time per entity, and what its transition becomes.

The dispatcher accepts messages into inboxes, runs activations in acceptance
order (an entity is in the FIFO run queue at most once, so it never has two
running), and interprets each transition into the open group's batch: the
new record, the consumed message, sends accepted into their recipients'
inboxes, timers set and cancelled, or a dead letter. It fires due timers the
same way. Every method must be called with the runtime's lock held.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from pachyderm._clock import Clock
from pachyderm._codec import decode
from pachyderm._commit import Group, GroupCommit, Reply, Wake
from pachyderm._dead_letters import encode_dead_letter
from pachyderm._entity import Entity, entity_classes, newest_address
from pachyderm._log import log, logging_enabled
from pachyderm._residents import Envelope, Resident, Residents
from pachyderm._step import (
    Activated,
    CancelTimer,
    Failed,
    Send,
    SetTimer,
    activate,
    load_state,
    record_bytes,
)
from pachyderm._storage import Ident, PendingMessage, SharedBatch, Storage, Timer
from pachyderm._timers import Timers, due_at
from pachyderm.errors import (
    ActivationError,
    MessageTooLargeError,
    PachydermError,
    RegistrationError,
    UnregisteredNameError,
    WaitingForClassError,
    escape_surrogates,
    exception_text,
)

__all__ = ["Dispatcher", "stored_under_former_name"]


_IMMUTABLE = frozenset({int, float, str, bytes, bool, type(None)})  # kept as returned


class Dispatcher:
    """Runs the activations of one runtime and records their effects in the open group."""

    def __init__(
        self,
        storage: Storage,
        residents: Residents,
        commit: GroupCommit,
        timers: Timers,
        clock: Clock,
        *,
        max_message_bytes: int,
        on_work: Callable[[], None],
        on_timer: Callable[[float], None],
        on_commit: Callable[[], None],
        wake: Wake,
    ) -> None:
        self.storage = storage
        self.residents = residents
        self.commit = commit
        self.timers = timers
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.run_queue: deque[Resident] = deque()
        self.seq = 0
        # A shared storage (Postgres) runs only the entities it owns; messages to the
        # others are forwarded to their stored inboxes. None: every entity is ours.
        self.owns: Callable[[Ident], bool] | None = None
        # A storage that cannot hold every address checks recipients: one it refuses
        # fails the activation that sends to it (a dead letter), before anything is kept.
        self.check_address: Callable[[str, Any], object] | None = None
        # A storage where each read is a round trip reads the states of the entities
        # about to run in one (see run_ready); their records wait here until loaded.
        self.load_many: Callable[[list[Any]], list[bytes | None]] | None = None
        # A storage that cannot hold any size of state: a larger one fails its activation.
        self.max_state_bytes: int | None = None
        self._preloaded: dict[Ident, bytes | None] = {}
        # Counts hand-overs of partitions (a shared storage): states read before one
        # may be older than what the partition's next owner committed.
        self.hand_overs = 0
        # Callers waiting on replies from other processes: by seq, the reply, the group
        # that accepted the message (None: stored, known from the store) and the entity.
        self.remote: dict[int, tuple[Reply, Group | None, Ident]] = {}
        self.paused = False
        self.activations = 0
        self.failures = 0
        self.timers_fired = 0
        self._on_work = on_work  # the run queue was empty and is not
        self._on_timer = on_timer  # a timer due at this time was set
        self._on_commit = on_commit  # the open group should be written
        self._wake = wake  # for replies answered outside a group's completion
        self._missing: dict[str, UnregisteredNameError] = {}  # why entities are parked, by name

    # -- accepting -----------------------------------------------------------

    def record_for(self, ident: Ident, address: Entity[Any, Any] | None) -> Resident:
        """The resident record of an entity, made resident if it was not."""
        record = self.residents.table.get(ident)
        if record is None:
            return self.residents.add(ident, None if address is None else newest_address(address))
        if record.address is None and address is not None:
            record.address = newest_address(address)  # found while its class was not registered
            if record.parked_on == address.entity_name:
                self.unpark(record.parked_on)
        return record

    def deliver(
        self, ident: Ident, address: Entity[Any, Any], blob: bytes, reply: Reply | None
    ) -> bool:
        """Accept a message from outside; activate it at once if its entity is idle.

        An idle entity (nothing in its inbox, not queued, not parked) would run
        this message next anyway; running it here, in the sender's step, skips
        the inbox and the run queue: accepted and consumed in the same group,
        the message is never written, only its effects are. Where each read of
        a state is a round trip, an entity whose state is still to be read is
        queued instead: the runtime reads it with others' in one, outside its
        lock (:meth:`unread`). Returns whether it ran.
        """
        record = self.residents.table.get(ident)
        if record is None or record.address is None:
            if record is None and self.owns is not None and not self.owns(ident):
                self.forward(ident, blob, reply)
                return False
            record = self.record_for(ident, address)
        if not (record.inbox or record.scheduled or record.parked_on or self.paused) and (
            # (a state still to be read, where each read is a round trip: queued)
            self.load_many is None or record.loaded or record.record is not None
        ):
            seq = self.seq
            self.seq = seq + 1
            if self._activate(record, seq, blob, reply):
                return True
        self.enqueue(record, blob, reply)
        return False

    def enqueue(self, record: Resident, blob: bytes, reply: Reply | None) -> None:
        """Put a message in its recipient's inbox, in the open group; schedule the recipient."""
        seq = self.seq
        self.seq = seq + 1
        group = self.commit.open
        token = group.batch.accept(record.handle, seq, blob)
        envelope = Envelope(seq, blob, reply, group, token)
        record.inbox.append(envelope)
        if record.parked_on is None:
            if not record.scheduled:
                self.schedule(record)
        elif reply is not None:
            self._tell_waiting(record, envelope)

    def forward(self, ident: Ident, blob: bytes, reply: Reply | None) -> None:
        """Write a message to the stored inbox of an entity another process runs."""
        seq = self.seq
        self.seq = seq + 1
        group = self.commit.open
        cast(SharedBatch, group.batch).forward(ident, seq, blob, reply is not None)
        if reply is not None:
            self.await_reply(seq, reply, group, ident)
        self._on_commit()

    def send(self, ident: Ident, address: Entity[Any, Any] | None, blob: bytes) -> None:
        """An activation's, a timer's or a redelivered message: into a resident inbox, or
        forwarded."""
        if self.owns is not None and ident not in self.residents.table and not self.owns(ident):
            self.forward(ident, blob, None)
        else:
            self.enqueue(self.record_for(ident, address), blob, None)

    def schedule(self, record: Resident) -> None:
        if not record.scheduled:
            record.scheduled = True
            run_queue = self.run_queue
            run_queue.append(record)
            if len(run_queue) == 1:  # only an empty queue can have the dispatcher waiting
                self._on_work()

    def recover(self, pending: PendingMessage) -> Resident:
        """A message found pending when the store opened: back into its inbox."""
        ident, seq, blob = pending
        record = self.residents.get(ident)
        if record is None:
            record = self.residents.add(ident, None)
        record.inbox.append(Envelope(seq, blob, None, None, -1))
        if self.owns is None:  # (a shared storage numbers each process's messages apart)
            self.seq = max(self.seq, seq + 1)
        return record

    def adopt(self, pending: PendingMessage, batch: object, token: int) -> Resident:
        """A message this process forwarded to an entity it has just taken over: into its inbox.

        Its acceptance is ``token`` in ``batch``: while that is the open group's,
        running it takes the acceptance back, as for a message accepted here.
        Whoever waits on it is answered by its activation here.
        """
        ident, seq, blob = pending
        record = self.residents.get(ident)
        if record is None:
            record = self.residents.add(ident, None)
        group = None
        for candidate in (self.commit.open, self.commit.writing):
            if candidate is not None and candidate.batch is batch:
                group = candidate
        remote = self.answered(seq)
        reply = None if remote is None else remote[0]
        record.inbox.append(Envelope(seq, blob, reply, group, token))
        return record

    def await_reply(self, seq: int, reply: Reply, group: Group | None, ident: Ident) -> None:
        """A caller here waits on a reply from elsewhere to message ``seq``, accepted in
        ``group`` (None: stored, known from the store); counted in the group."""
        self.remote[seq] = (reply, group, ident)
        if group is not None:
            group.replies_due += 1

    def answered(self, seq: int) -> tuple[Reply, Group | None, Ident] | None:
        """Stop waiting on a reply from elsewhere to message ``seq``: its entry, if any."""
        entry = self.remote.pop(seq, None)
        if entry is not None and entry[1] is not None:
            entry[1].replies_due -= 1
        return entry

    def start(self, record: Resident) -> None:
        """Schedule a recovered record, or park it until its class is registered."""
        if self._address_of(record) is not None:
            self.schedule(record)

    def _address_of(self, record: Resident) -> Entity[Any, Any] | None:
        """The address of a record found by its stored name; None (parked) if unregistered."""
        _, name, entity_id = record.ident
        if name not in entity_classes:
            self.park(record, UnregisteredNameError(name, "entity class"))
            return None
        record.address = address = entity_classes.resolve(name)(entity_id)
        return address

    # -- running -------------------------------------------------------------

    def run_ready(self, limit: int, read: dict[Ident, bytes | None] | None = None) -> int:
        """Run up to ``limit`` entities from the run queue, one message each.

        ``read``: stored states of some of them (see :meth:`unread`), by ident.
        """
        run_queue = self.run_queue
        count = min(len(run_queue), limit)
        if read:
            self._preloaded = read
        try:
            for _ in range(count):
                record = run_queue.popleft()
                record.scheduled = False
                self._run_next(record)
                if record.inbox and record.parked_on is None:
                    self.schedule(record)
        finally:
            # One not loaded after all (parked, or its message unreadable) reads again
            # when it runs: its partition may have been elsewhere in between.
            self._preloaded = {}
        return count

    def unread(self, limit: int) -> list[tuple[Ident, Any]]:
        """Of the next ``limit`` entities to run, those whose stored states are still to be
        read, where each read is a round trip (none elsewhere): ident and handle.

        The runtime reads them in one round trip (:meth:`read`), without its lock,
        and runs them with what it read (:meth:`run_ready`). Each state read is the
        newest: only an activation changes it, and an entity that is not loaded has
        none uncommitted (it was passivated only once durable); being in the run
        queue, it runs nowhere else before its turn comes (unless its partition is
        handed over meanwhile: see ``hand_overs``).
        """
        if self.load_many is None:
            return []
        return [
            (record.ident, record.handle)
            for record in itertools.islice(self.run_queue, limit)
            if not record.loaded and record.record is None
        ]

    def read(self, unread: list[tuple[Ident, Any]]) -> dict[Ident, bytes | None]:
        """The stored states of ``unread``, in one round trip (in any thread, without the lock).

        A failure here is the runtime's, as for one load (nothing changed yet).
        """
        assert self.load_many is not None
        stored = self.load_many([handle for _, handle in unread])
        return {ident: found for (ident, _), found in zip(unread, stored, strict=True)}

    def _run_next(self, record: Resident) -> None:
        """Run one activation of ``record`` on the first message of its inbox."""
        envelope = record.inbox[0]
        if not self._activate(record, envelope.seq, envelope.blob, envelope.reply):
            return  # parked: the message stays first in the inbox
        record.inbox.popleft()
        group = self.commit.open
        if envelope.group is group:
            group.batch.unaccept(envelope.token)  # never written: nothing to remove
        else:
            group.batch.consume(record.handle, envelope.seq)
            if envelope.reply is not None:
                group.carried.append((envelope.reply, envelope.group, record.address))

    def _activate(self, record: Resident, seq: int, blob: bytes, reply: Reply | None) -> bool:
        """Run one activation of ``record`` on a message; its effects join the open group.

        All or nothing: the activation runs and everything it needs from
        storage is read before the open group changes. Returns False, having
        changed nothing, when the state or the message names a class this
        process has not registered: the entity is parked. Removing the
        message from the inbox is the caller's business.

        Raises:
            Exception: reading the storage failed (nothing changed); the
                runtime cannot go on without its data.
        """
        address = record.address
        if address is None:
            address = self._address_of(record)
            if address is None:
                return False
        self.residents.table.move_to_end(record.ident)  # most recently used: passivated last
        try:
            message = decode(blob)
        except UnregisteredNameError as missing:
            self.park(record, missing)
            return False
        except Exception as error:  # damaged bytes: the message cannot be read
            outcome: Activated | Failed = _failed(None, error)
        else:
            loaded = record.loaded or self._load(record, address, message)
            if loaded is True:
                outcome = activate(address, record.state, message, self.max_message_bytes)
            elif loaded is False:
                return False
            else:
                outcome = loaded
        if self.check_address is not None and type(outcome) is Activated and outcome[3]:
            refused = self._refused(record, outcome[3])
            if refused is not None:  # a recipient the storage cannot hold: a dead letter
                outcome = _failed(outcome[0], refused)
        limit = self.max_state_bytes
        if limit is not None and type(outcome) is Activated and len(outcome[2]) > limit:
            outcome = _failed(outcome[0], _state_too_large(len(outcome[2]), limit))
        if isinstance(outcome, Failed):
            record.remember(blob)
            record.uncommitted += 1
            self.activations += 1
            self.commit.open.activations.append((record, None))
            self._dead_letter(record, blob, reply, outcome)
            return True
        _, state, state_bytes, commands = outcome
        if state is not record.state and type(state) not in _IMMUTABLE:
            # A new object may be shared (a module's constant, another entity's state):
            # the entity gets its own, as from init() and as the Simulation gives it.
            state = decode(state_bytes)
        if commands and record.timers is None:
            self._load_timers(record, commands)  # (read before the open group changes)
        record.remember(blob)
        record.uncommitted += 1
        self.activations += 1
        record.state = state
        record.record = stored = record_bytes(address.version, state_bytes)
        group = self.commit.open
        group.batch.set_record(record.handle, stored)
        group.activations.append((record, stored))
        if commands:
            self._carry_out(record, commands)
        if reply is not None:
            group.replies.append((reply, stored, None))
        if logging_enabled():
            log("activation", level="debug", address=address, seq=seq, sent=len(commands))
        return True

    def _refused(self, record: Resident, commands: tuple[Any, ...]) -> PachydermError | None:
        """The storage's refusal of a recipient these commands send to, if any."""
        assert self.check_address is not None
        for command in commands:
            if type(command) is Send or type(command) is SetTimer:
                recipient = command.recipient
                try:
                    self.check_address(recipient.entity_name, recipient._id)
                except PachydermError as error:
                    return error
        return None

    def _load(self, record: Resident, address: Entity[Any, Any], message: Any) -> bool | Failed:
        """Load the state of ``record`` from storage before its activation: True once loaded.

        False (the entity parked) if its stored state names an unregistered
        class; a Failed transition if ``init()`` or ``upgrade()`` failed.
        """
        stored = record.record  # newest, if loaded before (see refresh): maybe not durable
        if stored is None:
            preloaded = self._preloaded
            if record.ident in preloaded:
                stored = preloaded.pop(record.ident)
            else:
                stored = self.storage.load(record.handle)  # a failure: the runtime's
            record.durable = stored
            if stored is None and type(address).former_names:
                renamed = stored_under_former_name(self.storage, record.ident[0], address)
                if renamed is not None:
                    return _failed(message, renamed)
        try:
            state = load_state(address, stored)
        except UnregisteredNameError as missing:
            self.park(record, missing)
            return False
        except BaseException as error:  # init() and upgrade() are user code too
            return _failed(message, error)
        record.record = stored
        record.state = state
        record.loaded = True
        return True

    def _load_timers(self, record: Resident, commands: tuple[Any, ...]) -> None:
        """Read the entity's named timers before its first command that needs them."""
        if any(_names_a_timer(command) for command in commands):
            record.timers = self.storage.named_timers(record.handle)

    def _carry_out(self, record: Resident, commands: tuple[Any, ...]) -> None:
        """Interpret an activation's commands: sends and timers."""
        eco = record.ident[0]
        for command in commands:
            kind = type(command)
            if kind is Send:
                recipient, blob = command
                ident = (eco, recipient.entity_name, recipient._id)
                if self.owns is None or ident in self.residents.table or self.owns(ident):
                    self.enqueue(self.record_for(ident, recipient), blob, None)
                else:
                    self.forward(ident, blob, None)
            elif kind is SetTimer:
                self._set_timer(record, command)
            elif kind is CancelTimer:
                self._cancel_timer(record, command.name)

    # -- timers ---------------------------------------------------------------

    def _named_timers(self, record: Resident) -> dict[str, tuple[float, int]]:
        assert record.timers is not None, "loaded before the activation was carried out"
        return record.timers

    def _set_timer(self, record: Resident, command: SetTimer) -> None:
        name, delay, recipient, blob = command
        if name is not None:
            self._cancel_timer(record, name)
        seq = self.seq
        self.seq = seq + 1
        due = due_at(self.clock.now(), delay)
        target = (record.ident[0], recipient.entity_name, recipient._id)
        timer = Timer(due, seq, record.ident, name, target, blob)
        group = self.commit.open
        group.batch.set_timer(timer)
        self.timers.add(timer, group.number)
        if name is not None:
            self._named_timers(record)[name] = timer.key
        self._on_timer(due)

    def _cancel_timer(self, record: Resident, name: str) -> None:
        key = self._named_timers(record).pop(name, None)
        if key is not None:
            group = self.commit.open
            group.batch.remove_timer(self.timers.stub(record.ident, name, key))
            self.timers.remove(key, group.number)

    def fire(self, timers: list[Timer]) -> None:
        """Deliver due timers: each removed, and its message accepted, in the open group."""
        group = self.commit.open
        batch = group.batch
        for timer in timers:
            batch.remove_timer(timer)
            self.timers.fired(timer, group.number)
            self._forget_fired(timer)
            self.send(timer.recipient, None, timer.message)
        self.timers_fired += len(timers)

    def _forget_fired(self, timer: Timer) -> None:
        """Take a fired named timer out of its owner's table, if the owner is resident."""
        if timer.owner is None or timer.name is None:
            return
        owner = self.residents.get(timer.owner)
        named = None if owner is None else owner.timers
        if named is not None and named.get(timer.name) == timer.key:
            del named[timer.name]

    # -- failures ---------------------------------------------------------------

    def _dead_letter(
        self, record: Resident, blob: bytes, reply: Reply | None, failure: Failed
    ) -> None:
        address = record.address
        assert address is not None
        self.failures += 1
        if record.loaded:
            # activate() may have changed the state in place before raising:
            # go back to the last state it returned, from its stored form.
            try:
                record.state = load_state(address, record.record)
            except Exception:
                record.loaded = False
        dead_letter_id = self.seq
        self.seq += 1
        error = failure.error
        # (the text of the exception and of its traceback is the handler's: made safe to
        # store, else encoding the dead letter raised and stopped the runtime)
        error_text = exception_text(error)
        self.commit.open.batch.add_dead_letter(
            record.ident[0],
            dead_letter_id,
            encode_dead_letter(
                address,
                blob,
                error_text,
                escape_surrogates(failure.traceback),
                list(record.recent),
                time.time(),
            ),
        )
        log(
            "activation.failed",
            level="warning",
            address=address,
            message=failure.message,
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
            problem = ActivationError(address, failure.message, error, recent, dead_letter_id)
            self.commit.open.replies.append((reply, None, problem))

    def refresh(self) -> None:
        """A class was defined again: resident entities take up the newest definitions.

        Addresses are resolved again by name, and states are read again from
        their newest stored form at their next activation, through the new
        classes (``upgrade()`` included). Only on redefinition: a REPL, a reload.
        """
        for record in self.residents.table.values():
            if record.address is not None:
                record.address = newest_address(record.address)
            record.loaded = False

    # -- parking: messages for classes this process has not registered -------

    def park(self, record: Resident, missing: UnregisteredNameError) -> None:
        """Keep ``record``'s messages until ``missing`` is registered; tell who waits on them."""
        name = missing.name
        self._missing[name] = missing
        if self.residents.park(record, name):
            log("entity.waiting_for_class", name=name, pending=len(record.inbox))
        for envelope in record.inbox:
            if envelope.reply is not None:
                self._tell_waiting(record, envelope)
        if self.owns is not None:  # senders in other processes may wait on these too
            batch = cast(SharedBatch, self.commit.open.batch)
            told = [batch.tell_waiting(envelope.seq, name) for envelope in record.inbox]
            if any(told):
                self._on_commit()  # no activation will make anyone write it

    def _tell_waiting(self, record: Resident, envelope: Envelope) -> None:
        """Answer a send_sync whose message waits in a parked entity's inbox.

        Its caller would otherwise wait until the class is registered, which in
        this process may be never. The message stays (it is applied once the
        class registers); the caller hears so once its acceptance is durable.
        """
        reply = envelope.reply
        assert reply is not None
        assert record.parked_on is not None
        envelope.reply = None
        missing = self._missing.get(record.parked_on)
        if missing is None:
            missing = UnregisteredNameError(record.parked_on, "entity class or value type")
        error = WaitingForClassError(record.address, missing)
        group = envelope.group
        if group is not None and not group.finished:
            group.replies.append((reply, None, error))
            if group is self.commit.open:
                self._on_commit()  # no activation will make anyone write it
        else:
            reply.resolve(None, error, self._wake)

    def unpark(self, name: str) -> None:
        self._missing.pop(name, None)
        for record in self.residents.unpark(name):
            if record.inbox:
                self.schedule(record)


def stored_under_former_name(
    storage: Storage, eco: str, address: Entity[Any, Any]
) -> RegistrationError | None:
    """The refusal to run ``address`` (which has no stored state under its name) if it has
    state stored under one of its class's former names: it would start again from init()."""
    cls = type(address)
    for former in cls.former_names:
        if storage.load(storage.handle((eco, former, address._id))) is not None:
            return RegistrationError(
                f"{address!r} has no state stored under its class's entity_name "
                f"{cls.entity_name!r}, but has under its former name {former!r}: an entity's "
                f"state and inbox stay under the name they were stored with (former_names "
                f"lets stored addresses find the class, it moves no data), so it would "
                f"start again from init(). Set entity_name = {former!r} again; renaming a "
                f"class with stored entities is not supported yet"
            )
    return None


def _failed(message: Any, error: BaseException) -> Failed:
    return Failed(message, error, "".join(traceback.format_exception(error)))


def _names_a_timer(command: Any) -> bool:
    kind = type(command)
    return kind is CancelTimer or (kind is SetTimer and command.name is not None)


def _state_too_large(size: int, limit: int) -> MessageTooLargeError:
    return MessageTooLargeError(
        size,
        limit,
        "state",
        "Keep large data outside the entity (a file, a blob store) and hold its key in "
        "the state, or split the entity: this store holds one entity's state in one value "
        "(PostgreSQL: at most 1 GB in a value or a statement).",
    )
