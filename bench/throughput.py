"""Durable and in-memory throughput against raw plyvel and bare trio channels."""

from __future__ import annotations

import math
import tempfile
import time

import plyvel
import trio

from bench._entities import Tally
from bench._measure import PAYLOAD, Row, median_rate, progress
from ecosystems import InMemory, LocalDisk
from pachyderm import Ecosystem

ENTITIES = 1_000
SENDERS = 200


def raw_fsync_puts(count: int) -> float:
    """Puts per second, one ``put(sync=True)`` each, into a fresh LevelDB directory."""
    with tempfile.TemporaryDirectory() as directory:
        db = plyvel.DB(directory, create_if_missing=True)
        started = time.perf_counter()
        for number in range(count):
            db.put(b"message-%d" % number, PAYLOAD, sync=True)
        elapsed = time.perf_counter() - started
        db.close()
    return count / elapsed


async def _send_concurrently(eco: Ecosystem, count: int, senders: int = SENDERS) -> float:
    """Messages per second: ``senders`` tasks share ``count`` sends to 1,000 entities."""

    async def sender(first: int) -> None:
        for number in range(first, count, senders):
            await eco.send(Tally(number % ENTITIES), PAYLOAD)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(senders):
            nursery.start_soon(sender, first)
    await eco.settle()
    return count / (time.perf_counter() - started)


def local_disk_concurrent(count: int) -> float:
    """LocalDisk, durable (fsync), trio face, many concurrent senders."""

    async def run() -> float:
        with tempfile.TemporaryDirectory() as directory:
            async with LocalDisk.open(directory) as eco:
                return await _send_concurrently(eco, count)

    return trio.run(run)


def in_memory_concurrent(count: int) -> float:
    """InMemory, trio face, many concurrent senders."""

    async def run() -> float:
        async with InMemory.open() as eco:
            return await _send_concurrently(eco, count)

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


def shell_send_sync(count: int) -> float:
    """Round trips per second of sequential shell-face send_sync on LocalDisk (fsync)."""
    with tempfile.TemporaryDirectory() as directory:
        eco = LocalDisk.connect(directory)
        eco.send_sync(Tally("warm-up"), PAYLOAD)
        started = time.perf_counter()
        for _ in range(count):
            eco.send_sync(Tally("sequential"), PAYLOAD)
        elapsed = time.perf_counter() - started
        eco.close()
    return count / elapsed


def rows(quick: bool) -> list[Row]:
    runs = 3
    messages = 20_000 if quick else 60_000
    puts = 1_000 if quick else 3_000
    round_trips = 1_000 if quick else 3_000

    progress(f"raw plyvel put(sync=True), {puts:,} puts x {runs}")
    raw = median_rate(runs, lambda: raw_fsync_puts(puts))
    progress(f"LocalDisk fsync, {SENDERS} senders, {messages:,} messages x {runs}")
    concurrent = median_rate(runs, lambda: local_disk_concurrent(messages))
    progress(f"LocalDisk shell send_sync, {round_trips:,} sequential round trips x {runs}")
    sequential = median_rate(runs, lambda: shell_send_sync(round_trips))
    progress(f"trio memory channel, {messages:,} messages x {runs}")
    channel = median_rate(runs, lambda: trio_channel(messages))
    progress(f"InMemory, {SENDERS} senders, {messages:,} messages x {runs}")
    memory = median_rate(runs, lambda: in_memory_concurrent(messages))
    raw_name = "raw plyvel put(sync=True)"
    return [
        Row(
            f"LocalDisk fsync, {SENDERS} trio senders -> 1,000 entities",
            concurrent,
            raw_name,
            raw,
            "msg/s",
            8.0,
        ),
        Row("LocalDisk fsync, sequential shell send_sync", sequential, raw_name, raw, "msg/s", 0.6),
        Row(
            f"InMemory, {SENDERS} trio senders -> 1,000 entities",
            memory,
            "trio memory channel, 1 -> 1",
            channel,
            "msg/s",
            0.4,
        ),
    ]
