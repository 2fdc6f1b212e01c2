"""``Simulation``: the deterministic ecosystem, and its exhaustive exploration."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from pachyderm.errors import ExplorationError, PachydermError
from simulation._explore import Exploration, Property, Search, explore_from
from simulation._network import Network, check_network, initial_world, outside_envelopes
from simulation._schedule import executions, walk
from simulation._step import Action, StepFailure, deliver, step
from simulation._world import World

__all__ = ["Simulation"]

DEFAULT_MAX_STEPS = 100_000


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
    ) -> World:
        """Deliver every message, oldest first (global FIFO), until none is in flight.

        Raises:
            ExplorationError: an activation raised; it shows the trace and every
                message that entity received.
            PachydermError: more than ``max_steps`` deliveries (a system that never
                goes quiet).
        """
        start = world or World()
        queue = deque([*start.envelopes, *outside_envelopes(envelopes)])
        current = World(start.states, (), start.drops_left, start.duplicates_left)
        trace: list[Action] = []
        while queue:
            if len(trace) >= max_steps:
                raise PachydermError(
                    f"the system was still busy after max_steps={max_steps:,} deliveries; "
                    f"it may never go quiet. Raise max_steps, or look at the last deliveries."
                )
            action = Action("deliver", queue.popleft())
            trace.append(action)
            try:
                states, sent = deliver(current, action.envelope)
            except StepFailure as failure:
                recipient = action.envelope.recipient
                received = [a.envelope.message for a in trace if a.envelope.recipient == recipient]
                raise ExplorationError(
                    recipient, action.envelope.message, failure.error, trace, received
                ) from failure.error
            queue.extend(sent)
            current = World(states, (), start.drops_left, start.duplicates_left)
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
    ) -> Exploration:
        """Every world reachable under ``network``, each visited once.

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

        Raises:
            ExplorationError: an activation raised on some path.
        """
        network = check_network(network)
        initial = initial_world(envelopes, world, network, drops, duplicates)
        return explore_from(
            initial,
            network=network,
            invariants=invariants,
            final=final,
            search=search,
            max_depth=max_depth,
            stop_at_first_violation=stop_at_first_violation,
            count_paths=count_paths,
        )

    @staticmethod
    def exhaust(
        envelopes: Iterable[tuple[Any, Any]], world: World | None = None, **options: Any
    ) -> list[World]:
        """The distinct final worlds over every delivery order (options as :meth:`explore`)."""
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
    ) -> World:
        """The world a trace leads to, from the same start as the search that found it."""
        network = check_network(network)
        current = initial_world(envelopes, world, network, drops, duplicates)
        for action in trace:
            current = step(current, action, network)
        return current
