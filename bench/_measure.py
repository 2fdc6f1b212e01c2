"""Timing helpers and the table the benchmarks print."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

PAYLOAD = b"x" * 24
"""The message every benchmark sends, and the value the raw baselines write."""


def progress(text: str) -> None:
    """A progress line on stderr, so the table on stdout stays clean."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def median_rate(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` calls of ``measure`` (each returns a rate)."""
    return statistics.median(measure() for _ in range(runs))


@dataclass(frozen=True)
class Row:
    """One line of the table: our figure against a baseline measured in the same run."""

    name: str
    ours: float
    baseline_name: str
    baseline: float
    unit: str
    target: float | None  # the ratio ours / baseline must reach; None: reported only
    at_most: bool = False  # the ratio must stay at or under the target instead

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        passed = self.ratio <= self.target if self.at_most else self.ratio >= self.target
        return "PASS" if passed else "FAIL"


def machine() -> str:
    """CPU, cores, Python and filesystem, for the table's heading."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    filesystem = "unknown"
    try:
        with open("/proc/mounts") as mounts:
            best = ""
            for line in mounts:
                device, mount, kind, *_ = line.split()
                temp = os.environ.get("TMPDIR", "/tmp")
                if temp.startswith(mount) and len(mount) > len(best):
                    best, filesystem = mount, f"{kind} on {device} (mounted at {mount})"
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, temp dir: {filesystem}"
    )


def table(rows: list[Row]) -> str:
    """The rows, aligned, with ratio and verdict columns."""
    header = ("benchmark", "ours", "baseline", "baseline figure", "ratio", "target", "")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.name,
                f"{row.ours:,.0f} {row.unit}",
                row.baseline_name,
                f"{row.baseline:,.0f} {row.unit}",
                f"{row.ratio:.3g}x",
                "report"
                if row.target is None
                else f"{'<=' if row.at_most else '>='} {row.target}x",
                row.verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in rendered)
