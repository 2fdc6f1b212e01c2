"""LocalDisk.repair: damage is reported, then repaired; a repair killed midway is redone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import plyvel
import pytest

from ecosystems import LocalDisk
from pachyderm import InvalidArgumentError, StoreCorruptedError
from tests.entities import Recorder

ROOT = Path(__file__).resolve().parent.parent
ENTITIES = 3000


def latest(entity: int, rounds: int) -> list[str]:
    """What ``build`` leaves in ``Recorder(entity)``."""
    return [f"{entity}:{round_}" + "x" * 200 for round_ in range(rounds)]


async def build(directory: Path, rounds: int) -> None:
    """A real store: ENTITIES recorders that each received ``rounds`` messages."""
    async with LocalDisk.open(str(directory), durability="flush") as eco:
        for round_ in range(rounds):
            for entity in range(ENTITIES):
                await eco.send(Recorder(entity), f"{entity}:{round_}" + "x" * 200)
            await eco.settle()


async def read_all(directory: Path) -> list[list[str]]:
    """Every recorder's state, by entity number."""
    async with LocalDisk.open(str(directory)) as eco:
        return [await eco.state_of(Recorder(entity)) for entity in range(ENTITIES)]


def compact(directory: Path) -> Path:
    """Move everything into tables (test preparation); returns the largest table."""
    db = plyvel.DB(str(directory))
    db.compact_range()
    db.close()
    return max(directory.glob("*.ldb"), key=lambda path: path.stat().st_size)


async def test_a_damaged_block_is_reported_then_repaired(tmp_path: Path) -> None:
    """Flipped bytes inside a table's blocks (the first one holds the store's meta records):
    reading gives StoreCorruptedError naming the directory and repair, never a raw plyvel
    error nor a silent init(); after repair the store opens, entities outside the damaged
    blocks are intact, and those in them are back at init() (what the error says repair loses)."""
    await build(tmp_path, 1)
    table = compact(tmp_path)
    data = bytearray(table.read_bytes())
    for offset in (100, len(data) // 2):
        data[offset] ^= 0x55
    table.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match="checksum") as caught:
        await read_all(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert f"LocalDisk.repair({str(tmp_path)!r})" in message
    assert "lost" in message
    LocalDisk.repair(str(tmp_path))
    states = await read_all(tmp_path)
    intact = sum(state == latest(entity, 1) for entity, state in enumerate(states))
    assert all(state in ([], latest(entity, 1)) for entity, state in enumerate(states))
    assert ENTITIES - 200 < intact < ENTITIES
    async with LocalDisk.open(str(tmp_path)) as eco:  # the store goes on being written
        assert await eco.send_sync(Recorder(0), "after") == [*states[0], "after"]


async def test_a_truncated_table_is_reported_then_repaired(tmp_path: Path) -> None:
    """A table cut short gives StoreCorruptedError saying to repair; repair opens it again."""
    await build(tmp_path, 1)
    table = compact(tmp_path)
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    with pytest.raises(StoreCorruptedError, match="repair") as caught:
        await read_all(tmp_path)
    assert str(tmp_path) in str(caught.value)
    LocalDisk.repair(str(tmp_path))
    states = await read_all(tmp_path)
    assert states[0] in ([], latest(0, 1))


def test_repair_refuses_what_is_no_store(tmp_path: Path) -> None:
    """Repair of a missing directory, or of one holding no LevelDB files, changes nothing."""
    with pytest.raises(InvalidArgumentError, match="no directory"):
        LocalDisk.repair(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="nothing to repair"):
        LocalDisk.repair(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


REPAIR_WORKER = """
import sys
from ecosystems import LocalDisk
print("ready", flush=True)
sys.stdin.readline()
LocalDisk.repair(sys.argv[1])
print("done", flush=True)
"""


def start_repair(directory: Path) -> subprocess.Popen[str]:
    """A process about to repair ``directory``: it starts when a line is written to it."""
    worker = subprocess.Popen(
        [sys.executable, "-c", REPAIR_WORKER, str(directory)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline() == "ready\n"
    return worker


def close_pipes(worker: subprocess.Popen[str]) -> None:
    for pipe in (worker.stdin, worker.stdout):
        if pipe is not None:
            pipe.close()


async def test_a_repair_killed_at_any_instant_loses_nothing(tmp_path: Path) -> None:
    """kill -9 during repair, at many instants: the next open either shows every entity at
    its latest state or refuses with StoreCorruptedError saying to run repair again; a
    second repair then opens it with every entity at its latest state."""
    original = tmp_path / "original"
    await build(original, 3)  # tables and a log: repair converts, archives, rewrites
    # How long a whole repair takes here, to spread the kills over it.
    timing = tmp_path / "timing"
    shutil.copytree(original, timing)
    worker = start_repair(timing)
    started = time.monotonic()
    assert worker.stdin is not None
    worker.stdin.write("\n")
    worker.stdin.flush()
    assert worker.wait(timeout=60) == 0
    duration = time.monotonic() - started
    close_pipes(worker)
    outcomes = {"refused": 0, "opened": 0}
    kills = 24
    for trial in range(kills):
        directory = tmp_path / f"trial{trial}"
        shutil.copytree(original, directory)
        worker = start_repair(directory)
        assert worker.stdin is not None
        worker.stdin.write("\n")
        worker.stdin.flush()
        time.sleep(duration * trial / kills)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        close_pipes(worker)
        try:
            states = await read_all(directory)
        except StoreCorruptedError as error:
            refusal = str(error)
            outcomes["refused"] += 1
            assert "repair" in refusal, refusal
        else:
            outcomes["opened"] += 1
            wrong = [entity for entity, state in enumerate(states) if state != latest(entity, 3)]
            assert not wrong, f"trial {trial}: {len(wrong)} entities reverted, e.g. {wrong[:5]}"
        LocalDisk.repair(str(directory))
        states = await read_all(directory)
        wrong = [entity for entity, state in enumerate(states) if state != latest(entity, 3)]
        assert not wrong, f"trial {trial}, repaired again: {len(wrong)} entities wrong"
        shutil.rmtree(directory)
    assert outcomes["refused"] > 0, outcomes  # some kills landed inside the repair
