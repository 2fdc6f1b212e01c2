"""Timing helpers, the machine description and the table the benchmarks print."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

PAYLOAD = b"x" * 24
"""The message every benchmark sends, and the value the raw baselines write."""

RUNS = 5
"""How many times the quick, repeatable measurements run; the table shows medians."""


def progress(text: str) -> None:
    """A progress line on stderr, so the table on stdout stays clean."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def median_rate(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` calls of ``measure`` (each returns a rate)."""
    return statistics.median(measure() for _ in range(runs))


def interleaved(runs: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The median of each measure over ``runs`` rounds, the measures taking turns.

    This machine's speed drifts within minutes: running a figure and its
    baseline in alternation, with the order rotated every round, exposes both
    to the same drift, so their ratio is fairer than that of two separate series.
    """
    names = list(measures)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(runs):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            figures[name].append(measures[name]())
    return {name: statistics.median(values) for name, values in figures.items()}


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


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _filesystem(directory: str) -> str:
    """The filesystem holding ``directory``, its device, and whether that device spins."""
    try:
        with open("/proc/mounts") as mounts:
            entries = [line.split()[:3] for line in mounts]
    except OSError:
        return "unknown filesystem"
    best: list[str] | None = None
    for device, mount, kind in entries:
        inside = directory == mount or directory.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best[1])):
            best = [device, mount, kind]
    if best is None:
        return "unknown filesystem"
    device, mount, kind = best
    disk = os.path.basename(device)
    rotational = f"/sys/block/{disk}/queue/rotational"
    medium = ""
    if os.path.exists(rotational):
        with open(rotational) as flag:
            medium = f", {disk} reports rotational={flag.read().strip()}"
    return f"{kind} on {device}{medium} (mounted at {mount})"


def machine() -> list[str]:
    """Lines describing where the figures were measured, for the table's heading."""
    temp = os.path.realpath(tempfile.gettempdir())
    return [
        f"CPU:    {_cpu()}, {os.cpu_count()} cores",
        f"Python: {platform.python_implementation()} {platform.python_version()} "
        f"on {platform.system()} {platform.release()}",
        f"Disk:   temp dir {temp}: {_filesystem(temp)}",
    ]


def _figure(value: float, unit: str) -> str:
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.3g} {unit}"


def table(rows: list[Row]) -> str:
    """The rows, aligned, with ratio and verdict columns."""
    header = ("benchmark", "ours", "baseline (same run)", "baseline figure", "ratio", "target", "")
    lines = [header]
    for row in rows:
        if row.target is None:
            target = "report"
        else:
            target = f"{'<=' if row.at_most else '>='} {row.target:g}x"
        lines.append(
            (
                row.name,
                _figure(row.ours, row.unit),
                row.baseline_name,
                _figure(row.baseline, row.unit),
                f"{row.ratio:.3g}x",
                target,
                row.verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {1, 3, 4}  # figures and ratios align right

    def render(line: tuple[str, ...]) -> str:
        cells = (
            cell.rjust(width) if index in numeric and line is not header else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    rendered = [render(line) for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)
