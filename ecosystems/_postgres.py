"""``Postgres``: ecosystems in a PostgreSQL database, shared by any number of processes.

Every process that opens it is a worker by default: it owns a share of the
entity partitions and runs their activations; ``worker=False`` makes a
client that sends, waits and reads. psycopg is an optional dependency
(``pip install 'pachyderm-entities[postgres]'``): without it ``import
ecosystems`` still works, and opening ``Postgres`` says what to install.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from pachyderm._arguments import storable_text
from pachyderm._clock import Clock
from pachyderm._ecosystem import DEFAULT_ECOSYSTEM, Ecosystem
from pachyderm._kind import EcosystemKind
from pachyderm._runtime import DEFAULT_MAX_RESIDENT
from pachyderm._shell import ShellEcosystem
from pachyderm._step import DEFAULT_MAX_MESSAGE_BYTES
from pachyderm._storage import Storage
from pachyderm.errors import InvalidArgumentError, PachydermError, describe

__all__ = ["DEFAULT_LEASE", "Postgres", "PostgresKind", "default_dsn"]

DEFAULT_LEASE = 10.0
"""Seconds a worker's partition leases last without renewal (renewed every third)."""
DEFAULT_POLL = 0.5
"""Seconds between looks at the tables when no notification arrives."""
DEFAULT_LINGER = 0.01
"""Seconds a write waits, at most, for the replies still due to callers of this process
for its last write: each worker answers its share in turn, and the callers each answer
wakes then share one write, rather than each wave its own, waking every worker again
(3 workers served a client's 200 senders at 0.61-0.76x of 1 worker's rate without the
wait, 0.82-1.14x with it). 0 never waits."""
MAX_STATE_BYTES = 256 * 2**20
"""An entity's stored state, or a message, at most: a larger state fails its activation
(a dead letter). PostgreSQL holds at most 1 GB in a value, and in a statement: a group's
rows are written a statement per this many bytes."""


class PsycopgMissingError(PachydermError, ImportError):
    """The Postgres ecosystem needs psycopg, which is not installed."""


def default_dsn() -> str:
    """``$PACHYDERM_DSN``; the shell face needs it when no DSN is given."""
    dsn = os.environ.get("PACHYDERM_DSN")
    if not dsn:
        raise InvalidArgumentError(
            "Postgres needs a database: pass a DSN (Postgres.connect('postgresql:///app')) "
            "or set $PACHYDERM_DSN"
        )
    return _check_dsn(dsn, "$PACHYDERM_DSN")


def _check_dsn(dsn: str, what: str = "a Postgres DSN") -> str:
    """``dsn`` if libpq can read it as given. It reads a C string: a NUL ends it there, so
    'dbname=app\\x00_test' connected to the database app; and psycopg's encoding of a lone
    surrogate raised UnicodeEncodeError, not an error of ours."""
    if "\x00" in dsn or not storable_text(dsn):
        raise InvalidArgumentError(
            f"{what} must be text libpq can read whole (UTF-8, no NUL, no lone surrogate), "
            f"got {describe(dsn)}; e.g. 'postgresql:///app'"
        )
    return dsn


def _open(
    location: str | None,
    *,
    worker: bool,
    lease: float,
    poll: float,
    partitions: int,
    linger: float,
) -> Storage:
    try:
        from ecosystems._postgres_storage import PostgresStorage
    except ImportError as error:
        raise PsycopgMissingError(
            f"the Postgres ecosystem needs psycopg ({error}): "
            f"pip install 'pachyderm-entities[postgres]'"
        ) from error
    return PostgresStorage(
        location if location is not None else default_dsn(),
        worker=worker,
        lease=lease,
        poll=poll,
        partitions=partitions,
        linger=linger,
    )


def _check(
    dsn: object,
    worker: object,
    lease: object,
    poll: object,
    partitions: object,
    linger: object,
    max_message_bytes: object,
) -> None:
    if dsn is not None and not isinstance(dsn, str):
        raise InvalidArgumentError(
            f"a Postgres DSN must be a str like 'postgresql:///app', got {describe(dsn)}"
        )
    if dsn is not None:
        _check_dsn(dsn)
    if not isinstance(worker, bool):
        raise InvalidArgumentError(f"worker must be True or False, got {describe(worker)}")
    for name, value, low, high in (
        ("lease", lease, 0.1, 3600.0),
        ("poll", poll, 0.001, 60.0),
        ("linger", linger, 0.0, 10.0),
    ):
        if type(value) not in (int, float) or not low <= value <= high:  # type: ignore[operator]
            raise InvalidArgumentError(
                f"{name} must be a number of seconds from {low} to {high}, got {describe(value)}"
            )
    if type(partitions) is not int or not 1 <= partitions <= 4096:
        raise InvalidArgumentError(
            f"partitions must be an int from 1 to 4096, got {describe(partitions)}"
        )
    if type(max_message_bytes) is int and max_message_bytes > MAX_STATE_BYTES:
        raise InvalidArgumentError(
            f"max_message_bytes must be at most {MAX_STATE_BYTES:,} on Postgres (a row of "
            f"PostgreSQL holds 1 GB at most, and a statement too), got "
            f"{describe(max_message_bytes)}; send a reference to large data instead"
        )


class PostgresKind(EcosystemKind):
    """Ecosystems in PostgreSQL for many processes; the shell face's DSN is ``$PACHYDERM_DSN``."""

    _paths = False

    @asynccontextmanager
    async def open(
        self,
        location: str | None = None,
        *,
        worker: bool = True,
        lease: float = DEFAULT_LEASE,
        poll: float = DEFAULT_POLL,
        partitions: int = 64,
        linger: float = DEFAULT_LINGER,
        ecosystem: str = DEFAULT_ECOSYSTEM,
        durability: str = "fsync",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        clock: Clock | None = None,
    ) -> AsyncIterator[Ecosystem]:
        """Open the database at DSN ``location`` in this ``trio.run``, as a worker or a client.

        Args:
            location: the libpq DSN (``"postgresql:///app"``); ``$PACHYDERM_DSN`` if None.
            worker: own a share of the partitions and run their activations;
                False makes a client that sends, waits and reads.
            lease: seconds a partition's lease lasts (a killed worker's
                partitions move to others within about this long).
            poll: seconds between looks at the tables between notifications.
            partitions: the partition count, for a database opened for the first time.
            linger: seconds a write waits, at most, for the replies still due to
                this process's callers for its last write, so that the callers
                they wake share one write (``DEFAULT_LINGER``; 0 never waits).

        The other options are those of ``LocalDisk.open``.
        """
        _check(location, worker, lease, poll, partitions, linger, max_message_bytes)
        opener = partial(
            _open, worker=worker, lease=lease, poll=poll, partitions=partitions, linger=linger
        )
        async with self._open(
            opener,
            location,
            ecosystem=ecosystem,
            durability=durability,
            max_message_bytes=max_message_bytes,
            max_resident=max_resident,
            clock=clock,
        ) as eco:
            yield eco

    def connect(
        self,
        location: str | None = None,
        *,
        worker: bool = True,
        lease: float = DEFAULT_LEASE,
        poll: float = DEFAULT_POLL,
        partitions: int = 64,
        linger: float = DEFAULT_LINGER,
        durability: str = "fsync",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_resident: int = DEFAULT_MAX_RESIDENT,
        clock: Clock | None = None,
    ) -> ShellEcosystem:
        """The shell face of the database at DSN ``location``, opened on first use.

        Options are those of :meth:`open`; they apply when this call opens it.
        """
        _check(location, worker, lease, poll, partitions, linger, max_message_bytes)
        where = self._default_location() if location is None else location
        open_here = self._shell.get(where)
        if open_here is not None and not open_here.runtime.closed:
            running = getattr(open_here.runtime.storage, "worker", worker)
            if running != worker:  # (other options are the first call's, as documented)
                from ecosystems._postgres_storage import shown_dsn  # (psycopg is here: open)

                doing = "runs its share of the entities" if running else "runs no entities"
                raise InvalidArgumentError(
                    f"Postgres at {shown_dsn(str(where))!r} is already open here with "
                    f"worker={running} "
                    f"(this process {doing}), so worker={worker} would be ignored: "
                    f"Postgres.close() it first, or pass the same worker= on every connect"
                )
        opener = partial(
            _open, worker=worker, lease=lease, poll=poll, partitions=partitions, linger=linger
        )
        return self._connect(
            opener,
            location,
            durability=durability,
            max_message_bytes=max_message_bytes,
            max_resident=max_resident,
            clock=clock,
        )


Postgres = PostgresKind(
    "Postgres",
    partial(
        _open,
        worker=True,
        lease=DEFAULT_LEASE,
        poll=DEFAULT_POLL,
        partitions=64,
        linger=DEFAULT_LINGER,
    ),
    default_dsn,
)
