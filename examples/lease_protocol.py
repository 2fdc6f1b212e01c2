"""The Postgres ecosystem's partition leases, checked in every order: no two owners commit.

A model of ``ecosystems/_postgres_leases.py`` and the fence of
``PostgresStorage.write``. A :class:`Partition` stands for one row of
``pachyderm_partitions`` (owner, epoch, lease) and the database around it:
each activation is one transaction, atomic as they are (the row locks keep
a takeover from interleaving with a commit in flight). Two :class:`Worker`
entities take the partition, renew its lease and commit; every commit
carries the epoch the worker believes it holds, and the partition applies
it only if that is still the partition's epoch (the ``SELECT epoch ... FOR
SHARE`` fence), or refuses it.

Time and pauses are what exploration varies. Taking or renewing sets the
partition's lease timer; the simulation lets a timer fire at any point after
it was set, so the lease runs out at every possible moment (the database's
clock passing ``lease_until``). A worker paused past its lease is a message
of its that stays in flight meanwhile: on the default unordered network any
message can wait while everything else goes on, so a zombie's late commit
meets the new owner's takeover and commits in every order. The partition
logs what it did, in order: takeovers, applied commits (epoch, worker),
hand-overs and refused commits. With ``hand_over=True`` each worker's last
commit also hands the partition over (owner set to NULL in the same fenced
transaction), as a worker holding more than its fair share does, and the
other takes it without waiting for the lease to run out.

Checked in every reachable world: commits applied under one epoch all come
from one worker, and every applied commit carries the epoch it was applied
under (after a takeover nothing from an older epoch gets in). The tests also
check that a zombie's commit is refused in some world and that each worker
commits in some world, and that :class:`UnfencedPartition`, which applies
commits without looking at the epoch, is caught with a numbered trace.

    python -m examples.lease_protocol [COMMITS]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from pachyderm import After, Entity, Outbox, after, cancel
from simulation import Exploration, Simulation, World

LEASE = 30
"""Seconds a lease lasts. Any value: only the order of events matters to the model."""

Event = tuple[str, int, "Worker"]  # ("take" | "commit" | "release" | "refuse", epoch, worker)
Property = Callable[[World], bool]


class Partition(Entity[Any, dict[str, Any]]):
    """One partition's row and the database's transactions on it. Its id is the partition."""

    entity_name = "examples.lease_protocol.Partition"

    def init(self) -> dict[str, Any]:
        return {"owner": None, "epoch": 0, "expired": False, "log": []}

    def admits(self, epoch: int, state: dict[str, Any]) -> bool:
        """The fence: a commit gets in only under the epoch it was made for."""
        held: int = state["epoch"]
        return epoch == held

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        kind, *rest = message
        if kind == "take":  # UPDATE ... WHERE owner IS NULL OR lease_until < now()
            (worker,) = rest
            if state["owner"] is not None and not state["expired"]:
                return [(worker, ("busy",))], state
            epoch = state["epoch"] + 1
            log = [*state["log"], ("take", epoch, worker)]
            state = {"owner": worker, "epoch": epoch, "expired": False, "log": log}
            return [self._lease(epoch), (worker, ("taken", epoch))], state
        if kind == "renew":  # UPDATE ... WHERE owner = me RETURNING epoch
            worker, epoch = rest
            if state["owner"] != worker or state["epoch"] != epoch:
                return [(worker, ("lost", epoch))], state
            return [self._lease(epoch), (worker, ("renewed", epoch))], {**state, "expired": False}
        if kind == "commit":  # one group's transaction, fenced
            worker, epoch, hand_over = rest
            if self.admits(epoch, state):
                log = [*state["log"], ("commit", epoch, worker)]
                if hand_over and state["owner"] == worker:  # SET owner = NULL WHERE owner = me
                    log.append(("release", epoch, worker))
                    state = {**state, "owner": None, "expired": False, "log": log}
                    return [cancel("lease"), (worker, ("applied", epoch))], state
                return [(worker, ("applied", epoch))], {**state, "log": log}
            log = [*state["log"], ("refuse", epoch, worker)]
            return [(worker, ("refused", epoch))], {**state, "log": log}
        if kind == "expire":  # the lease timer: now() passed lease_until
            (epoch,) = rest
            if epoch == state["epoch"]:
                return [], {**state, "expired": True}
            return [], state
        raise ValueError(f"a partition cannot handle {message!r}")

    def _lease(self, epoch: int) -> After[Any]:
        # Named, so a renewal replaces the pending expiry rather than adding one.
        return after(LEASE, self, ("expire", epoch), name="lease")


class UnfencedPartition(Partition):
    """The bug the fence prevents: commits applied without looking at the epoch."""

    entity_name = "examples.lease_protocol.UnfencedPartition"

    def admits(self, epoch: int, state: dict[str, Any]) -> bool:
        return True


class Worker(Entity[Any, dict[str, Any]]):
    """Takes the partition (again while it is busy), then commits and renews its lease.

    Like the real worker it stops for good once it learns it lost the
    partition, from a renewal or a refused commit.
    """

    entity_name = "examples.lease_protocol.Worker"

    def init(self) -> dict[str, Any]:
        return {
            "partition": None,
            "epoch": None,
            "commits": 0,
            "hand_over": False,  # whether its last commit hands the partition over
            "stopped": False,
        }

    def activate(self, message: Any, state: dict[str, Any]) -> tuple[Outbox, dict[str, Any]]:
        kind, *rest = message
        partition = state["partition"]
        if state["stopped"]:
            return [], state
        if kind == "start":  # ("start", the partition, how many commits, hand over after)
            partition, commits, hand_over = rest
            state = {**state, "partition": partition, "commits": commits, "hand_over": hand_over}
            return [(partition, ("take", self))], state
        if kind == "busy":  # the real worker tries again on its next lease round
            return [(partition, ("take", self))], state
        if kind == "taken":
            (epoch,) = rest
            # The writer and the lease thread work independently: both go out at once.
            outbox = [self._commit(epoch, state), (partition, ("renew", self, epoch))]
            return outbox, {**state, "epoch": epoch}
        if kind == "applied":
            (epoch,) = rest
            left = state["commits"] - 1
            if left:
                return [self._commit(epoch, {**state, "commits": left})], {**state, "commits": left}
            held = None if state["hand_over"] else epoch  # handed over: no longer its
            return [], {**state, "commits": 0, "epoch": held}
        if kind == "renewed":
            return [], state
        if kind == "lost" and state["hand_over"] and state["commits"] <= 1:
            return [], state  # being handed over: not lost (see Leases.releasing)
        if kind in ("lost", "refused"):  # PartitionLostError: the worker must stop
            return [], {**state, "epoch": None, "stopped": True}
        raise ValueError(f"a worker cannot handle {message!r}")

    def _commit(self, epoch: int, state: dict[str, Any]) -> tuple[Partition, Any]:
        """A group commit under ``epoch``; the last one hands over, if the worker does."""
        last = state["commits"] == 1
        return state["partition"], ("commit", self, epoch, last and state["hand_over"])


WORKERS = (Worker("a"), Worker("b"))


def start(
    partition: type[Partition] = Partition, commits: int = 1, hand_over: bool = False
) -> list[tuple[Worker, Any]]:
    """Both workers start at once, each meaning to make ``commits`` commits.

    With ``hand_over`` each worker's last commit hands the partition over, as a
    worker holding more than its share does: the other takes it at once.
    """
    return [(worker, ("start", partition(0), commits, hand_over)) for worker in WORKERS]


def log_of(world: World, partition: Partition) -> list[Event]:
    """What ``partition`` did in ``world``, in order."""
    log: list[Event] = world.state_of(partition)["log"]  # tuples stay tuples in a state
    return log


def applied(log: list[Event]) -> list[tuple[int, int, Worker]]:
    """The applied commits as (epoch of the owner they landed under, epoch carried, worker)."""
    under = 0
    commits = []
    for kind, epoch, worker in log:
        if kind == "take":
            under = epoch
        elif kind == "commit":
            commits.append((under, epoch, worker))
    return commits


def properties(partition: Partition) -> list[Property]:
    """The safety properties, read from ``partition``'s log: checked in every world."""

    def one_owner_per_epoch(world: World) -> bool:
        """Commits applied under one epoch all come from one worker."""
        writers: dict[int, set[Worker]] = {}
        for under, _, worker in applied(log_of(world, partition)):
            writers.setdefault(under, set()).add(worker)
        assert all(len(each) == 1 for each in writers.values()), f"two owners commit: {writers}"
        return True

    def no_stale_commit(world: World) -> bool:
        """Every applied commit carries the epoch it landed under: none from before a takeover."""
        commits = applied(log_of(world, partition))
        stale = [(under, carried, w) for under, carried, w in commits if carried != under]
        assert not stale, f"commits of an older epoch applied after a takeover: {stale}"
        return True

    return [one_owner_per_epoch, no_stale_commit]


def check(
    partition: type[Partition] = Partition,
    commits: int = 1,
    invariants: Sequence[Property] | None = None,
    *,
    hand_over: bool = False,
    **options: Any,
) -> Exploration:
    """Explore every order of two workers on one partition (default: checking both properties).

    Breadth-first unless told otherwise: it takes each transition of each
    world once, fewer here than depth-first, whose sleep sets make it enter
    again worlds reached with other sleep sets (the lease timer commutes
    with nothing and a busy worker's retries loop), and it gives shortest
    counterexamples.
    """
    if invariants is None:
        invariants = properties(partition(0))
    options.setdefault("search", "breadth")
    envelopes = start(partition, commits, hand_over)
    return Simulation.explore(envelopes, invariants=invariants, **options)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    result = check(commits=count)
    print(f"partition leases, 2 workers, {count} commit(s) each, fenced: {result!r}")
    broken = check(UnfencedPartition, commits=count)
    print(f"without the fence: {broken!r}")
    print(broken.violations[0])
