"""Single executions chosen step by step: seeded random walks and Hypothesis schedules.

For spaces too big to enumerate. A schedule is the list of choices made, each
an index into the deterministic list of actions possible at that step, so the
same seed (or the same Hypothesis example) gives the same execution.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pachyderm.errors import InvalidArgumentError, describe
from simulation._network import Network, check_network, initial_world
from simulation._render import counted, sequence_diagram, trace_text
from simulation._step import Action, enabled, step
from simulation._world import World

__all__ = ["Execution", "executions", "walk"]

DEFAULT_MAX_STEPS = 1_000


@dataclass(frozen=True, repr=False)
class Execution:
    """One path: the actions taken and every world along the way (first: the start).

    ``str`` is the numbered trace; so is what Hypothesis prints for a failing
    example (through ``_repr_pretty_``, which its printer and IPython use).
    """

    trace: tuple[Action, ...]
    worlds: tuple[World, ...]
    seed: int | None = None

    @property
    def world(self) -> World:
        """Where the execution ended."""
        return self.worlds[-1]

    def __str__(self) -> str:
        origin = f" (seed {self.seed})" if self.seed is not None else ""
        return f"execution of {counted(len(self.trace), 'step')}{origin}:\n{trace_text(self.trace)}"

    def __repr__(self) -> str:
        origin = f", seed {self.seed}" if self.seed is not None else ""
        return f"<Execution of {counted(len(self.trace), 'step')}{origin}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    @property
    def diagram(self) -> str:
        """The trace as a Mermaid sequence diagram."""
        return sequence_diagram(self.trace)


def execute(
    initial: World,
    network: Network,
    choose: Callable[[int], int],
    max_steps: int = DEFAULT_MAX_STEPS,
    seed: int | None = None,
) -> Execution:
    """Follow ``choose(number_of_actions) -> index`` until quiescence or ``max_steps``."""
    worlds = [initial]
    trace: list[Action] = []
    current = initial
    while not current.quiescent and len(trace) < max_steps:
        actions = enabled(current, network)
        action = actions[choose(len(actions))]
        current, _ = step(current, action, network)  # a failure is a dead letter in the world
        trace.append(action)
        worlds.append(current)
    return Execution(tuple(trace), tuple(worlds), seed)


def walk(
    envelopes: Iterable[tuple[Any, Any]],
    world: World | None = None,
    *,
    seed: int,
    network: Network = "unordered",
    drops: int = 0,
    duplicates: int = 0,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Execution:
    """One random execution; the same seed replays it exactly."""
    if type(seed) is not int:
        raise InvalidArgumentError(f"a walk's seed must be an int, got {describe(seed)}")
    network = check_network(network)
    _check_max_steps(max_steps)
    rng = random.Random(seed)
    initial = initial_world(envelopes, world, network, drops, duplicates)
    return execute(initial, network, rng.randrange, max_steps, seed)


def executions(
    envelopes: Iterable[tuple[Any, Any]],
    world: World | None = None,
    *,
    network: Network = "unordered",
    drops: int = 0,
    duplicates: int = 0,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> st.SearchStrategy[Execution]:
    """A Hypothesis strategy of whole executions, fault choices included.

    Hypothesis shrinks a failing execution towards fewer steps and earlier
    choices (in the deterministic action order: deliveries before faults), so
    a failure is reported with a small schedule.
    """
    network = check_network(network)
    _check_max_steps(max_steps)
    initial = initial_world(list(envelopes), world, network, drops, duplicates)

    @st.composite
    def draw_execution(draw: st.DrawFn) -> Execution:
        return execute(initial, network, lambda count: draw(st.integers(0, count - 1)), max_steps)

    return draw_execution()


def _check_max_steps(max_steps: object) -> None:
    if type(max_steps) is not int or max_steps < 0:
        raise InvalidArgumentError(
            f"max_steps must be an int >= 0 (actions to take at most), got {describe(max_steps)}"
        )
