"""One process of a parallel search: the worlds it owns, and the worlds it expands.

The search goes level by level (every world at depth d, then d + 1). Each
world has an *owner*, chosen by its fingerprint, that remembers whether it was
seen and with which sleep set. A worker expands the worlds it holds; for each
child it sends the owner only the fingerprint, the child's sleep set and a
tie-break, never the world. The owner merges what every worker sent (sleep
sets intersect, the smallest tie-break wins) and tells the winning worker to
take the world: new, or seen before but now with actions awake that slept
then (the same rule as the depth-first search's). So worlds stay where they
were made, and move only when the coordinator evens out the load.

Everything that decides a result is taken from data, not from timing or from
which worker holds what: the tie-break is (parent fingerprint, action's place
among the parent's actions), final worlds keep the one at the smallest
(depth, fingerprint), and violations are ordered the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from simulation._explore import Failures, Property, failed_checks, failure_report
from simulation._network import Network
from simulation._step import Action, Activations, enabled, step, still_asleep
from simulation._symmetry import Symmetry
from simulation._transfer import dumps, loads
from simulation._world import World

__all__ = ["Config", "Node", "Worker", "owner_of", "trace_of"]

_TICK = 1024  # transitions between looks at the clock

Node = tuple[Any, Action] | None  # a trace as a linked list: (the parent's node, the action)
Tie = tuple[bytes, int]  # (parent fingerprint, action's place among the parent's actions)
Order = tuple[int, bytes, str]  # (depth, fingerprint, property): orders violations and finals
Decision = tuple[bytes, AbstractSet[bytes], Any]  # (key, sleep set, asleep before or None: new)
_EMPTY: frozenset[bytes] = frozenset()
_ROOT: Tie = (b"", -1)


@dataclass(frozen=True)
class Config:
    """What every worker searches with (inherited through fork, never pickled)."""

    network: Network
    invariants: Sequence[Property]
    final_checks: Sequence[Property]
    max_depth: int | None
    failures: Failures
    symmetry: Symmetry | None
    deadline: float  # time.monotonic() after which expanding stops


def owner_of(key: bytes, workers: int) -> int:
    return int.from_bytes(key[-4:], "little") % workers


def trace_of(node: Node) -> tuple[Action, ...]:
    actions: list[Action] = []
    while node is not None:
        node, action = node
        actions.append(action)
    return tuple(reversed(actions))


def node_of(trace: tuple[Action, ...]) -> Node:
    node: Node = None
    for action in trace:
        node = (node, action)
    return node


class Worker:
    """The state one worker process keeps between the coordinator's commands."""

    def __init__(self, index: int, workers: int, config: Config, initial: World | None) -> None:
        self.index = index
        self.workers = workers
        self.config = config
        # Sleep sets are sound for concrete worlds explored without a depth bound;
        # with symmetry or max_depth every transition is taken, as breadth-first does.
        self.reduce = config.symmetry is None and config.max_depth is None
        self.stored: dict[bytes, AbstractSet[bytes]] = {}  # owned keys -> asleep when taken
        self.shared: dict[frozenset[bytes], frozenset[bytes]] = {}  # one of each sleep set
        # Children made this level: key -> [world, node, sleep set, tie-break].
        self.candidates: dict[bytes, list[Any]] = {}
        self.own: list[tuple[bytes, AbstractSet[bytes], Tie]] = []  # arrivals this worker owns
        self.mine: list[Decision] = []  # the owner's decisions for the worlds made here
        self.new_keys: list[bytes] = []  # the keys new in the last decisions, for a budget cut
        # Taken this level: (world, key, node, sleep set, asleep before or None if new).
        self.taken: list[tuple[World, bytes, Node, AbstractSet[bytes], Any]] = []
        self.items: list[tuple[World, bytes, dict[bytes, Action], list[Any], Node, bool]] = []
        self.finals: dict[bytes, tuple[Order, World, Node]] = {}  # final key -> the first
        self.violations: list[tuple[Order, str, World, Node, str, bytes | None]] = []
        self.transitions = self.handler_calls = self.truncated = 0
        self.activations = Activations()
        self.known_actions: dict[bytes, Action] = {}  # deliveries made so far, by key
        if initial is not None:
            self.candidates[self.key(initial)] = [initial, None, _EMPTY, _ROOT]

    def key(self, world: World) -> bytes:
        symmetry = self.config.symmetry
        return world.fingerprint if symmetry is None else symmetry.fingerprint(world)

    # -- the owner's side -----------------------------------------------------------------

    def decide(self, arrivals: Sequence[bytes | None]) -> tuple[list[bytes | None], list[int], int]:
        """Merge every worker's arrivals for the keys this worker owns; say who takes what.

        Returns a decision blob per worker (None for this one's own), how many
        worlds each takes, and how many of those are new.
        """
        merged: dict[bytes, list[Any]] = {}
        index = self.index
        for key, sleep, tie in self.own:
            merged[key] = [sleep, tie, index]
        for generator, blob in enumerate(arrivals):
            if blob is None:
                continue
            for key, sleep, tie in loads(blob):
                entry = merged.get(key)
                if entry is None:
                    merged[key] = [sleep, tie, generator]
                else:
                    if entry[0]:
                        entry[0] = entry[0] & sleep
                    if tie < entry[1]:
                        entry[1], entry[2] = tie, generator
        decisions: list[list[Decision]] = [[] for _ in range(self.workers)]
        new_keys = self.new_keys = []
        stored = self.stored
        for key, (sleep, _, generator) in merged.items():
            before = stored.get(key)
            if before is None:
                frozen = frozenset(sleep) if sleep else _EMPTY
                stored[key] = self.shared.setdefault(frozen, frozen)
                decisions[generator].append((key, sleep, None))
                new_keys.append(key)
            elif not before <= sleep:  # some action asleep then is awake now
                frozen = frozenset(before & sleep)
                stored[key] = self.shared.setdefault(frozen, frozen)
                decisions[generator].append((key, sleep, before))
        self.own = []
        self.mine = decisions[index]
        blobs: list[bytes | None] = [dumps(part) for part in decisions]
        blobs[index] = None
        return blobs, [len(part) for part in decisions], len(new_keys)

    def newest(self) -> list[bytes]:
        """The keys new in the last decisions (asked only to cut the search at a budget)."""
        return self.new_keys

    # -- the expanding side ---------------------------------------------------------------

    def take(
        self, decisions: Sequence[bytes | None], depth: int, last: bytes | None = None
    ) -> tuple[int, int, int]:
        """Take the worlds the owners gave this worker, check them, and make them the items.

        With ``last`` (a budget ran out), only new worlds with keys up to it.
        Returns how many actions the items will take, how many items there
        are, and how many violations so far.
        """
        candidates = self.candidates
        taken = []
        for blob in decisions:
            for key, sleep, before in self.mine if blob is None else loads(blob):
                if last is not None and (before is not None or key > last):
                    continue
                world, node, _, _ = candidates[key]
                taken.append((world, key, node, sleep, before))
        candidates.clear()
        self.mine = []
        self.taken = taken
        return self.check(depth)

    def ship(self, plan: Sequence[tuple[int, int]]) -> list[bytes | None]:
        """Send other workers items worth ``plan``'s counts of actions, to even out the level."""
        shipments: list[bytes | None] = [None] * self.workers
        items = self.items
        for destination, actions in plan:
            chunk = []
            while actions > 0 and items:
                world, key, asleep, todo, node, new = items.pop()
                ordinals = [ordinal for ordinal, _ in todo]
                chunk.append((world, key, trace_of(node), frozenset(asleep), ordinals, new))
                actions -= len(todo)
            shipments[destination] = dumps(chunk)
        return shipments

    def receive(self, shipments: Sequence[bytes]) -> None:
        network = self.config.network
        for blob in shipments:
            for world, key, trace, asleep_keys, ordinals, new in loads(blob):
                actions = enabled(world, network, self.known_actions)
                asleep = {a.key: a for a in actions if a.key in asleep_keys}
                todo = [(ordinal, actions[ordinal]) for ordinal in ordinals]
                self.items.append((world, key, asleep, todo, node_of(trace), new))

    def check(self, depth: int) -> tuple[int, int, int]:
        """Check the worlds taken this level; make them the items to expand."""
        network, reduce = self.config.network, self.reduce
        items = self.items = []
        actions_to_take = 0
        finals: list[bytes] = []
        for world, key, node, sleep, before in self.taken:
            if before is None:
                self._discovered(world, key, node, depth, finals)
            if not world.envelopes and not world.pending:  # quiescent
                continue
            actions = enabled(world, network, self.known_actions)
            if not reduce:
                todo = list(enumerate(actions))
                asleep: dict[bytes, Action] = {}
            elif before is None:
                if sleep:
                    todo = [(i, a) for i, a in enumerate(actions) if a.key not in sleep]
                    asleep = {a.key: a for a in actions if a.key in sleep}
                else:
                    todo, asleep = list(enumerate(actions)), {}
            else:  # actions asleep last time but awake now were never taken from here
                awake = before - sleep
                todo = [(i, a) for i, a in enumerate(actions) if a.key in awake]
                asleep = {a.key: a for a in actions if a.key in sleep or a.key not in before}
            if todo:
                items.append((world, key, asleep, todo, node, before is None))
                actions_to_take += len(todo)
        self.taken = []
        checks = self.config.final_checks
        for final_key in finals:  # once each, on the first (smallest key) of this level's
            _, final, node = self.finals[final_key]
            self._check(final, checks, (depth, final.fingerprint), node, final_key)
        return actions_to_take, len(items), len(self.violations)

    def _discovered(
        self, world: World, key: bytes, node: Node, depth: int, finals: list[bytes]
    ) -> None:
        config = self.config
        if config.invariants:
            self._check(world, config.invariants, (depth, key), node, None)
        if world.envelopes or world.pending:
            return
        final = world.outcome()
        symmetry = config.symmetry
        final_key = final.canonical if symmetry is None else symmetry.fingerprint(final)
        first = self.finals.get(final_key)
        if first is None:
            self.finals[final_key] = ((depth, key, ""), final, node)
            finals.append(final_key)
        elif (depth, key, "") < first[0]:
            self.finals[final_key] = ((depth, key, ""), final, node)

    def _check(
        self,
        world: World,
        checks: Sequence[Property],
        where: tuple[int, bytes],
        node: Node,
        final_key: bytes | None,
    ) -> None:
        for name, detail in failed_checks(world, checks):
            self.violations.append(((*where, name), name, world, node, detail, final_key))

    def expand(
        self, depth: int, shipments: Sequence[bytes] = ()
    ) -> tuple[list[bytes | None], bool, int]:
        """Take every action of every item (and of those shipped here); tell owners.

        Returns an arrivals blob per owner (None for this worker's own),
        whether the deadline cut the expansion short, and how many violations so far.
        """
        self.receive(shipments)
        config = self.config
        network, failures, reduce = config.network, config.failures, self.reduce
        candidates = self.candidates
        candidate_of = candidates.get
        key_of = self.key if config.symmetry is not None else None
        if config.max_depth is not None and depth >= config.max_depth:
            self.truncated += sum(new for *_, new in self.items)
            self.items = []
        transitions = 0
        activations = self.activations
        calls_before = activations.calls
        for world, key, asleep, todo, node, _ in self.items:
            for ordinal, action in todo:
                transitions += 1
                child, failure = step(world, action, network, activations=activations)
                child_node = (node, action)
                if failure is not None and failures == "violation":
                    detail = failure_report(failure, action, trace_of(child_node))
                    order = (depth + 1, child.fingerprint, "activation failed")
                    self.violations.append(
                        (order, "activation failed", child, child_node, detail, None)
                    )
                sleep: AbstractSet[bytes] = _EMPTY
                if reduce:
                    if asleep:
                        sleep = set(still_asleep(asleep, action))
                    asleep[action.key] = action
                child_key = child.fingerprint if key_of is None else key_of(child)
                tie = (key, ordinal)
                candidate = candidate_of(child_key)
                if candidate is None:
                    candidates[child_key] = [child, child_node, sleep, tie]
                else:
                    if candidate[2]:
                        candidate[2] = candidate[2] & sleep
                    if tie < candidate[3]:
                        candidate[0], candidate[1], candidate[3] = child, child_node, tie
                if not transitions % _TICK and time.monotonic() >= config.deadline:
                    self.transitions += transitions
                    self.handler_calls += activations.calls - calls_before
                    return [None] * self.workers, True, len(self.violations)
        self.transitions += transitions
        self.handler_calls += activations.calls - calls_before
        self.items = []
        workers = self.workers
        outgoing: list[list[Any]] = [[] for _ in range(workers)]
        for child_key, (_, _, sleep, tie) in candidates.items():
            outgoing[owner_of(child_key, workers)].append((child_key, sleep, tie))
        self.own = outgoing[self.index]
        blobs: list[bytes | None] = [dumps(part) for part in outgoing]
        blobs[self.index] = None
        return blobs, False, len(self.violations)

    def results(self) -> bytes:
        """Final worlds, violations and counts, with traces, for the coordinator."""
        finals = [(k, order, w, trace_of(n)) for k, (order, w, n) in self.finals.items()]
        violations = [
            (order, name, world, trace_of(node), detail, final_key)
            for order, name, world, node, detail, final_key in self.violations
        ]
        counts = (self.transitions, self.handler_calls, self.truncated)
        return dumps((finals, violations, counts))
