"""The search: every reachable world once, with sleep sets for deliveries that commute.

Depth-first (the default) prunes with sleep sets kept per stored world, so
that they stay sound together with deduplication: a world reached again with
a smaller sleep set explores exactly the actions it slept on before and no
longer does. Two actions commute when they touch different entities; a timer
firing moves virtual time, which every activation may read, so it commutes
with nothing. Breadth-first explores every transition of every new world and
so finds shortest counterexamples. Both take actions in a deterministic order,
so the same input gives the same result, and every trace replays exactly.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pachyderm._step import Failed
from pachyderm.errors import InvalidArgumentError, describe
from simulation._network import Network
from simulation._render import sequence_diagram, trace_text
from simulation._step import Action, enabled, step
from simulation._world import World

__all__ = [
    "FAILURES",
    "Exploration",
    "Failures",
    "Property",
    "Violation",
    "check_failures",
    "explore_from",
    "failure_report",
]

Property = Callable[[World], Any]
"""A check on a world: fails by returning False or raising AssertionError."""

Search = Literal["depth", "breadth"]
Failures = Literal["dead_letter", "violation"]
FAILURES: tuple[str, ...] = ("dead_letter", "violation")


def check_failures(failures: object) -> Failures:
    if failures not in FAILURES:
        raise InvalidArgumentError(
            f"failures must be one of {FAILURES}, got {describe(failures)}: 'dead_letter' keeps "
            f"a failed message in the world (as live), 'violation' reports it"
        )
    return failures  # type: ignore[return-value]


def failure_report(failure: Failed, action: Action, trace: tuple[Action, ...]) -> str:
    """What a failed activation says: the error, and every message the entity got on the path."""
    recipient = action.recipient
    received = [done.message for done in trace if done.activates and done.recipient == recipient]
    lines = [
        f"{recipient!r} raised on {action.message!r}: {type(failure.error).__name__}: "
        f"{failure.error}",
        f"messages {recipient!r} received on this path, in order:",
        *(f"  {message!r}" for message in received),
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Violation:
    """A property that failed: which, in what world, and how to get there."""

    property_name: str
    world: World
    trace: tuple[Action, ...]
    detail: str = ""

    def __str__(self) -> str:
        heading = f"{self.property_name} fails after {len(self.trace)} steps: {self.detail}"
        return f"{heading.rstrip()}\n{trace_text(self.trace)}\nworld: {self.world!r}"

    @property
    def diagram(self) -> str:
        """The trace as a Mermaid sequence diagram."""
        return sequence_diagram(self.trace)


@dataclass
class Exploration:
    """What a search found, and what it cost."""

    final_worlds: list[World] = field(default_factory=list)
    traces: dict[World, tuple[Action, ...]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    unique_states: int = 0
    transitions: int = 0
    handler_calls: int = 0
    truncated: int = 0  # worlds at max_depth with messages still in flight
    seconds: float = 0.0
    path_counts: dict[World, int] | None = None  # with count_paths: orders leading to each final

    @property
    def deterministic(self) -> bool:
        """Exactly one final world, whatever the delivery order."""
        return len(self.final_worlds) == 1

    @property
    def ok(self) -> bool:
        return not self.violations


class _Stop(Exception):
    pass


class _Frame:
    __slots__ = ("depth", "fingerprint", "index", "sleep", "todo", "world")

    def __init__(
        self, world: World, sleep: dict[bytes, Action], todo: list[Action], depth: int
    ) -> None:
        self.world = world
        self.fingerprint = world.fingerprint
        self.sleep = sleep
        self.todo = todo
        self.index = 0
        self.depth = depth


@dataclass
class _Search:
    network: Network
    invariants: Sequence[Property]
    final_checks: Sequence[Property]
    max_depth: int | None
    stop_at_first_violation: bool
    count_paths: bool = False
    failures: Failures = "dead_letter"
    result: Exploration = field(default_factory=Exploration)
    edges: dict[bytes, list[bytes]] = field(default_factory=dict)
    finals: dict[bytes, World] = field(default_factory=dict)  # quiescent world -> its outcome
    parents: dict[bytes, tuple[bytes | None, Action | None]] = field(default_factory=dict)

    def trace_to(self, fingerprint: bytes) -> tuple[Action, ...]:
        actions: list[Action] = []
        parent, action = self.parents[fingerprint]
        while action is not None and parent is not None:
            actions.append(action)
            parent, action = self.parents[parent]
        return tuple(reversed(actions))

    def check(self, world: World, checks: Sequence[Property], reached: bytes) -> None:
        """Run ``checks`` on ``world``, reached as the world fingerprinted ``reached``."""
        for check in checks:
            try:
                passed = check(world)
                detail = ""
            except AssertionError as error:
                passed, detail = False, str(error)
            if passed is False:
                name = getattr(check, "__name__", repr(check))
                trace = self.trace_to(reached)
                self.result.violations.append(Violation(name, world, trace, detail))
                if self.stop_at_first_violation:
                    raise _Stop

    def discovered(self, world: World, parent: bytes | None, action: Action | None) -> None:
        """A world seen for the first time: record it, check it, note it if final."""
        self.parents[world.fingerprint] = (parent, action)
        self.result.unique_states += 1
        self.check(world, self.invariants, world.fingerprint)
        if world.quiescent:
            final = world.outcome()
            self.finals[world.fingerprint] = final
            if final not in self.result.traces:
                self.result.final_worlds.append(final)
                self.result.traces[final] = self.trace_to(world.fingerprint)
                self.check(final, self.final_checks, world.fingerprint)

    def transition(self, world: World, fingerprint: bytes, action: Action) -> World:
        self.result.transitions += 1
        if action.activates:
            self.result.handler_calls += 1
        child, failure = step(world, action, self.network)
        if failure is not None and self.failures == "violation":
            trace = (*self.trace_to(fingerprint), action)
            detail = failure_report(failure, action, trace)
            self.result.violations.append(Violation("activation failed", child, trace, detail))
            if self.stop_at_first_violation:
                raise _Stop
        return child

    def depth_first(self, initial: World) -> None:
        stored: dict[bytes, tuple[frozenset[bytes], int]] = {}

        def enter(world: World, sleep: dict[bytes, Action], depth: int) -> _Frame | None:
            fingerprint = world.fingerprint
            before = stored.get(fingerprint)
            actions = [] if world.quiescent else enabled(world, self.network)
            if before is None or depth < before[1]:
                stored[fingerprint] = (frozenset(sleep), depth)
                if self.max_depth is not None and depth >= self.max_depth and actions:
                    self.result.truncated += 1
                    return None
                todo = [action for action in actions if action.key not in sleep]
                return _Frame(world, dict(sleep), todo, depth)
            slept_before, first_depth = before
            # Actions asleep last time but awake now were never taken from here.
            todo = [a for a in actions if a.key in slept_before and a.key not in sleep]
            if not todo:
                return None
            stored[fingerprint] = (slept_before & frozenset(sleep), first_depth)
            taken_before = {a.key: a for a in actions if a.key not in slept_before}
            return _Frame(world, {**sleep, **taken_before}, todo, depth)

        self.discovered(initial, None, None)
        first = enter(initial, {}, 0)
        stack = [first] if first is not None else []
        while stack:
            frame = stack[-1]
            if frame.index == len(frame.todo):
                stack.pop()
                continue
            action = frame.todo[frame.index]
            frame.index += 1
            child = self.transition(frame.world, frame.fingerprint, action)
            # Sleepers independent of this action stay asleep in the child.
            # Independent: they commute and neither disables the other, which
            # holds for deliveries to different entities; anything touching
            # the same entity does not, nor do two faults (they share budgets),
            # nor a timer firing (it moves the virtual time every activation reads).
            if action.envelope is None:
                child_sleep: dict[bytes, Action] = {}
            else:
                target = action.envelope.recipient_key
                delivering = action.kind == "deliver"
                child_sleep = {
                    key: asleep
                    for key, asleep in frame.sleep.items()
                    if asleep.envelope is not None
                    and asleep.envelope.recipient_key != target
                    and (delivering or asleep.kind == "deliver")
                }
            frame.sleep[action.key] = action
            if child.fingerprint not in self.parents:
                self.discovered(child, frame.fingerprint, action)
            entered = enter(child, child_sleep, frame.depth + 1)
            if entered is not None:
                stack.append(entered)

    def paths(self, initial: World) -> dict[World, int] | None:
        """How many delivery orders reach each final world, over the state graph.

        Counted in topological order (Kahn), never by enumerating paths; None
        if the graph has a cycle (a world that can come back: infinitely many).
        """
        indegree: dict[bytes, int] = {}
        for targets in self.edges.values():
            for target in targets:
                indegree[target] = indegree.get(target, 0) + 1
        ways = {initial.fingerprint: 1}
        ready = deque([initial.fingerprint])
        processed = 0
        while ready:
            node = ready.popleft()
            processed += 1
            for target in self.edges.get(node, ()):
                ways[target] = ways.get(target, 0) + ways[node]
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
        if processed < len(self.parents):
            return None
        counts: dict[World, int] = {}
        for fingerprint, final in self.finals.items():
            counts[final] = counts.get(final, 0) + ways[fingerprint]
        return counts

    def breadth_first(self, initial: World) -> None:
        self.discovered(initial, None, None)
        queue = deque([(initial, 0)])
        while queue:
            world, depth = queue.popleft()
            if world.quiescent:
                continue
            if self.max_depth is not None and depth >= self.max_depth:
                self.result.truncated += 1
                continue
            targets = self.edges.setdefault(world.fingerprint, []) if self.count_paths else None
            for action in enabled(world, self.network):
                child = self.transition(world, world.fingerprint, action)
                if targets is not None:
                    targets.append(child.fingerprint)
                if child.fingerprint not in self.parents:
                    self.discovered(child, world.fingerprint, action)
                    queue.append((child, depth + 1))


def explore_from(
    initial: World,
    *,
    network: Network,
    invariants: Sequence[Property] = (),
    final: Sequence[Property] = (),
    search: Search = "depth",
    max_depth: int | None = None,
    stop_at_first_violation: bool = True,
    count_paths: bool = False,
    failures: Failures = "dead_letter",
) -> Exploration:
    """Explore every world reachable from ``initial``; see :func:`Simulation.explore`."""
    if search not in ("depth", "breadth"):
        raise InvalidArgumentError(f"search must be 'depth' or 'breadth', got {describe(search)}")
    if max_depth is not None and (type(max_depth) is not int or max_depth < 0):
        raise InvalidArgumentError(
            f"max_depth must be an int >= 0 or None, got {describe(max_depth)}"
        )
    searcher = _Search(
        network,
        invariants,
        final,
        max_depth,
        stop_at_first_violation,
        count_paths,
        failures=check_failures(failures),
    )
    started = time.perf_counter()
    # A search makes millions of small containers and no reference cycles;
    # the cyclic collector would keep rescanning them for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if search == "depth" and not count_paths:
            searcher.depth_first(initial)
        else:
            searcher.breadth_first(initial)
    except _Stop:
        pass
    else:
        if count_paths:
            searcher.result.path_counts = searcher.paths(initial)
    finally:
        if collecting:
            gc.enable()
    searcher.result.seconds = time.perf_counter() - started
    return searcher.result
