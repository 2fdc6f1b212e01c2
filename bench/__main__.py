"""``python -m bench [--quick]``: run every benchmark and print one table."""

from __future__ import annotations

import argparse
import time

from bench import recovery, scale, simulation, throughput
from bench._measure import machine, progress, table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    arguments = parser.parse_args()
    started = time.perf_counter()
    rows = throughput.rows(arguments.quick)
    rows += scale.rows(arguments.quick)
    rows += recovery.rows(arguments.quick)
    rows += simulation.rows(arguments.quick)
    print(f"Machine: {machine()}")
    print(f"Medians of 3 runs where repeated; {'quick' if arguments.quick else 'full'} sizes.")
    print()
    print(table(rows))
    print()
    progress(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
