"""``Simulation``: the deterministic ecosystem, and its exhaustive exploration."""

from __future__ import annotations

import difflib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Never

from pachyderm.errors import (
    ExplorationError,
    InvalidArgumentError,
    PachydermError,
    TimerOrderWarning,
    describe,
    shown,
)
from simulation._explore import (
    WORLD_SHOWN,
    Exploration,
    Failures,
    Property,
    Search,
    check_failures,
    explore_from,
    timer_gap_warning,
)
from simulation._network import Network, check_network, initial_world
from simulation._render import counted
from simulation._schedule import executions, walk
from simulation._step import Action, enabled, step
from simulation._world import World

__all__ = ["Simulation"]

DEFAULT_MAX_STEPS = 100_000


def _users_line() -> int:
    """The stack level of the first caller outside ``simulation`` and the pytest plugin
    (the user's own line, for a warning)."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        ("simulation.", "pachyderm.pytest_plugin")
    ):
        level, frame = level + 1, frame.f_back
    return level


def _named_parameters(function: Callable[..., Any]) -> list[str]:
    """The names ``function`` takes as keywords."""
    parameters = inspect.signature(function).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [parameter.name for parameter in parameters if parameter.kind in named]


def _unknown_options(
    unknown: dict[str, Any], function: Callable[..., Any], called: str | None = None
) -> InvalidArgumentError:
    """The error for options ``function`` (``called`` so by the user) does not take,
    naming the nearest it does."""
    known = _named_parameters(function)
    shown = []
    for name in unknown:
        near = difflib.get_close_matches(name, known, n=1)
        shown.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return InvalidArgumentError(
        f"{called or function.__qualname__}() takes no option {', '.join(shown)}; "
        f"it takes: {', '.join(known)}"
    )


_SHOWN_STEPS = 10  # of a run that never goes quiet: its last steps


class Simulation:
    """A deterministic ecosystem whose worlds are plain values.

    ``run`` delivers in send order until nothing is in flight; ``exhaust`` and
    ``explore`` try every order the network allows.
    """

    @staticmethod
    def fresh() -> World:
        """The empty world: no entity activated, nothing in flight."""
        return World()

    @staticmethod
    def run(
        envelopes: Iterable[tuple[Any, Any]],
        world: World | None = None,
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        failures: Failures = "dead_letter",
        **unknown: Never,
    ) -> World:
        """Deliver every message, oldest first, until nothing is in flight or pending.

        When no message is in flight, virtual time moves on to the earliest
        pending timer, which fires. It takes the same steps as exploration,
        in send order: the order a live ecosystem with one sender gives.

        Args:
            failures: ``"dead_letter"`` (as live: the message is kept in the
                world's dead letters, the entity keeps its state and goes on)
                or ``"violation"`` (raise :class:`ExplorationError`).

        Raises:
            ExplorationError: with ``failures="violation"``, an activation
                failed; it shows the trace and every message that entity received.
            PachydermError: more than ``max_steps`` steps (a system that never
                goes quiet).
        """
        if unknown:
            raise _unknown_options(unknown, Simulation.run)
        check_failures(failures)
        if type(max_steps) is not int or max_steps < 1:
            raise InvalidArgumentError(f"max_steps must be an int >= 1, got {describe(max_steps)}")
        current = initial_world(envelopes, world, "unordered", 0, 0)
        trace: list[Action] = []
        set_order: dict[bytes, int] = {}  # timers, in the order they were set
        while not current.quiescent:
            if len(trace) >= max_steps:
                last = len(trace) - len(trace[-_SHOWN_STEPS:]) + 1
                steps = "\n".join(
                    f"{number}. {action}"
                    for number, action in enumerate(trace[-_SHOWN_STEPS:], last)
                )
                raise PachydermError(
                    f"the system was still busy after {counted(max_steps, 'step')} "
                    f"(max_steps); it may never go quiet. Raise max_steps, or look at the last "
                    f"steps:\n{steps}\nworld now: {shown(current, WORLD_SHOWN)}"
                )
            for timer in current.pending:  # (an entity's ties keep their order there)
                set_order.setdefault(timer.key, len(set_order))
            action = _next_in_send_order(current, set_order)
            trace.append(action)
            current, failure = step(current, action, "unordered")
            if failure is not None and failures == "violation":
                recipient = action.recipient
                received = [a.message for a in trace if a.activates and a.recipient == recipient]
                raise ExplorationError(
                    recipient, action.message, failure.error, trace, received
                ) from failure.error
        return current

    @staticmethod
    def explore(
        envelopes: Iterable[tuple[Any, Any]],
        world: World | None = None,
        *,
        invariants: Sequence[Property] = (),
        final: Sequence[Property] = (),
        network: Network = "unordered",
        drops: int = 0,
        duplicates: int = 0,
        max_depth: int | None = None,
        search: Search = "depth",
        stop_at_first_violation: bool = True,
        count_paths: bool = False,
        failures: Failures = "dead_letter",
        max_worlds: int | None = None,
        timeout: float | None = None,
        progress: bool | None = None,
        symmetric: Iterable[Iterable[Any]] | None = None,
        workers: int = 1,
        **unknown: Never,  # (no value fits Never: type checkers refuse any other option)
    ) -> Exploration:
        """Every world reachable under ``network``, each visited once.

        The result says whether the search was ``complete``; budgets stop it
        early (``stopped`` says which), keeping what was found so far.

        Args:
            invariants: checks on every reachable world (return False or raise
                AssertionError to fail).
            final: checks on every final world (nothing in flight).
            network: ``"unordered"`` (any message next) or ``"fifo"`` (per
                sender->receiver order, as the live ecosystems guarantee).
            drops, duplicates: how many messages may be lost, or delivered twice,
                on any one path.
            max_depth: stop following a path after this many steps.
            search: ``"depth"`` (with partial-order reduction) or ``"breadth"``
                (shortest counterexamples).
            count_paths: also count, for each final world, how many delivery
                orders lead to it (``path_counts``), over the state graph. This
                takes every transition: the search is breadth-first, unreduced.
                With ``max_depth``, the orders within it (``{}`` if none ends
                within it); None if a budget or a violation stopped the search.
            failures: ``"dead_letter"`` (as live: a failed activation's message
                joins the world's dead letters, the entity keeps its state and
                goes on) or ``"violation"`` (each failure is a violation, with
                the trace and every message that entity received on it).
            max_worlds: stop after visiting this many distinct worlds (the
                same worlds every time: the search order is deterministic).
            timeout: stop after about this many seconds (with ``workers``, once
                the checks of the level at hand are done).
            progress: report worlds, worlds/s, frontier and depth every
                second on stderr. ``None`` (default): only on a terminal, once
                the search has run for two seconds. Every second's figures
                are also a structlog ``exploring`` event, when logging is configured.
            symmetric: groups of interchangeable entities of one class, like
                ``[[Replica(0), Replica(1), Replica(2)]]``: worlds that differ
                only by renaming them are explored once, and counted once
                (``final_worlds`` keeps one of each class). Sound only if they
                really are interchangeable: handlers that treat every id alike,
                a start that is the same under renaming, and invariants and
                final checks that treat them alike too (each runs on one world
                of each class: a check that names one of them, such as
                ``state_of(Replica(1)) <= state_of(Replica(0))``, may miss a
                violation in another renaming). The search is then
                breadth-first without sleep sets, and ``count_paths`` is refused.
            workers: processes to search with. 1 (default): this process.
                More: forked worker processes share the worlds (Linux and
                macOS; refused with ``count_paths``). They find the same worlds,
                final worlds and violations as one process, level by level
                whatever ``search`` says: a counterexample is a shortest one,
                the same every run. ``transitions``, ``timer_gaps``, which
                timer gap is told first, and the order of ``final_worlds``
                may differ from one process's.

        Warns:
            TimerOrderWarning: a message set a timer for less time than one
                its entity held from an earlier message; live, either can fire
                first, depending on when that message came, and the search may
                have taken one order only (``timer_gaps`` and ``timer_gap`` in
                the result say more).
        """
        if unknown:
            raise _unknown_options(unknown, Simulation.explore)
        network = check_network(network)
        initial = initial_world(envelopes, world, network, drops, duplicates)
        result = explore_from(
            initial,
            network=network,
            invariants=invariants,
            final=final,
            search=search,
            max_depth=max_depth,
            stop_at_first_violation=stop_at_first_violation,
            count_paths=count_paths,
            failures=failures,
            max_worlds=max_worlds,
            timeout=timeout,
            progress=progress,
            symmetric=symmetric,
            workers=workers,
        )
        if result.timer_gaps:
            warnings.warn(
                TimerOrderWarning(timer_gap_warning(result.timer_gaps, result.timer_gap)),
                stacklevel=_users_line(),
            )
        return result

    @staticmethod
    def exhaust(
        envelopes: Iterable[tuple[Any, Any]], world: World | None = None, **options: Any
    ) -> list[World]:
        """The distinct final worlds over every delivery order (options as :meth:`explore`)."""
        known = _named_parameters(Simulation.explore)
        unknown = {name: value for name, value in options.items() if name not in known}
        if unknown:
            raise _unknown_options(unknown, Simulation.explore, "Simulation.exhaust")
        return Simulation.explore(envelopes, world, **options).final_worlds

    walk = staticmethod(walk)
    executions = staticmethod(executions)

    @staticmethod
    def replay(
        envelopes: Iterable[tuple[Any, Any]],
        trace: Sequence[Action],
        world: World | None = None,
        *,
        network: Network = "unordered",
        drops: int = 0,
        duplicates: int = 0,
        **unknown: Never,
    ) -> World:
        """The world a trace leads to, from the same start as the search that found it.

        Raises:
            InvalidArgumentError: ``trace`` is not a sequence of actions (from an
                exploration's ``traces`` or a violation's ``trace``), or one of
                them cannot be taken where the trace has led: the start, the
                network or the budgets are not the search's.
        """
        if unknown:
            raise _unknown_options(unknown, Simulation.replay)
        network = check_network(network)
        current = initial_world(envelopes, world, network, drops, duplicates)
        if isinstance(trace, (str, bytes)) or not isinstance(trace, Sequence):
            raise InvalidArgumentError(
                f"trace must be a sequence of actions (an exploration's traces[world], a "
                f"violation's trace), got {describe(trace)}"
            )
        for number, action in enumerate(trace, 1):
            if not isinstance(action, Action):
                raise InvalidArgumentError(
                    f"step {number} of the trace must be an Action, got {describe(action)}"
                )
            found = next((a for a in enabled(current, network) if a == action), None)
            if found is None:
                raise InvalidArgumentError(
                    f"step {number} of {len(trace)} of the trace, {action}, cannot be taken in "
                    f"the world it has led to, {describe(current)}: replay it from the start, "
                    f"network ({network!r}) and budgets (drops, duplicates) of the search that "
                    f"found it"
                )
            current, _ = step(current, found, network)
        return current


def _next_in_send_order(world: World, set_order: dict[bytes, int]) -> Action:
    """The oldest message in flight; with none, the timer due first (of those due at once,
    the first set, as live)."""
    if world.envelopes:
        index = min(range(len(world.envelopes)), key=lambda i: world.envelopes[i].order)
        return Action("deliver", world.envelopes[index], index)
    pending = world.pending
    index = min(range(len(pending)), key=lambda i: (pending[i].due, set_order[pending[i].key]))
    return Action("fire", None, index, pending[index])
