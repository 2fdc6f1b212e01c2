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
from tests.crash_worker import ENTITIES, SENDER, TASKS, Forwarder, Ledger, Receiver, sender_of

RUNS = 30
"""Workers started and SIGKILLed one after the other, all on one LevelDB directory."""
EARLY = range(2, RUNS, 6)
"""The 5 runs killed 0-30 ms after they start opening the store: in LevelDB's recovery, the
runtime's, or the first sends. The other 25 die 0.05-0.6 s after a first acknowledged send."""
WORKER = Path(__file__).with_name("crash_worker.py")

Send = tuple[int, int]
"""A logged send: ``(entity, message)``."""
Logs = dict[int, tuple[list[Send], list[Send]]]
"""For each sender: its attempted sends and its acknowledged ones, in order."""


def read_sends(path: Path) -> list[Send]:
    """The sends logged in ``path`` (none if the worker died before creating it)."""
    if not path.exists():
        return []
    sends = []
    for line in path.read_text().splitlines():
        entity, message = line.split(" ")
        sends.append((int(entity), int(message)))
    return sends


def run_and_kill(directory: Path, logs: Path, run: int, durability: str, rng: random.Random) -> str:
    """Start worker number ``run``, SIGKILL it at a random moment, and return what it printed."""
    early = run in EARLY
    awaited = ["opening"] if early else ["opening", "opened", "sending"]
    command = [sys.executable, str(WORKER), str(directory), str(logs), str(run), durability]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as worker:
        assert worker.stdout is not None
        try:
            said = [worker.stdout.readline() for _ in awaited]
            if [line.split(" ")[0].strip() for line in said] == awaited:
                time.sleep(rng.uniform(0, 0.03) if early else rng.uniform(0.05, 0.6))
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            rest, errors = worker.communicate(timeout=60)
    assert [line.split(" ")[0].strip() for line in said] == awaited, errors
    assert worker.returncode == -signal.SIGKILL, errors
    if not early:
        # The kill landed mid-workload: some sends had been attempted, not acknowledged.
        attempted = sum(len(read_sends(path)) for path in logs.glob(f"attempts-{run}-*"))
        acknowledged = sum(len(read_sends(path)) for path in logs.glob(f"acks-{run}-*"))
        assert 0 < acknowledged < attempted
    return "".join(said) + rest


def read_logs(logs: Path, runs: int) -> Logs:
    """What every task of every run logged."""
    sends = {}
    for run in range(runs):
        for task in range(TASKS):
            attempts = read_sends(logs / f"attempts-{run}-{task}")
            acks = read_sends(logs / f"acks-{run}-{task}")
            # One message at a time: the acks are the attempts, but perhaps the last.
            assert acks == attempts[: len(acks)]
            assert len(attempts) - len(acks) <= 1
            sends[sender_of(run, task)] = attempts, acks
    return sends


def check_ledger(entity: int, ledger: Ledger, sends: Logs) -> None:
    """Each acknowledged send to ``entity`` applied once, in order; perhaps a last attempt too."""
    for sender, (attempts, acks) in sends.items():
        mine = [message % SENDER for target, message in acks if target == entity]
        allowed = [[len(mine), mine[-1] if mine else 0]]
        if len(attempts) > len(acks) and attempts[-1][0] == entity:
            allowed.append([len(mine) + 1, attempts[-1][1] % SENDER])
        assert ledger.get(sender, [0, 0]) in allowed, (entity, sender)
    assert set(ledger) <= set(sends), f"entity {entity} applied messages nobody sent"


@pytest.mark.slow
async def test_kill_9_loses_nothing_and_applies_nothing_twice(tmp_path: Path) -> None:
    """30 SIGKILLs of a busy worker: every A within [acked, attempted] sends, every B equal to A."""
    directory, logs = tmp_path / "store", tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(20261122)
    recovered = 0
    for run in range(RUNS):
        output = run_and_kill(directory, logs, run, ("fsync", "flush")[run % 2], rng)
        for line in output.splitlines():
            if line.startswith("opened "):
                recovered += int(line.split(" ")[1])

    sends = read_logs(logs, RUNS)
    attempted = Counter(entity for tried, _ in sends.values() for entity, _ in tried)
    acknowledged = Counter(entity for _, acked in sends.values() for entity, _ in acked)
    async with LocalDisk.open(str(directory)) as eco:
        await eco.settle()
        for entity in range(ENTITIES):
            forwarded = await eco.state_of(Forwarder(entity))
            received = await eco.state_of(Receiver(entity))
            applied = sum(count for count, _ in forwarded.values())
            assert acknowledged[entity] <= applied <= attempted[entity], entity
            assert received == forwarded, entity
            check_ledger(entity, forwarded, sends)
        assert await eco.dead_letters() == []

    acked, tried = acknowledged.total(), attempted.total()
    print(f"kills={RUNS} acknowledged={acked} attempted={tried} recovered={recovered}")
    assert acked > 1000, "the workload hardly ran"
    assert recovered > 0, "no restart found accepted, unprocessed messages: recovery went untested"


TIMER_WORKER = Path(__file__).with_name("timer_worker.py")
TIMER_KILLS = 10


def start_timer_worker(directory: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(TIMER_WORKER), str(directory), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
async def test_kill_9_between_setting_and_firing_fires_each_timer_once(tmp_path: Path) -> None:
    """Timers set, SIGKILL; then SIGKILL 10 times while they fire: each fires exactly once."""
    from tests.timer_worker import ENTITIES, FIRED_AT, TIMERS, Clockwork

    directory = tmp_path / "store"
    rng = random.Random(20261129)
    with start_timer_worker(directory, "set") as worker:
        assert worker.stdout is not None
        said = worker.stdout.readline().strip()
        os.kill(worker.pid, signal.SIGKILL)
        _, errors = worker.communicate(timeout=60)
    assert said == "set", errors
    interrupted = 0
    for _ in range(TIMER_KILLS):
        with start_timer_worker(directory, "fire") as worker:
            assert worker.stdout is not None
            said = worker.stdout.readline().strip()
            time.sleep(rng.uniform(0, 0.1))
            os.kill(worker.pid, signal.SIGKILL)
            rest, errors = worker.communicate(timeout=60)
        assert said == "opened", errors
        interrupted += "settled" not in rest
    assert interrupted >= TIMER_KILLS // 2, "the kills hardly ever landed while timers fired"

    from pachyderm import ManualClock

    async with LocalDisk.open(str(directory), clock=ManualClock(FIRED_AT)) as eco:
        await eco.settle()
        rang = []
        for entity in range(ENTITIES):
            numbers = await eco.state_of(Clockwork(entity))
            assert all(number % ENTITIES == entity for number in numbers)
            rang.extend(numbers)
        left_to_fire = eco.runtime.statistics["timers_fired"]
        assert len(eco.runtime.timers) == 0
    assert sorted(rang) == list(range(TIMERS))  # each exactly once
    print(
        f"timer kills={TIMER_KILLS} interrupted while firing={interrupted} timers={TIMERS} "
        f"fired by the last opening={left_to_fire}"
    )
