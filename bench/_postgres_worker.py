"""A Postgres worker process for the benchmarks: ``python -m bench._postgres_worker DSN LEASE``."""

from __future__ import annotations

import contextlib
import sys

import trio

import bench._entities  # noqa: F401  (registers the entities it runs)
from ecosystems import Postgres


async def serve(dsn: str, lease: float) -> None:
    async with Postgres.open(dsn, lease=lease, poll=0.1):
        print("serving", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, sys.argv[1], float(sys.argv[2]))
