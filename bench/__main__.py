"""``python -m bench [--quick]``: run every benchmark and print one table."""

from __future__ import annotations

import argparse
import time

from bench import gil, peers, postgres, recovery, scale, simulation, throughput
from bench._measure import RUNS, machine, progress, table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and fewer rounds: a smoke run"
    )
    arguments = parser.parse_args()
    quick: bool = arguments.quick
    started = time.perf_counter()
    for line in machine():
        print(line)
    print(
        f"Sizes: {'quick (a smoke run, not the figures to quote)' if quick else 'full'}. "
        f"Throughput figures are medians of {3 if quick else RUNS} rounds, ours and baselines "
        f"interleaved; GIL of 5; scale, recovery and worlds/s of 3.",
        flush=True,
    )
    rows = throughput.rows(quick)
    rows += peers.rows(quick)
    rows += gil.rows(quick)
    rows += scale.rows(quick)
    rows += recovery.rows(quick)
    rows += simulation.rows(quick)
    rows += postgres.rows(quick)
    elapsed = time.perf_counter() - started
    print()
    print(table(rows))
    print()
    failed = [row.name for row in rows if row.verdict == "FAIL"]
    targets = sum(1 for row in rows if row.target is not None)
    verdict = f"{len(failed)} FAIL: {'; '.join(failed)}" if failed else "all met"
    print(
        f"Targets: {targets - len(failed)} of {targets} met; {verdict}. Run took {elapsed:.0f} s."
    )
    progress(f"done in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
