"""Parallel search: ``explore(..., workers=N)`` with N forked worker processes.

The coordinator (the calling process) runs the levels of the search that
``_worker`` describes: it routes each worker's arrivals to their owners and
the owners' verdicts back, evens out the number of actions each worker
takes, keeps the budgets and reports progress. A level is two commands to
each worker (decide; take and expand) when the worlds each takes are even
already, and four when some must move (take; ship; expand). Workers are
forked, so they share the caller's entity classes, invariants and registry
of names, however they were defined; they ignore SIGINT, and Ctrl-C in the
caller ends them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from pachyderm.errors import InvalidArgumentError, PachydermError, describe
from simulation._explore import Exploration, Violation, _Budget, _Stop
from simulation._step import Action
from simulation._transfer import loads
from simulation._worker import Config, Worker
from simulation._world import World

__all__ = ["check_workers", "explore_parallel"]

_TOLERANCE = 0.05  # a worker this far over its share of a level's actions gives the rest away
_SLACK = 32  # ...and always this many: shipping a handful costs more than it saves
_MAX_WORKERS = 256  # owner_of() reads one byte


def check_workers(workers: object, count_paths: bool) -> int:
    """``workers`` checked: an int >= 1, and > 1 only where a parallel search can run."""
    if type(workers) is not int or workers < 1:
        raise InvalidArgumentError(
            f"workers must be an int >= 1 (processes to search with; 1, the default, "
            f"searches in this process), got {describe(workers)}"
        )
    if workers > _MAX_WORKERS:
        raise InvalidArgumentError(
            f"workers must be at most {_MAX_WORKERS} (one byte of a world's fingerprint picks "
            f"the worker that owns it); a search gains little past this machine's "
            f"{os.cpu_count()} cores; got {describe(workers)}"
        )
    if workers > 1 and count_paths:
        raise InvalidArgumentError(
            f"count_paths counts orders over the whole state graph, which one process keeps: "
            f"use workers=1 with count_paths (got workers={workers!r})"
        )
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise InvalidArgumentError(
            f"workers={workers!r} needs processes started by fork, which this platform "
            f"does not have: use workers=1"
        )
    return workers


def explore_parallel(
    initial: World,
    workers: int,
    config: Config,
    budget: _Budget,
    stop_at_first_violation: bool,
    max_worlds: float,
) -> Exploration:
    """Explore from ``initial`` with ``workers`` processes; see :func:`Simulation.explore`."""
    result = Exploration()
    processes, connections = _start(initial, workers, config)
    try:
        _Coordinator(connections, result, budget, max_worlds).run(stop_at_first_violation)
    except BaseException:
        _end(processes, connections, politely=False)
        raise
    _end(processes, connections, politely=True)
    return result


def _start(
    initial: World, workers: int, config: Config
) -> tuple[list[multiprocessing.process.BaseProcess], list[Connection]]:
    context = multiprocessing.get_context("fork")
    processes: list[multiprocessing.process.BaseProcess] = []
    connections: list[Connection] = []
    # Blocked while forking, so that Ctrl-C cannot reach a worker before it ignores it.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for index in range(workers):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(index, workers, config, initial if index == 0 else None, theirs),
                kwargs={"inherited": [*connections, ours]},
                name=f"pachyderm-explore-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            processes.append(process)
            connections.append(ours)
    except BaseException:
        _end(processes, connections, politely=False)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return processes, connections


def _end(
    processes: list[multiprocessing.process.BaseProcess],
    connections: list[Connection],
    *,
    politely: bool,
) -> None:
    """Stop every worker: asked to, if ``politely``; otherwise (an error, Ctrl-C) terminated."""
    if politely:
        for connection in connections:
            with contextlib.suppress(OSError):  # a worker that died is stopped
                connection.send(("stop",))
    for process in processes:
        if not politely:
            process.terminate()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    for connection in connections:
        connection.close()


def _serve(
    index: int,
    workers: int,
    config: Config,
    initial: World | None,
    connection: Connection,
    *,
    inherited: Sequence[Connection],
) -> None:
    """A worker process: answer the coordinator's commands until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    for other in inherited:  # the coordinator's ends: closed, so a dead coordinator is EOF here
        other.close()
    worker = Worker(index, workers, config, initial)
    commands: dict[str, Callable[..., Any]] = {
        "expand": worker.expand,
        "decide": worker.decide,
        "take": worker.take,
        "advance": worker.advance,
        "ship": worker.ship,
        "newest": worker.newest,
        "results": worker.results,
    }
    while True:
        try:
            command, *arguments = connection.recv()
        except (EOFError, OSError):
            return
        if command == "stop":
            return
        try:
            reply: tuple[Any, ...] = ("ok", commands[command](*arguments))
        except BaseException as error:  # an invariant that raised, say: the caller gets it
            reply = ("error", _pickled(error), traceback.format_exc())
        try:
            connection.send(reply)
        except OSError:
            return


def _pickled(error: BaseException) -> bytes | None:
    try:
        blob = pickle.dumps(error)
        pickle.loads(blob)
    except Exception:
        return None
    return blob


class _Coordinator:
    def __init__(
        self,
        connections: list[Connection],
        result: Exploration,
        budget: _Budget,
        max_worlds: float,
    ) -> None:
        self.connections = connections
        self.workers = len(connections)
        self.result = result
        self.budget = budget
        self.max_worlds = max_worlds

    def ask(self, messages: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send each worker its message; its reply, in worker order."""
        try:
            for connection, message in zip(self.connections, messages, strict=True):
                connection.send(message)
            replies = [connection.recv() for connection in self.connections]
        except (EOFError, OSError) as lost:  # killed from outside, or out of memory
            raise PachydermError(
                "a search worker process ended in the middle of the search (killed, or out "
                "of memory?); no result"
            ) from lost
        return [self.answer(index, reply) for index, reply in enumerate(replies)]

    @staticmethod
    def answer(index: int, reply: tuple[Any, ...]) -> Any:
        """What a worker replied, or the error it raised, raised here."""
        if reply[0] == "error":
            _, blob, text = reply
            error = loads(blob) if blob is not None else PachydermError(text)
            error.add_note(f"(raised in search worker {index}; its traceback:)\n{text}")
            raise error
        return reply[1]

    def everyone(self, *message: Any) -> list[Any]:
        return self.ask([message] * self.workers)

    def run(self, stop_at_first_violation: bool) -> None:
        n = self.workers
        result = self.result
        arrivals = [blobs for blobs, _, _ in self.everyone("expand", -1)]  # worker 0: the start
        depth = 0
        try:
            while True:
                routed = [[arrivals[g][o] for g in range(n)] for o in range(n)]
                decided = self.ask([("decide", routed[o]) for o in range(n)])
                decisions = [[decided[o][0][g] for o in range(n)] for g in range(n)]
                counts = [sum(decided[o][1][g] for o in range(n)) for g in range(n)]
                new = sum(part[2] for part in decided)
                if not any(counts):
                    break
                if result.unique_states + new > self.max_worlds:
                    room = int(self.max_worlds) - result.unique_states
                    last = self.cut(room)
                    result.unique_states += room
                    result.stopped = "max_worlds"
                    taken = self.ask([("take", decisions[g], depth, last) for g in range(n)])
                    if stop_at_first_violation and any(found for _, _, found in taken):
                        result.stopped = "violation"
                    break
                result.unique_states += new
                if any(_balance(counts)):  # uneven: take, even out the actions, then expand
                    expanded = self.take_and_expand(decisions, depth, stop_at_first_violation)
                else:  # one command each: the worlds each takes are its share already
                    replies = self.ask(
                        [
                            ("advance", decisions[g], depth, stop_at_first_violation)
                            for g in range(n)
                        ]
                    )
                    taken = [reply[0] for reply in replies]
                    if stop_at_first_violation and any(found for _, _, found in taken):
                        result.stopped = "violation"
                        break
                    self.budget.tick(result, sum(items for _, items, _ in taken), depth)
                    expanded = [reply[1] for reply in replies]
                if expanded is None:
                    break
                if any(cut for _, cut, _ in expanded):
                    result.stopped = "timeout"
                elif stop_at_first_violation and any(found for _, _, found in expanded):
                    result.stopped = "violation"
                if result.stopped is not None:
                    break
                arrivals = [blobs for blobs, _, _ in expanded]
                depth += 1
        except _Stop as stop:
            result.stopped = stop.reason
        self.gather(stop_at_first_violation)

    def take_and_expand(
        self, decisions: list[list[bytes | None]], depth: int, stop_at_first_violation: bool
    ) -> list[Any] | None:
        """Take the level's worlds, ship actions to even out the workers, expand; None if a
        violation stops the search."""
        n = self.workers
        taken = self.ask([("take", decisions[g], depth, None) for g in range(n)])
        if stop_at_first_violation and any(found for _, _, found in taken):
            self.result.stopped = "violation"
            return None
        self.budget.tick(self.result, sum(items for _, items, _ in taken), depth)
        plans = _balance([actions for actions, _, _ in taken])
        received: list[list[bytes]] = [[] for _ in range(n)]
        if any(plans):
            shipped = self.ask([("ship", plans[g]) for g in range(n)])
            received = [[p[t] for p in shipped if p[t] is not None] for t in range(n)]
        return self.ask([("expand", depth, received[t]) for t in range(n)])

    def cut(self, room: int) -> bytes:
        """The largest key of the ``room`` smallest new ones: the same worlds every time."""
        keys = sorted(key for part in self.everyone("newest") for key in part)
        return keys[room - 1] if room else b""

    def gather(self, stop_at_first_violation: bool) -> None:
        """Final worlds, violations and counts from every worker, merged in a fixed order."""
        result = self.result
        finals: dict[bytes, tuple[Any, World, Any]] = {}
        violations: dict[Any, tuple[Any, Violation]] = {}
        gap: tuple[Any, str, tuple[Action, ...]] | None = None
        for blob in self.everyone("results"):
            worker_finals, worker_violations, counts = loads(blob)
            transitions, calls, truncated, timer_gaps, first_gap = counts
            result.transitions += transitions
            result.handler_calls += calls
            result.truncated += truncated
            result.timer_gaps += timer_gaps
            if first_gap is not None and (gap is None or first_gap[0] < gap[0]):
                gap = first_gap  # the first by (depth, parent, action), as violations go
            for key, order, world, trace in worker_finals:
                if key not in finals or order < finals[key][0]:
                    finals[key] = (order, world, trace)
            for order, name, world, trace, detail, final_key in worker_violations:
                # A final world checked by two workers is one violation: the first's.
                identity = (name, final_key) if final_key is not None else (order, len(violations))
                if identity not in violations or order < violations[identity][0]:
                    violations[identity] = (order, Violation(name, world, trace, detail))
        if gap is not None:
            _, result.timer_gap, result.timer_gap_trace = gap
        for _, world, trace in sorted(finals.values(), key=lambda entry: entry[0]):
            result.final_worlds.append(world)
            result.traces[world] = trace
        found = [violation for _, violation in sorted(violations.values(), key=_first)]
        result.violations = found[:1] if stop_at_first_violation else found


def _first(entry: tuple[Any, Violation]) -> Any:
    return entry[0]


def _balance(counts: list[int]) -> list[list[tuple[int, int]]]:
    """Which worker ships how many of its actions to which, so that each takes its share."""
    workers = len(counts)
    total = sum(counts)
    shares = [total // workers + (index < total % workers) for index in range(workers)]
    surplus = [max(0, count - share) for count, share in zip(counts, shares, strict=True)]
    deficit = [max(0, share - count) for count, share in zip(counts, shares, strict=True)]
    plans: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
    if max(surplus) <= _SLACK + _TOLERANCE * total / workers:
        return plans
    for giver in range(workers):
        for taker in range(workers):
            moved = min(surplus[giver], deficit[taker])
            if moved:
                plans[giver].append((taker, moved))
                surplus[giver] -= moved
                deficit[taker] -= moved
    return plans


def deadline_after(budget: _Budget) -> float:
    """The budget's deadline on the clock every process shares."""
    return time.monotonic() + (budget.deadline - time.perf_counter())
