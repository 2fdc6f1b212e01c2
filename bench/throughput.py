"""Durable and in-memory throughput against raw plyvel and bare trio channels.

Every way users call: trio tasks awaiting ``send`` and ``send_sync``, one
thread calling the shell face's ``send_sync`` in a loop, and 32 threads doing
so at once (a web server's request threads).
"""

from __future__ import annotations

import math
import tempfile
import threading
import time

import plyvel
import trio

from bench._entities import Tally
from bench._measure import PAYLOAD, RUNS, Row, interleaved, progress
from ecosystems import InMemory, LocalDisk
from pachyderm import Ecosystem, ShellEcosystem

ENTITIES = 1_000
SENDERS = 200
THREADS = 32


def raw_fsync_puts(count: int) -> float:
    """Puts per second, one sequential ``put(sync=True)`` each, into a fresh LevelDB directory."""
    with tempfile.TemporaryDirectory() as directory:
        db = plyvel.DB(directory, create_if_missing=True)
        started = time.perf_counter()
        for number in range(count):
            db.put(b"message-%d" % number, PAYLOAD, sync=True)
        elapsed = time.perf_counter() - started
        db.close()
    return count / elapsed


async def send_concurrently(
    eco: Ecosystem,
    count: int,
    senders: int = SENDERS,
    verb: str = "send",
    entity: type[Tally] = Tally,
) -> float:
    """Messages per second: ``senders`` tasks share ``count`` sends to 1,000 entities.

    ``verb`` is ``"send"`` or ``"send_sync"``; ``entity`` the entities' class. The
    clock stops once every message is processed and committed (``settle``).
    """
    send = getattr(eco, verb)

    async def sender(first: int) -> None:
        for number in range(first, count, senders):
            await send(entity(number % ENTITIES), PAYLOAD)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(senders):
            nursery.start_soon(sender, first)
    await eco.settle()
    return count / (time.perf_counter() - started)


def local_disk_concurrent(count: int, verb: str = "send") -> float:
    """LocalDisk, durable (fsync), trio face, many concurrent senders, a fresh directory."""

    async def run() -> float:
        with tempfile.TemporaryDirectory() as directory:
            async with LocalDisk.open(directory, durability="fsync") as eco:
                rate = await send_concurrently(eco, count, verb=verb)
                if eco.runtime.statistics["activations"] != count:
                    raise AssertionError(f"expected {count} activations: {eco.runtime.statistics}")
                return rate

    return trio.run(run)


def in_memory_concurrent(count: int) -> float:
    """InMemory, trio face, many concurrent senders."""

    async def run() -> float:
        async with InMemory.open() as eco:
            return await send_concurrently(eco, count)

    return trio.run(run)


def trio_channel(count: int) -> float:
    """Messages per second through a bare trio memory channel, one producer, one consumer."""

    async def run() -> float:
        send, receive = trio.open_memory_channel[bytes](math.inf)

        async def producer() -> None:
            async with send:
                for _ in range(count):
                    await send.send(PAYLOAD)

        async def consumer() -> None:
            async with receive:
                async for _ in receive:
                    pass

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(consumer)
        return count / (time.perf_counter() - started)

    return trio.run(run)


def sequential_round_trips(eco: ShellEcosystem, count: int) -> float:
    """Round trips per second of ``count`` shell-face send_sync calls, one after another."""
    eco.send_sync(Tally("warm-up"), PAYLOAD)
    started = time.perf_counter()
    for _ in range(count):
        state = eco.send_sync(Tally("sequential"), PAYLOAD)
    elapsed = time.perf_counter() - started
    if state != count:
        raise AssertionError(f"send_sync returned {state}, expected {count}")
    return count / elapsed


def shell_send_sync(count: int) -> float:
    """Round trips per second of sequential shell-face send_sync on LocalDisk (fsync)."""
    with tempfile.TemporaryDirectory() as directory:
        eco = LocalDisk.connect(directory)
        try:
            return sequential_round_trips(eco, count)
        finally:
            eco.close()


def shell_threads_send_sync(per_thread: int, threads: int = THREADS) -> float:
    """Round trips per second of shell send_sync from many threads on LocalDisk (fsync)."""
    with tempfile.TemporaryDirectory() as directory:
        eco = LocalDisk.connect(directory)
        try:
            return threads_round_trips(eco, per_thread, threads)
        finally:
            eco.close()


def threads_round_trips(eco: ShellEcosystem, per_thread: int, threads: int = THREADS) -> float:
    """Round trips per second of shell send_sync from many threads, each to its own entities."""
    eco.send_sync(Tally("warm-up"), PAYLOAD)
    start = threading.Barrier(threads + 1)

    def caller(number: int) -> None:
        start.wait()
        for message in range(per_thread):
            eco.send_sync(Tally((number, message % 10)), PAYLOAD)

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for thread in callers:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in callers:
        thread.join()
    elapsed = time.perf_counter() - started
    if eco.state_of(Tally((0, 0))) != per_thread // 10:
        raise AssertionError("a caller's messages were not all applied")
    return threads * per_thread / elapsed


def rows(quick: bool) -> list[Row]:
    runs = 3 if quick else RUNS
    messages = 20_000 if quick else 100_000
    puts = 1_000 if quick else 3_000
    round_trips = 1_000 if quick else 3_000
    per_thread = 100 if quick else 400

    progress(
        f"durable: raw put(sync=True) x {puts:,}; LocalDisk {SENDERS} trio senders x "
        f"{messages:,} send and send_sync; shell send_sync x {round_trips:,} in one thread, "
        f"x {per_thread:,} in each of {THREADS}; {runs} rounds, interleaved"
    )
    durable = interleaved(
        runs,
        {
            "raw": lambda: raw_fsync_puts(puts),
            "concurrent": lambda: local_disk_concurrent(messages),
            "concurrent sync": lambda: local_disk_concurrent(messages, "send_sync"),
            "sequential": lambda: shell_send_sync(round_trips),
            "threads": lambda: shell_threads_send_sync(per_thread),
        },
    )
    progress(
        f"in memory: trio channel and InMemory, {messages:,} messages; {runs} rounds, interleaved"
    )
    memory = interleaved(
        runs,
        {
            "channel": lambda: trio_channel(messages),
            "memory": lambda: in_memory_concurrent(messages),
        },
    )
    raw_name = "raw plyvel put(sync=True), 1 by 1"
    return [
        Row(
            f"LocalDisk fsync, {SENDERS} trio send senders -> 1,000 entities",
            durable["concurrent"],
            raw_name,
            durable["raw"],
            "msg/s",
            8.0,
        ),
        Row(
            f"LocalDisk fsync, {SENDERS} trio send_sync senders -> 1,000 entities",
            durable["concurrent sync"],
            raw_name,
            durable["raw"],
            "msg/s",
            8.0,
        ),
        Row(
            f"LocalDisk fsync, {THREADS} threads calling shell send_sync",
            durable["threads"],
            raw_name,
            durable["raw"],
            "msg/s",
            3.0,
        ),
        Row(
            "LocalDisk fsync, sequential shell send_sync",
            durable["sequential"],
            raw_name,
            durable["raw"],
            "msg/s",
            0.6,
        ),
        Row(
            f"InMemory, {SENDERS} trio senders -> 1,000 entities",
            memory["memory"],
            "trio memory channel, 1 -> 1",
            memory["channel"],
            "msg/s",
            0.4,
        ),
    ]
