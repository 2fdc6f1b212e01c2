"""The README's examples and the example apps run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(arguments: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env={**os.environ, "PACHYDERM_HOME": str(home), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_readme_examples_pass(tmp_path: Path) -> None:
    """Every >>> example in README.md passes as a doctest with a fresh PACHYDERM_HOME."""
    flags = ["-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE"]
    result = run(["-m", "doctest", *flags, "README.md"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "CURRENT").exists()  # it really used LocalDisk in PACHYDERM_HOME


def test_bank_demo_remembers_across_processes(tmp_path: Path) -> None:
    """The demo run twice on one directory goes on from the first run's balances."""
    first = run(["examples/demo.py", str(tmp_path / "bank")], tmp_path)
    second = run(["examples/demo.py", str(tmp_path / "bank")], tmp_path)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "run 1: balances after: alice=70 bob=30" in first.stdout
    assert "run 2: balances before: alice=70 bob=30" in second.stdout
    assert "run 2: balances after: alice=140 bob=60" in second.stdout
    assert "run 2: transfer of 1000 from bob: balance 60 < 1000" in second.stdout
