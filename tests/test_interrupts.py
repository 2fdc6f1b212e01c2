"""Ctrl-C at every instant of a shell-face or trio-face call leaves the runtime sound.

Each case runs ``tests/interrupt_worker.py`` in a process of its own, whose
main thread is interrupted at every line, one call per line, until a call
runs to its end untouched; see that file for the checks made after each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("interrupt_worker.py")
FEWEST_LINES = {("InMemory", "send"): 20, ("InMemory", "send_at_bound"): 200}
"""Lines a call runs at the least, where not 40: queueing a message in memory is short."""


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("InMemory", "send_sync"),
        ("LocalDisk", "send_sync"),
        ("InMemory", "send"),
        ("LocalDisk", "send"),
        ("InMemory", "send_at_bound"),
        ("InMemory", "send_sync_queued"),
        ("LocalDisk", "send_sync_queued"),
        ("InMemory", "handler"),
        ("LocalDisk", "handler"),
        ("InMemory", "combined"),
        ("LocalDisk", "combined"),
        ("InMemory", "sigterm"),
        ("LocalDisk", "sigterm"),
        ("LocalDisk", "trio"),
        ("LocalDisk", "trio_state_of"),
        ("Postgres", "send_sync"),
        ("Postgres", "send_sync_cold"),
        ("Postgres", "send"),
        ("Postgres", "handler"),
        ("Postgres", "combined"),
        ("Postgres", "sigterm"),
        ("Postgres", "trio"),
    ],
)
def test_an_interrupt_at_any_line_loses_nothing_and_applies_nothing_twice(
    kind: str, path: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """At every line: settle() returns, a message is applied at most once and never lost."""
    location = str(tmp_path / "store")
    if kind == "Postgres":
        location = request.getfixturevalue("postgres_dsn")
    result = subprocess.run(
        [sys.executable, str(WORKER), kind, path, location],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.splitlines()[-1])
    # The interrupt really walked through the call:
    assert counts["lines"] >= FEWEST_LINES.get((kind, path), 40), counts
    assert counts["interrupted"] == counts["lines"], counts  # and each one surfaced
    if path == "handler":
        assert counts["dead_letters"] >= 40, counts  # it landed in the handler, many times
