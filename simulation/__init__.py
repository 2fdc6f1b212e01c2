"""The Simulation ecosystem: deterministic runs and exhaustive exploration of delivery orders.

    >>> from simulation import Simulation
    >>> world = Simulation.run([(counter, "increment")])        # doctest: +SKIP
    >>> finals = Simulation.exhaust([(counter, "a"), (counter, "b")])  # doctest: +SKIP

Worlds are plain immutable values; the activation step is the one the live
ecosystems run.
"""

from simulation._explore import Exploration, Violation
from simulation._simulation import Simulation
from simulation._step import Action
from simulation._world import DeadLetter, Envelope, PendingTimer, World

__all__ = [
    "Action",
    "DeadLetter",
    "Envelope",
    "Exploration",
    "PendingTimer",
    "Simulation",
    "Violation",
    "World",
]
