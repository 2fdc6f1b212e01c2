"""The search: every reachable world once, with sleep sets for deliveries that commute.

Depth-first (the default) prunes with sleep sets kept per stored world, so
that they stay sound together with deduplication: a world reached again with
a smaller sleep set explores exactly the actions it slept on before and no
longer does. Two actions commute when they touch different entities, or are
deliveries to one entity that commute in the world at hand (see
``SleepMasks``); a timer firing moves virtual time, which every activation
may read, so it commutes with nothing. Sleep sets are ints here (``SleepMasks``).
Breadth-first explores every transition of every new world and so finds shortest
counterexamples. Both take actions in a deterministic order,
so the same input gives the same result, and every trace replays exactly.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pachyderm._log import log
from pachyderm._step import Failed
from pachyderm.errors import InvalidArgumentError, describe, exception_text, shown
from simulation._network import Network
from simulation._render import counted, sequence_diagram, trace_text
from simulation._step import (
    PACK_FROM,
    Action,
    Activations,
    SleepMasks,
    actions_after,
    enabled,
    make_planned,
    packed,
    plan_delivery,
    step,
    told_gap,
    unpacked,
)
from simulation._symmetry import Symmetry, check_symmetric
from simulation._world import World

__all__ = [
    "FAILURES",
    "Exploration",
    "Failures",
    "Property",
    "Stopped",
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
Stopped = Literal["violation", "max_worlds", "timeout"]

_TICK = 1024  # transitions between looks at the clock at most: cheap, with quick steps
_LOOK_EVERY = 0.05  # seconds between looks at the clock, about: slow checks look sooner
_PROGRESS_EVERY = 1.0  # seconds between progress reports
_QUIET_FOR = 2.0  # a search shorter than this prints nothing on its own
WORLD_SHOWN = 2_000  # characters of a violating world in its str (all of it: .world)


def failed_checks(
    world: World, checks: Sequence[Property], trace: Callable[[], tuple[Action, ...]]
) -> list[tuple[str, str]]:
    """``(name, detail)`` of each check that ``world`` fails (returns False or raises
    AssertionError, whose text is the detail).

    A check that raises anything else is broken, not failed: its error goes to the
    caller with a note naming the check, the world and ``trace()``, the steps to it.
    """
    failed = []
    for check in checks:
        name = getattr(check, "__name__", repr(check))
        try:
            passed = check(world)
            detail = ""
        except AssertionError as error:
            passed, detail = False, str(error)
        except Exception as error:
            steps = trace_text(trace()) or "(none: the first world)"
            shown_world = shown(world, WORLD_SHOWN)
            error.add_note(f"raised by the check {name} on {shown_world}, reached by:\n{steps}")
            raise
        if passed is False:
            failed.append((name, detail))
    return failed


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
        f"{recipient!r} raised on {shown(action.message)}: {exception_text(failure.error)}",
        f"messages {recipient!r} received on this path, in order:",
        *(f"  {shown(message)}" for message in received),
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
        when = f"after {counted(len(self.trace), 'step')}" if self.trace else "at the start"
        lines = [f"{self.property_name} fails {when}" + (f": {self.detail}" if self.detail else "")]
        if self.trace:
            lines.append(trace_text(self.trace))
        lines.append(f"world: {shown(self.world, WORLD_SHOWN)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Violation of {self.property_name} after {counted(len(self.trace), 'step')}>"

    @property
    def diagram(self) -> str:
        """The trace as a Mermaid sequence diagram."""
        return sequence_diagram(self.trace)


@dataclass(repr=False)
class Exploration:
    """What a search found, and what it cost.

    ``complete`` says whether every reachable world was visited: False when
    a budget (``max_worlds``, ``timeout``) or the first violation stopped the
    search (``stopped`` says which), or ``max_depth`` cut paths short.
    """

    final_worlds: list[World] = field(default_factory=list)
    traces: dict[World, tuple[Action, ...]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    unique_states: int = 0
    transitions: int = 0
    handler_calls: int = 0
    truncated: int = 0  # worlds at max_depth with messages still in flight
    seconds: float = 0.0
    path_counts: dict[World, int] | None = None  # with count_paths: orders leading to each final
    stopped: Stopped | None = None  # what ended the search early, if anything did
    # Transitions that set a timer for less time than one the same entity held from an
    # earlier message: live, either can fire first, and the search may take one order
    # only (simulation._step.timer_gap_in). The first of them, told.
    timer_gaps: int = 0
    timer_gap: str = ""
    timer_gap_trace: tuple[Action, ...] | None = None  # to the first, its activation last

    @property
    def complete(self) -> bool:
        """Every reachable world was visited: no budget, violation or max_depth cut it short."""
        return self.stopped is None and not self.truncated

    @property
    def deterministic(self) -> bool:
        """Exactly one final world, whatever the delivery order."""
        return len(self.final_worlds) == 1

    @property
    def ok(self) -> bool:
        return not self.violations

    def __repr__(self) -> str:
        gaps = ""
        if self.timer_gaps:
            gaps = f", {self.timer_gaps:,} timer-order gap{'s' if self.timer_gaps > 1 else ''}"
        return (
            f"<Exploration {'complete' if self.complete else 'incomplete'}: "
            f"{counted(self.unique_states, 'world')}, {len(self.final_worlds):,} final, "
            f"{counted(len(self.violations), 'violation')}, {self.seconds:.3g} s{gaps}>"
        )

    def __str__(self) -> str:
        if self.stopped is not None:
            how = f"stopped early ({self.stopped})"
        elif self.truncated:
            how = f"incomplete: {counted(self.truncated, 'path')} cut at max_depth"
        else:
            how = "complete"
        lines = [
            f"exploration {how}: {counted(self.unique_states, 'world')}, "
            f"{counted(self.transitions, 'transition')}, "
            f"{counted(len(self.final_worlds), 'final world')}, "
            f"{self.seconds:.3g} s"
        ]
        if self.timer_gaps:
            lines.append(timer_gap_warning(self.timer_gaps, self.timer_gap))
            if self.timer_gap_trace is not None:
                lines.append(f"reached by:\n{trace_text(self.timer_gap_trace)}")
        if self.violations:
            first = self.violations[0]
            more = len(self.violations) - 1
            lines.append(
                f"{len(self.violations):,} violations; the first:" if more else "violation:"
            )
            lines.append(str(first))
        return "\n".join(lines)


def timer_gap_warning(gaps: int, first: str) -> str:
    """What a search that may have skipped timer orders says of them."""
    transitions = f"{gaps:,} transition" + ("s" if gaps > 1 else "")
    return (
        f"timer orders maybe not explored: {transitions} set a timer for less time than "
        f"one its entity held from an earlier message; live, either can fire first, "
        f"depending on when that message came, and this search may take one order only. "
        f"The first: {first}"
    )


class _Stop(Exception):
    def __init__(self, reason: Stopped) -> None:
        super().__init__(reason)
        self.reason: Stopped = reason


class _Budget:
    """Looks at the clock every few transitions: the timeout, and progress reports."""

    __slots__ = (
        "deadline",
        "every",
        "last_report",
        "looked",
        "printing",
        "progress",
        "started",
        "worlds_then",
    )

    def __init__(self, timeout: float | None, progress: bool | None) -> None:
        self.started = self.last_report = self.looked = time.perf_counter()
        # Transitions between looks at the clock: from 1, doubled while looks come
        # quickly, up to _TICK; halved when they come slowly (a slow invariant or
        # handler), so that a timeout or a progress report is late by little.
        self.every = 1
        self.deadline = math.inf if timeout is None else self.started + timeout
        self.progress = progress  # None: print on a terminal, once the search runs long
        self.printing = False
        self.worlds_then = 0

    def tick(self, result: Exploration, frontier: int, depth: int) -> None:
        """A look at the clock (every ``every`` transitions): the deadline, progress."""
        now = time.perf_counter()
        since, self.looked = now - self.looked, now
        if since < _LOOK_EVERY / 4:
            self.every = min(_TICK, self.every * 2)
        elif since > _LOOK_EVERY:
            self.every = max(1, self.every // 2)
        if now >= self.deadline:
            raise _Stop("timeout")
        if now - self.last_report < _PROGRESS_EVERY:
            return
        rate = (result.unique_states - self.worlds_then) / (now - self.last_report)
        self.last_report, self.worlds_then = now, result.unique_states
        worlds = result.unique_states
        log(
            "exploring",
            worlds=worlds,
            worlds_per_second=round(rate),
            frontier=frontier,
            depth=depth,
        )
        if self.progress is None:
            self.printing = now - self.started >= _QUIET_FOR and sys.stderr.isatty()
        elif self.progress:
            self.printing = True
        if self.printing:
            end = "\r" if sys.stderr.isatty() else "\n"
            sys.stderr.write(
                f"exploring: {result.unique_states:,} worlds, {rate:,.0f} worlds/s, "
                f"frontier {frontier:,}, depth {depth:,}   {end}"
            )
            sys.stderr.flush()

    def finish(self, result: Exploration) -> None:
        if self.printing:
            sys.stderr.write(f"explored: {result!r}\n")
            sys.stderr.flush()


# A depth-first frame is a list (made once per world, read in the search's inner loop):
_WORLD, _FINGERPRINT, _SLEEP, _TODO, _NEXT, _ACTIONS, _DEPTH = range(7)
# the world, its fingerprint, its sleep set (SleepMasks bits: those taken from here join
# it), the actions to take, the index of the next, every action enabled, its depth.


@dataclass
class _Search:
    network: Network
    invariants: Sequence[Property]
    final_checks: Sequence[Property]
    max_depth: int | None
    stop_at_first_violation: bool
    count_paths: bool = False
    failures: Failures = "dead_letter"
    max_worlds: float = math.inf
    budget: _Budget = field(default_factory=lambda: _Budget(None, False))
    symmetry: Symmetry | None = None  # with it: one world per renaming class, breadth-first
    result: Exploration = field(default_factory=Exploration)
    edges: dict[bytes, list[bytes]] = field(default_factory=dict)
    finals: dict[bytes, World] = field(default_factory=dict)  # quiescent world -> its outcome
    parents: dict[bytes, tuple[bytes | None, Action | None]] = field(default_factory=dict)
    final_keys: set[bytes] = field(default_factory=set)  # with symmetry: classes of finals seen
    activations: Activations = field(default_factory=Activations)
    known_actions: dict[bytes, Action] = field(default_factory=dict)  # deliveries, by key

    def trace_to(self, fingerprint: bytes) -> tuple[Action, ...]:
        actions: list[Action] = []
        parent, action = self.parents[fingerprint]
        while action is not None and parent is not None:
            actions.append(action)
            parent, action = self.parents[parent]
        return tuple(reversed(actions))

    def check(self, world: World, checks: Sequence[Property], reached: bytes) -> None:
        """Run ``checks`` on ``world``, reached as the world fingerprinted ``reached``."""
        for name, detail in failed_checks(world, checks, lambda: self.trace_to(reached)):
            trace = self.trace_to(reached)
            self.result.violations.append(Violation(name, world, trace, detail))
            if self.stop_at_first_violation:
                raise _Stop("violation")

    def key(self, world: World) -> bytes:
        """What identifies ``world`` in this search: its fingerprint, up to symmetry if declared."""
        return world.fingerprint if self.symmetry is None else self.symmetry.fingerprint(world)

    def discovered(
        self, world: World, fingerprint: bytes, parent: bytes | None, action: Action | None
    ) -> None:
        """A world seen for the first time: record it, check it, note it if final."""
        if self.result.unique_states >= self.max_worlds:
            raise _Stop("max_worlds")  # only when there is one more: a space of N is complete
        self.parents[fingerprint] = (parent, action)
        self.result.unique_states += 1
        if self.invariants or (not world.envelopes and not world.pending):
            self.judge(world, fingerprint)

    def judge(self, world: World, fingerprint: bytes) -> None:
        """Check a world seen for the first time; note it if final."""
        if self.invariants:
            self.check(world, self.invariants, fingerprint)
        if not world.envelopes and not world.pending:  # quiescent
            final = world.outcome()
            self.finals[fingerprint] = final
            if self.symmetry is None:
                new = final not in self.result.traces
            else:  # one final world per renaming class: the first found
                final_key = self.symmetry.fingerprint(final)
                new = final_key not in self.final_keys
                self.final_keys.add(final_key)
            if new:
                self.result.final_worlds.append(final)
                self.result.traces[final] = self.trace_to(fingerprint)
                self.check(final, self.final_checks, fingerprint)

    def transition(self, world: World, fingerprint: bytes, action: Action) -> World:
        """The world after ``action`` (the caller counts the transition)."""
        gaps = self.activations.timer_gaps
        child, failure = step(world, action, self.network, activations=self.activations)
        if self.activations.timer_gaps != gaps and self.result.timer_gap_trace is None:
            gap = self.activations.timer_gap
            assert gap is not None
            self.result.timer_gap = told_gap(gap)  # the first this search met
            self.result.timer_gap_trace = (*self.trace_to(fingerprint), action)
        if failure is not None and self.failures == "violation":
            trace = (*self.trace_to(fingerprint), action)
            detail = failure_report(failure, action, trace)
            self.result.violations.append(Violation("activation failed", child, trace, detail))
            if self.stop_at_first_violation:
                raise _Stop("violation")
        return child

    def depth_first(self, initial: World) -> None:
        # Each stored world: the sleep set it was last entered with, and (under max_depth
        # only, where a shallower path may reach further) its depth then.
        stored: dict[bytes, tuple[int | tuple[int, ...], int]] = {}
        # Most worlds share a few (sleep set, depth) pairs: stored once each, not once
        # per world, they take a third of the memory a stored world needs off it.
        shared: dict[tuple[int | tuple[int, ...], int], tuple[int | tuple[int, ...], int]] = {}
        max_depth = self.max_depth
        limited = max_depth is not None

        network, known, activations = self.network, self.known_actions, self.activations
        result, parents, discovered = self.result, self.parents, self.discovered
        judge, invariants, max_worlds = self.judge, self.invariants, self.max_worlds
        masks = SleepMasks(activations)
        number, asleep_after = masks.number, masks.after

        def enter(
            world: World, sleep: int, depth: int, actions: list[Action] | None = None
        ) -> list[Any] | None:
            """A frame for ``world``, reached with ``sleep`` asleep; None if nothing to take.

            ``actions``: those enabled in ``world``, when the caller knows them.
            """
            fingerprint = world.fingerprint
            before = stored.get(fingerprint)
            if before is None or (limited and depth < before[1]):
                if (
                    before is not None
                    and max_depth is not None
                    and before[1] >= max_depth
                    and not world.quiescent
                ):
                    result.truncated -= 1  # cut short there, and now reached in fewer steps
                entry = (packed(sleep), depth if limited else 0)
                stored[fingerprint] = shared.setdefault(entry, entry)
                if world.quiescent:
                    return None
                if actions is None:
                    actions = enabled(world, network, known)
                    number(actions)
                if max_depth is not None and depth >= max_depth:
                    result.truncated += 1
                    return None
                todo = [a for a in actions if not sleep & a.bit] if sleep else actions
                return [world, fingerprint, sleep, todo, 0, actions, depth]
            slept_before, first_depth = unpacked(before[0]), before[1]
            if max_depth is not None and depth >= max_depth:
                return None  # (counted as cut short when first entered there, if it was)
            if not slept_before & ~sleep:
                return None  # everything taken from here before is asleep now too
            # Actions asleep last time but awake now were never taken from here.
            if actions is None:
                actions = enabled(world, network, known)
                number(actions)
            todo = [a for a in actions if a.bit & slept_before and not a.bit & sleep]
            if not todo:
                return None
            entry = (packed(slept_before & sleep), first_depth)
            stored[fingerprint] = shared.setdefault(entry, entry)
            taken_before = 0
            for action in actions:
                if not action.bit & slept_before:
                    taken_before |= action.bit
            return [world, fingerprint, sleep | taken_before, todo, 0, actions, depth]

        discovered(initial, initial.fingerprint, None, None)
        first = enter(initial, 0, 0)
        stack = [first] if first is not None else []
        transitions = 0  # kept here, and in the result at each tick and at the end
        budget = self.budget
        next_look = budget.every
        try:
            while stack:
                frame = stack[-1]
                todo = frame[_TODO]
                index = frame[_NEXT]
                if index == len(todo):
                    stack.pop()
                    continue
                action = todo[index]
                frame[_NEXT] = index + 1
                transitions += 1
                if transitions >= next_look:
                    result.transitions = transitions
                    budget.tick(result, len(stack), frame[_DEPTH])
                    next_look = transitions + budget.every
                world = frame[_WORLD]
                # A delivery planned first: a world been to, with nothing new to take, is
                # not made again.
                plan = None if limited else plan_delivery(world, action, activations)
                sleep = frame[_SLEEP]
                child_sleep = asleep_after(sleep, action, world, plan) if sleep else 0
                frame[_SLEEP] = sleep | action.bit
                if plan is None:
                    child = self.transition(world, frame[_FINGERPRINT], action)
                    fingerprint = child.fingerprint
                    before = stored.get(fingerprint)
                    following = actions_after(world, frame[_ACTIONS], action, child)
                else:
                    fingerprint = plan.fingerprint
                    before = stored.get(fingerprint)
                    if before is not None and not unpacked(before[0]) & ~child_sleep:
                        continue  # been there, and what slept then sleeps now
                    child, following = make_planned(world, action, plan, frame[_ACTIONS])
                if before is not None or limited:
                    if fingerprint not in parents:
                        discovered(child, fingerprint, frame[_FINGERPRINT], action)
                    entered = enter(child, child_sleep, frame[_DEPTH] + 1, following)
                    if entered is not None:
                        stack.append(entered)
                    continue
                # A new world: what discovered() and enter() do for one, without the calls.
                if result.unique_states >= max_worlds:
                    raise _Stop("max_worlds")
                parents[fingerprint] = (frame[_FINGERPRINT], action)
                result.unique_states += 1
                quiescent = not child.envelopes and not child.pending
                if invariants or quiescent:
                    judge(child, fingerprint)
                entry = (child_sleep if child_sleep < PACK_FROM else packed(child_sleep), 0)
                stored[fingerprint] = shared.setdefault(entry, entry)
                if quiescent:
                    continue
                if following is None:
                    following = enabled(child, network, known)
                    number(following)
                if child_sleep:
                    todo = [a for a in following if not child_sleep & a.bit]
                else:
                    todo = following
                stack.append(
                    [child, fingerprint, child_sleep, todo, 0, following, frame[_DEPTH] + 1]
                )
        finally:
            result.transitions = transitions

    def paths(self, initial: World) -> dict[World, int] | None:
        """How many delivery orders reach each final world, over the state graph.

        Counted in topological order (Kahn), never by enumerating paths; None
        if the graph has a cycle (a world that can come back: infinitely many).
        """
        indegree: dict[bytes, int] = {}
        for targets in self.edges.values():
            for target in targets:
                indegree[target] = indegree.get(target, 0) + 1
        if initial.fingerprint in indegree:  # every world is reached from it: a cycle
            return None
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
        key = self.key
        start = key(initial)
        self.discovered(initial, start, None, None)
        queue = deque([(initial, start, 0)])
        next_look = self.budget.every
        while queue:
            world, fingerprint, depth = queue.popleft()
            if world.quiescent:
                continue
            if self.max_depth is not None and depth >= self.max_depth:
                self.result.truncated += 1
                continue
            targets = self.edges.setdefault(fingerprint, []) if self.count_paths else None
            for action in enabled(world, self.network, self.known_actions):
                self.result.transitions += 1
                child = self.transition(world, fingerprint, action)
                reached = key(child)
                if targets is not None:
                    targets.append(reached)
                if reached not in self.parents:
                    self.discovered(child, reached, fingerprint, action)
                    queue.append((child, reached, depth + 1))
                if self.result.transitions >= next_look:
                    self.budget.tick(self.result, len(queue), depth)
                    next_look = self.result.transitions + self.budget.every


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
    max_worlds: int | None = None,
    timeout: float | None = None,
    progress: bool | None = None,
    symmetric: Iterable[Iterable[Any]] | None = None,
    workers: int = 1,
) -> Exploration:
    """Explore every world reachable from ``initial``; see :func:`Simulation.explore`."""
    if search not in ("depth", "breadth"):
        raise InvalidArgumentError(f"search must be 'depth' or 'breadth', got {describe(search)}")
    if max_depth is not None and (type(max_depth) is not int or max_depth < 0):
        raise InvalidArgumentError(
            f"max_depth must be an int >= 0 or None, got {describe(max_depth)}"
        )
    if max_worlds is not None and (type(max_worlds) is not int or max_worlds < 1):
        raise InvalidArgumentError(
            f"max_worlds must be an int >= 1 or None (no limit), got {describe(max_worlds)}"
        )
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout < math.inf):
        raise InvalidArgumentError(
            f"timeout must be a number of seconds > 0 or None (no limit), got {describe(timeout)}"
        )
    for name, flag in (
        ("stop_at_first_violation", stop_at_first_violation),
        ("count_paths", count_paths),
    ):
        if type(flag) is not bool:
            raise InvalidArgumentError(f"{name} must be True or False, got {describe(flag)}")
    invariants, final = _checks("invariants", invariants), _checks("final", final)
    if progress is not None and type(progress) is not bool:
        raise InvalidArgumentError(
            f"progress must be True, False or None (on a terminal, for long searches), "
            f"got {describe(progress)}"
        )
    symmetry = None
    if symmetric is not None:
        groups = check_symmetric(symmetric)
        if count_paths:
            raise InvalidArgumentError(
                "count_paths counts the delivery orders of each world, which symmetry "
                "merges: use one or the other"
            )
        symmetry = Symmetry(groups, network) if groups else None
    if type(workers) is not int or workers != 1:  # True == 1, but is no number of processes
        from simulation._parallel import check_workers  # it imports this module

        check_workers(workers, count_paths)
    searcher = _Search(
        network,
        invariants,
        final,
        max_depth,
        stop_at_first_violation,
        count_paths,
        failures=check_failures(failures),
        max_worlds=math.inf if max_worlds is None else max_worlds,
        budget=_Budget(timeout, progress),
        symmetry=symmetry,
    )
    started = time.perf_counter()
    # A search makes millions of small containers and no reference cycles;
    # the cyclic collector would keep rescanning them for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Sleep sets are sound for concrete worlds, not for classes of them: with
        # symmetry every transition of every new world is taken.
        if workers > 1:
            searcher.result = _explore_parallel(initial, workers, searcher)
        elif search == "depth" and not count_paths and symmetry is None:
            searcher.depth_first(initial)
        else:
            searcher.breadth_first(initial)
    except _Stop as stop:
        searcher.result.stopped = stop.reason
    else:
        if count_paths:
            searcher.result.path_counts = searcher.paths(initial)
    finally:
        if collecting:
            gc.enable()
        if workers <= 1:
            searcher.result.handler_calls = searcher.activations.calls
            searcher.result.timer_gaps = searcher.activations.timer_gaps
    searcher.result.seconds = time.perf_counter() - started
    searcher.budget.finish(searcher.result)
    return searcher.result


def _checks(name: str, checks: object) -> tuple[Property, ...]:
    """``checks`` as a tuple of callables, or a clear refusal."""
    if callable(checks) or isinstance(checks, (str, bytes)):
        raise InvalidArgumentError(
            f"{name} must be a list of checks (functions of a World), got {describe(checks)}: "
            f"put a single check in a list"
        )
    try:
        found: tuple[Any, ...] = tuple(cast(Iterable[Any], checks))
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be a list of checks (functions of a World), got {describe(checks)}"
        ) from None
    for check in found:
        if not callable(check):
            raise InvalidArgumentError(
                f"each of {name} must be a function of a World (returning False or raising "
                f"AssertionError when the world fails it), got {describe(check)}"
            )
    return found


def _explore_parallel(initial: World, workers: int, searcher: _Search) -> Exploration:
    from simulation import _parallel, _worker  # they import this module

    config = _worker.Config(
        searcher.network,
        searcher.invariants,
        searcher.final_checks,
        searcher.max_depth,
        searcher.failures,
        searcher.symmetry,
        _parallel.deadline_after(searcher.budget),
    )
    return _parallel.explore_parallel(
        initial,
        workers,
        config,
        searcher.budget,
        searcher.stop_at_first_violation,
        searcher.max_worlds,
    )
