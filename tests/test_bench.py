"""The benchmark suite runs (quick sizes) and prints every row; speed is not judged here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_prints_the_whole_table() -> None:
    """python -m bench --quick prints the machine, one row per benchmark, and a verdict line."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CPU: ")
    for row in (
        "LocalDisk fsync, 200 trio send senders",
        "LocalDisk fsync, 200 trio send_sync senders",
        "32 threads calling shell send_sync",
        "InMemory shell send, one thread",
        "Pykka 4 ask",
        "sequential shell send_sync",
        "InMemory, 200 trio senders",
        "working set of 1,000 among 100,000 stored",
        "random among 100,000 stored",
        "peak RSS, process that touched 100,000 entities",
        "recovery: reopen + drain 20,000",
        "GIL: sync writes/s while a Python loop runs",
        "exhaust, 2 entities x 3 order-sensitive messages: worlds visited",
        "unique worlds/s, trivial handlers",
        "handler calls per unique world",
        "unique worlds/s, 32 messages in flight",
        "unique worlds/s, 4 entities x 2 messages",
        "memory per stored world",
        "Postgres, 1 worker, 200 trio send_sync senders",
        "Postgres, 1 worker, 200 trio send_sync senders -> a new entity each",
        "Postgres, sequential shell send_sync",
        "Postgres, 1 worker, 32 threads calling shell send_sync",
        "Postgres, a client process's sequential shell send_sync, 1 worker process",
        "Postgres, client's 200 send_sync senders, 3 worker processes",
        "Postgres, client's 200 send_sync senders, handlers of 0.2 ms, 3 worker processes",
        "Postgres, client's 32 threads calling shell send_sync, 3 worker processes",
        "SIGKILLed worker's entity served again",
        "parallel search, workers=2",
    ):
        assert row in result.stdout
    assert "Targets: " in result.stdout
    assert "done in" in result.stderr  # progress goes to stderr
