"""Does plyvel release the GIL while LevelDB writes and fsyncs?

A pure-Python loop counts in the main thread, alone and then while a second
thread writes one-put batches with ``write_batch(sync=True)``. If plyvel held
the GIL through the fsync, the loop would lose the fraction of time the writer
spends syncing; if it releases it, on two cores the loop keeps its pace. The
writer's own rate alone and alongside the loop is reported too: a thread coming
back from a released-GIL call must win the GIL back from a busy thread, which
in CPython can take up to ``sys.getswitchinterval()`` (5 ms by default).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time

import plyvel

from bench._measure import PAYLOAD, Row, progress

SECONDS = 0.6


def _spin(seconds: float) -> float:
    """Iterations per second of a pure-Python loop running for ``seconds``."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(1_000):
            count += 1
        if time.perf_counter() >= deadline:
            break
    return count / (time.perf_counter() - started)


class _Writer(threading.Thread):
    def __init__(self, db: plyvel.DB) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.started_writing = threading.Event()
        self.rate = 0.0

    def run(self) -> None:
        count = 0
        self.started_writing.set()
        started = time.perf_counter()
        while not self.stop.is_set():
            batch = self.db.write_batch(sync=True)
            batch.put(b"key-%d" % count, PAYLOAD)
            batch.write()
            count += 1
        self.rate = count / (time.perf_counter() - started)


def _with_writer(db: plyvel.DB, spin: bool) -> tuple[float, float]:
    """(loop iterations/s or 0, writes/s) with the writer thread running for SECONDS."""
    writer = _Writer(db)
    writer.start()
    writer.started_writing.wait()
    if spin:
        loop = _spin(SECONDS)
    else:
        loop = 0.0
        time.sleep(SECONDS)
    writer.stop.set()
    writer.join()
    return loop, writer.rate


def rows(quick: bool) -> list[Row]:
    runs = 5
    progress(f"GIL: a Python loop beside write_batch(sync=True) in another thread, {runs} rounds")
    alone: list[float] = []
    beside: list[float] = []
    writes_alone: list[float] = []
    writes_beside: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        db = plyvel.DB(directory, create_if_missing=True)
        try:
            for _ in range(runs):
                alone.append(_spin(SECONDS))
                writes_alone.append(_with_writer(db, spin=False)[1])
                loop, writes = _with_writer(db, spin=True)
                beside.append(loop)
                writes_beside.append(writes)
        finally:
            db.close()
    switch_ms = sys.getswitchinterval() * 1000
    return [
        Row(
            "GIL: Python loop while another thread writes sync",
            statistics.median(beside),
            "same loop, alone",
            statistics.median(alone),
            "loops/s",
            None,
        ),
        Row(
            f"GIL: sync writes/s while a Python loop runs (switch interval {switch_ms:g} ms)",
            statistics.median(writes_beside),
            "same writes, alone",
            statistics.median(writes_alone),
            "writes/s",
            None,
        ),
    ]
