"""The Postgres lease/epoch protocol, modelled as entities: no world where two owners commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples.lease_protocol import (
    WORKERS,
    Partition,
    UnfencedPartition,
    check,
    log_of,
    properties,
    start,
)
from simulation import Exploration, Simulation, World

ROOT = Path(__file__).resolve().parent.parent
A, B = WORKERS
PARTITION = Partition(0)

# What is counted: distinct worlds, each the states of the partition (owner,
# epoch, whether its lease ran out, its log) and of both workers, the messages
# in flight, the pending lease timer and the virtual time. Final worlds have
# nothing in flight and the last lease timer fired: each worker has taken the
# partition once (one after the other's lease ran out) and made its commit, or
# was refused as a zombie. Computed once with the model as written.
WORLDS = 2_716
FINAL_WORLDS = 10


@pytest.fixture(scope="module")
def fenced() -> Exploration:
    """The fenced model's full exploration, shared: it is the slow part."""
    return check()


def logs_of(world: World) -> tuple[tuple[str, int, str], ...]:
    """The partition's log in ``world``, with workers by name."""
    return tuple((kind, epoch, str(worker.id)) for kind, epoch, worker in log_of(world, PARTITION))


def logs(result: Exploration) -> set[tuple[tuple[str, int, str], ...]]:
    """Each final world's partition log."""
    return {logs_of(world) for world in result.final_worlds}


def test_no_world_where_two_owners_commit(fenced: Exploration) -> None:
    """In every reachable world each epoch's commits come from one worker, and nothing of an
    older epoch is applied after a takeover; yet each worker commits, and a zombie is refused."""
    result = fenced
    assert result.complete
    assert result.ok, result
    assert (result.unique_states, len(result.final_worlds)) == (WORLDS, FINAL_WORLDS)
    # Ten final worlds, six logs: when both commit, the first owner may never learn it
    # lost the partition, or learn it from its renewal before or after its "applied".
    first_a = {
        (("take", 1, "a"), ("commit", 1, "a"), ("take", 2, "b"), ("commit", 2, "b")),
        (("take", 1, "a"), ("take", 2, "b"), ("refuse", 1, "a"), ("commit", 2, "b")),
        (("take", 1, "a"), ("take", 2, "b"), ("commit", 2, "b"), ("refuse", 1, "a")),
    }
    swapped = {
        tuple((kind, epoch, "b" if name == "a" else "a") for kind, epoch, name in log)
        for log in first_a
    }
    assert logs(result) == first_a | swapped
    for worker in ("a", "b"):  # not vacuous: each worker commits, and each is refused
        assert any(("commit", 1, worker) in log for log in logs(result))
        assert any(("refuse", 1, worker) in log for log in logs(result))


def test_the_zombie_commits_after_its_lease_ran_out_and_is_refused(fenced: Exploration) -> None:
    """The refused commit was sent under epoch 1 and delivered after the lease timer fired
    and the other worker took the partition: a worker paused past its lease."""
    result = fenced
    zombie = (("take", 1, "a"), ("take", 2, "b"), ("commit", 2, "b"), ("refuse", 1, "a"))
    [world] = [world for world in result.final_worlds if logs_of(world) == zombie]
    steps = [str(action) for action in result.traces[world]]
    expired = steps.index("fire timer 'lease' of Partition(0) at 30 -> Partition(0): ('expire', 1)")
    taken = steps.index("deliver Worker('b') -> Partition(0): ('take', Worker('b'))")
    refused = steps.index("deliver Worker('a') -> Partition(0): ('commit', Worker('a'), 1, False)")
    assert steps.index("deliver Partition(0) -> Worker('a'): ('taken', 1)") < expired
    assert expired < taken < refused
    assert world.state_of(A)["stopped"]  # told its commit was refused, it stops for good
    assert world.state_of(PARTITION)["owner"] == B


def test_depth_first_with_sleep_sets_reaches_the_same_worlds(fenced: Exploration) -> None:
    """Sleep sets stay sound with the lease timer and a busy worker's retry loop."""
    breadth, depth = fenced, check(search="depth")
    assert depth.complete
    assert depth.ok
    assert depth.unique_states == breadth.unique_states == WORLDS
    assert set(depth.final_worlds) == set(breadth.final_worlds)


def test_swapping_the_workers_halves_the_worlds() -> None:
    """Up to renaming the workers: (2,716 + 2) / 2 classes, the 2 being the worlds a swap
    leaves alone (both start messages in flight, then both takes)."""
    [(first, start_a), (second, start_b)] = start()
    assert (first, second) == WORKERS
    assert start_a == start_b
    result = check(symmetric=[WORKERS])
    assert result.complete
    assert result.ok
    assert (result.unique_states, len(result.final_worlds)) == ((WORLDS + 2) // 2, 5)


def test_a_partition_handed_over_is_taken_at_once_and_still_one_owner_commits() -> None:
    """With hand-over (each worker's last commit sets the owner to NULL, as a worker holding
    more than its share does) the properties hold in all 2,500 worlds; the other worker takes
    the partition without any lease running out, and a zombie is still refused."""
    result = check(hand_over=True)
    assert result.complete
    assert result.ok, result
    # Counted as above. Six final worlds, three up to swapping the workers: a hands over
    # to b, or a's lease runs out first and its commit is refused (before or after b's).
    assert (result.unique_states, len(result.final_worlds)) == (2_500, 6)
    handed = (
        ("take", 1, "a"),
        ("commit", 1, "a"),
        ("release", 1, "a"),
        ("take", 2, "b"),
        ("commit", 2, "b"),
        ("release", 2, "b"),
    )
    assert handed in logs(result)
    [world] = [world for world in result.final_worlds if logs_of(world) == handed]
    assert not [action for action in result.traces[world] if action.kind == "fire"]
    assert any(("refuse", 1, "a") in log for log in logs(result))


def unfenced_violation(invariant_name: str) -> tuple[list[str], World, str]:
    """The shortest trace to a world where the unfenced partition breaks ``invariant_name``."""
    [invariant] = [p for p in properties(UnfencedPartition(0)) if p.__name__ == invariant_name]
    result = check(UnfencedPartition, invariants=[invariant])
    assert not result.ok
    violation = result.violations[0]
    assert violation.property_name == invariant_name
    replayed = Simulation.replay(start(UnfencedPartition), violation.trace)
    assert replayed == violation.world
    with pytest.raises(AssertionError):
        invariant(replayed)
    return str(violation).splitlines(), violation.world, violation.detail


ZOMBIE_ARRIVES = [
    "1. deliver outside -> Worker('a'): ('start', UnfencedPartition(0), 1, False)",
    "2. deliver outside -> Worker('b'): ('start', UnfencedPartition(0), 1, False)",
    "3. deliver Worker('a') -> UnfencedPartition(0): ('take', Worker('a'))",
    "4. deliver UnfencedPartition(0) -> Worker('a'): ('taken', 1)",
    "5. fire timer 'lease' of UnfencedPartition(0) at 30 -> UnfencedPartition(0): ('expire', 1)",
    "6. deliver Worker('b') -> UnfencedPartition(0): ('take', Worker('b'))",
]


def test_without_the_fence_a_zombie_commit_gets_in_after_a_takeover() -> None:
    """The unfenced partition applies the zombie's epoch-1 commit under epoch 2: found in
    7 steps, shown as a numbered trace that replays."""
    lines, world, detail = unfenced_violation("no_stale_commit")
    assert lines[0].startswith("no_stale_commit fails after 7 steps")
    assert lines[1:8] == [
        *ZOMBIE_ARRIVES,
        "7. deliver Worker('a') -> UnfencedPartition(0): ('commit', Worker('a'), 1, False)",
    ]
    assert detail == "commits of an older epoch applied after a takeover: [(2, 1, Worker('a'))]"
    assert world.state_of(UnfencedPartition(0))["owner"] == B


def test_without_the_fence_two_owners_commit_under_one_epoch() -> None:
    """With the new owner's commit too, two workers' commits land under epoch 2: 9 steps."""
    lines, world, detail = unfenced_violation("one_owner_per_epoch")
    assert lines[0].startswith("one_owner_per_epoch fails after 9 steps")
    assert lines[1:10] == [
        *ZOMBIE_ARRIVES,
        "7. deliver UnfencedPartition(0) -> Worker('b'): ('taken', 2)",
        "8. deliver Worker('a') -> UnfencedPartition(0): ('commit', Worker('a'), 1, False)",
        "9. deliver Worker('b') -> UnfencedPartition(0): ('commit', Worker('b'), 2, False)",
    ]
    assert detail.startswith("two owners commit: {2: ")
    assert [event[0] for event in log_of(world, UnfencedPartition(0))] == [
        "take",
        "take",
        "commit",
        "commit",
    ]


def test_lease_protocol_runs_as_a_script() -> None:
    """python -m examples.lease_protocol prints the fenced result and the unfenced trace."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.lease_protocol"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"complete: {WORLDS:,} worlds, {FINAL_WORLDS} final, 0 violations" in result.stdout
    assert "7. deliver Worker('a') -> UnfencedPartition(0)" in result.stdout
