"""Partition leases: which worker runs which entities, renewed on the database's clock.

A worker takes free or expired partitions up to its fair share (the
partition count over the live workers), each with a new *epoch*; every
commit checks the epochs it holds (see ``PostgresStorage.write``). Taking
skips partitions locked by a commit in flight (``SKIP LOCKED``), so an owner
change never interleaves with a commit. Renewal happens every third of the
lease; a renewal that finds a partition gone (this worker was paused past
its lease and another took over) reports the loss: the worker must stop.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from pachyderm._log import log
from pachyderm.errors import PartitionLostError

__all__ = ["WRITER_NAME", "Leases", "writer_name"]


WRITER_NAME = "pachyderm-writer-"
"""The application_name of a process's session that writes groups, before its incarnation
(and its schema: two stores in one database, by search_path, number their processes
apart). See :func:`writer_name`."""


def writer_name(incarnation: str) -> str:
    """SQL for the application_name of the writing session of the process whose
    incarnation the SQL expression ``incarnation`` gives (as text); one ``%s`` parameter
    for :data:`WRITER_NAME`. (At most 63 characters, as PostgreSQL keeps them.)"""
    return f"left(%s || {incarnation} || '-' || current_schema(), 63)"


class Leases:
    """One worker's leases, kept by a thread with a connection of its own."""

    def __init__(
        self,
        dsn: str,
        identity: str,
        partitions: int,
        lease: float,
        on_gained: Callable[[list[int]], None],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self.dsn = dsn
        self.identity = identity
        self.partitions = partitions
        self.lease = lease
        self.owned: dict[int, int] = {}  # partition -> epoch (replaced whole, never mutated)
        self.gained: list[int] = []  # taken since the runtime last looked
        self.releases: list[int] = []  # to hand over, not yet taken up by the runtime
        self.releasing: set[int] = set()  # being handed over: no longer renewed
        self._crowded = 0  # rounds in a row this worker held more than its share
        self._lock = threading.Lock()  # a round and a hand-over's end never interleave
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._connection: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=True)
        self._thread = threading.Thread(target=self._run, name=f"pachyderm-leases-{identity}")
        self._thread.daemon = True

    def start(self) -> None:
        """Take a first share (before the runtime recovers), then keep leases in a thread."""
        self._round()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing, and hand the partitions back so others take them at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            self._connection.execute(
                "UPDATE pachyderm_partitions SET owner = NULL, lease_until = NULL WHERE owner = %s",
                (self.identity,),
            )
            self._connection.execute(
                "DELETE FROM pachyderm_workers WHERE id = %s", (self.identity,)
            )
        except psycopg.Error:
            pass  # the leases run out on their own
        finally:
            self._connection.close()

    def take_gained(self) -> list[int]:
        gained, self.gained = self.gained, []
        return gained

    def take_releases(self) -> list[int]:
        with self._lock:
            releases, self.releases = self.releases, []
            return releases

    def drop(self, released: dict[int, int]) -> None:
        """Partitions whose release committed, with the epochs released: no longer this
        worker's. One a lease round took again meanwhile (a new epoch) is kept."""
        with self._lock:
            self.owned = {p: e for p, e in self.owned.items() if released.get(p) != e}
            self.releasing -= set(released)

    def _run(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self._round()
            except psycopg.Error as error:
                log("postgres.lease_round_failed", level="warning", error=str(error))
                try:
                    self._connection.close()
                    self._connection = psycopg.connect(self.dsn, autocommit=True)
                except psycopg.Error:
                    pass
            except PartitionLostError as error:
                self._on_lost(error)
                return

    def _round(self) -> None:
        with self._lock:
            self._round_locked()

    def _round_locked(self) -> None:
        """Renew what is held, say this worker is alive, and take up to a fair share.

        A worker holding more than its share for two rounds in a row hands the
        extra partitions over (the runtime drains them first, see ``take_releases``).
        """
        connection = self._connection
        seconds = f"{self.lease} seconds"
        if self.owned:
            renewed = dict(
                connection.execute(
                    "UPDATE pachyderm_partitions SET lease_until = now() + %s::interval "
                    "WHERE owner = %s RETURNING p, epoch",
                    (seconds, self.identity),
                ).fetchall()
            )
            lost = sorted(
                p
                for p, epoch in self.owned.items()
                if renewed.get(p) != epoch and p not in self.releasing
            )
            if lost:
                raise PartitionLostError(
                    f"worker {self.identity} lost partitions {lost} to another worker "
                    f"(it was paused or cut off past its {self.lease} s lease): it must stop"
                )
            # Taken by this worker, whose answer was lost (the connection cut after the
            # take committed): renewed, no other worker may take them, so run them here.
            found = {p: epoch for p, epoch in renewed.items() if p not in self.owned}
            if found:
                self._gain(found)
        connection.execute(
            "INSERT INTO pachyderm_workers (id, seen, lease) VALUES (%s, now(), %s) "
            "ON CONFLICT (id) DO UPDATE SET seen = now(), lease = excluded.lease",
            (self.identity, self.lease),
        )
        # Each worker by its own lease (one without, from before version 5: by this one's).
        connection.execute(
            "DELETE FROM pachyderm_workers "
            "WHERE seen < now() - make_interval(secs => 3 * coalesce(lease, %s))",
            (self.lease,),
        )
        connection.execute("DELETE FROM pachyderm_replies WHERE made < now() - interval '1 hour'")
        # Marks of groups written long ago (a group in doubt has just marked its own).
        connection.execute("DELETE FROM pachyderm_writes WHERE at < now() - interval '1 day'")
        # Follows of processes gone for long (they touch theirs every half minute).
        connection.execute("DELETE FROM pachyderm_follows WHERE seen < now() - interval '5 min'")
        connection.execute(
            "DELETE FROM pachyderm_updates AS u WHERE NOT EXISTS "
            "(SELECT 1 FROM pachyderm_follows AS f WHERE f.follower = u.follower)"
        )
        # Alive: seen within its lease (a dead worker's partitions expire as it drops out).
        (live,) = connection.execute(
            "SELECT count(*) FROM pachyderm_workers "
            "WHERE seen >= now() - make_interval(secs => coalesce(lease, %s))",
            (self.lease,),
        ).fetchone()  # type: ignore[misc]
        share = math.ceil(self.partitions / max(1, live))
        wanted = share - len(self.owned)
        if wanted < 0 and not self.releasing:
            self._crowded += 1
            if self._crowded >= 2:
                self._crowded = 0
                extra = sorted(self.owned)[wanted:]
                self.releasing = set(extra)
                self.releases = extra
                log("postgres.handing_over", worker=self.identity, partitions=extra)
                self._on_gained([])  # news: the runtime drains and releases them
            return
        self._crowded = 0
        if wanted <= 0:
            return
        # An owner paused in the middle of a group (its pipeline sent up to a statement,
        # not to its COMMIT) holds its partitions' rows locked (the fence), with no
        # timeout: the server arms idle_in_transaction_session_timeout only once a
        # pipeline is synced. One silent for a lease, with a lease run out, may not commit
        # anyway: end its writing session, so that its partitions can be taken (they are
        # skipped while locked). A live owner (handing partitions over, say) is left be.
        try:
            connection.execute(
                "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity AS a "
                "WHERE a.datname = current_database() AND a.state <> 'idle' "
                "AND a.application_name IN (SELECT "
                + writer_name("substring(t.owner FROM '[^:]*$')")
                + " "
                "FROM pachyderm_partitions AS t WHERE t.owner <> %s AND t.lease_until < now() "
                "AND NOT EXISTS (SELECT 1 FROM pachyderm_workers AS w WHERE w.id = t.owner "
                "AND w.seen >= now() - make_interval(secs => coalesce(w.lease, %s))))",
                (WRITER_NAME, self.identity, self.lease),
            )
        except psycopg.Error as error:  # not allowed to (another role): its lock must end
            log("postgres.cannot_end_session", level="warning", error=str(error))
        taken = connection.execute(
            "UPDATE pachyderm_partitions AS t "
            "SET owner = %s, epoch = t.epoch + 1, lease_until = now() + %s::interval "
            "FROM (SELECT p FROM pachyderm_partitions "
            "      WHERE owner IS NULL OR lease_until < now() "
            "      ORDER BY p LIMIT %s FOR UPDATE SKIP LOCKED) AS free "
            "WHERE t.p = free.p RETURNING t.p, t.epoch",
            (self.identity, seconds, wanted),
        ).fetchall()
        if taken:
            self._gain(dict(taken))

    def _gain(self, taken: dict[int, int]) -> None:
        """Partitions this worker now holds, with their epochs: the runtime takes them up."""
        owned = dict(self.owned)
        owned.update(taken)
        self.owned = owned
        self.gained = self.gained + sorted(taken)
        log("postgres.partitions_taken", worker=self.identity, partitions=sorted(taken))
        self._on_gained(sorted(taken))
