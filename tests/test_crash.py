"""Crash safety with real processes and real kill -9 on a real LevelDB directory."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ecosystems import LocalDisk
from tests.crash_worker import ENTITIES, Forwarder, Receiver

KILLS = 25
WORKER = Path(__file__).resolve().parent / "crash_worker.py"


def tally(logs: Path, prefix: str) -> Counter[int]:
    """How many lines name each entity, over every file ``prefix-*`` in ``logs``."""
    counts: Counter[int] = Counter()
    for path in logs.glob(f"{prefix}-*"):
        for line in path.read_text().splitlines():
            counts[int(line)] += 1  # a half-written last line cannot happen: lines end in \n
    return counts


def run_and_kill(directory: Path, logs: Path, seed: int, rng: random.Random) -> None:
    """Start a worker, let it send for a random while, then SIGKILL it."""
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(directory), str(logs), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(worker.pid, signal.SIGKILL)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == -signal.SIGKILL, stderr
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


@pytest.mark.slow
async def test_kill_9_loses_nothing_and_applies_nothing_twice(tmp_path: Path) -> None:
    """25 SIGKILLs mid-workload: every count within [acked, attempted], every B equal to its A."""
    directory, logs = tmp_path / "store", tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(20261122)
    for seed in range(KILLS):
        run_and_kill(directory, logs, seed, rng)

    attempted, acknowledged = tally(logs, "attempts"), tally(logs, "acks")
    async with LocalDisk.open(str(directory)) as eco:
        await eco.settle()
        for entity in range(ENTITIES):
            forwarded = await eco.state_of(Forwarder(entity))
            received = await eco.state_of(Receiver(entity))
            assert acknowledged[entity] <= forwarded <= attempted[entity], entity
            assert received == forwarded, entity
        assert await eco.dead_letters() == []
    acked, tried = sum(acknowledged.values()), sum(attempted.values())
    print(f"kills={KILLS} acknowledged={acked} attempted={tried}")  # shown with pytest -s
    # The workload really ran, and really was cut short mid-send.
    assert acked > 500
    assert tried > acked
