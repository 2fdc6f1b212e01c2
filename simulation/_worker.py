"""One process of a parallel search: the worlds it owns, and the worlds it expands.

The search goes level by level (every world at depth d, then d + 1). Each
world has an *owner*, chosen by its fingerprint, that remembers whether it was
seen and with which sleep set. A worker expands the worlds it holds, planning
each delivery's fingerprint first, as the depth-first search does; for each
child it sends the owner only the fingerprint, the child's sleep set and a
tie-break, never the world, in plain lists pickled in bulk. The owner merges
what every worker sent (sleep sets intersect, the smallest tie-break wins)
and decides: new, or seen before but now with actions awake that slept then
(the same rule as the depth-first search's), or nothing to take. Most
children are new and made by one worker, which takes them as made: the owner
decides that common case in bulk, by set operations, and sends back only the
exceptions. A child's world is made only when it is taken, and checked just
before it is expanded. So worlds stay where they were made, and move only
when the coordinator evens out the load.

Everything that decides a result is taken from data, not from timing or from
which worker holds what: the tie-break is (parent fingerprint, action key),
final worlds keep the one at the smallest (depth, fingerprint), and
violations are ordered the same way.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import chain
from typing import Any

from simulation._explore import (
    _LOOK_EVERY,
    _TICK,
    Failures,
    Property,
    failed_checks,
    failure_report,
)
from simulation._network import Network
from simulation._step import (
    Action,
    Activations,
    SleepMasks,
    actions_after,
    enabled,
    make_planned,
    plan_delivery,
    step,
    told_gap,
)
from simulation._symmetry import Symmetry
from simulation._transfer import dumps, loads
from simulation._world import World

__all__ = ["Config", "Node", "Worker", "owner_of", "trace_of"]


Node = tuple[Any, Action] | None  # a trace as a linked list: (the parent's node, the action)
# What a worker expands: (world, key, asleep (bits), actions to take, node, new, every
# action).
Item = tuple[World, bytes, int, list[Action], Node, bool, list[Action]]
Order = tuple[int, bytes, str]  # (depth, fingerprint, property): orders violations and finals
# Children sent to their owner, in four lists: keys, sleep sets, and the tie-break
# (parent fingerprint, the action's key) in two.
Arrivals = tuple[list[bytes], list[frozenset[bytes]], list[bytes], list[bytes]]
# An owner's verdict on a child, where it differs from "take it, new, as made": None,
# leave it; or (sleep set, asleep before or None if new) to take it with.
Verdict = tuple[frozenset[bytes], Any] | None
_EMPTY: frozenset[bytes] = frozenset()
_KEY_SETS = 1 << 16  # sleep sets' keys remembered, then all forgotten at once


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
    """The worker that keeps whether ``key`` was seen: fingerprints are evenly spread.

    One byte of it, cheap to read for every child: past 256 workers, some own nothing.
    """
    return key[-1] % workers


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
        self.stored: dict[bytes, frozenset[bytes]] = {}  # owned keys -> asleep when taken
        self.shared: dict[frozenset[bytes], frozenset[bytes]] = {}  # one of each sleep set
        # Children made this level, by owner: key -> [world, node, parent, plan, parent's
        # actions, place]; a planned child's world (None) is made when taken. What the
        # owner is told goes in columns as they are made, in the same order (sleep set,
        # parent's key, action's key), at ``place``: read back entry by entry, a level's
        # worth of entries would be fetched from memory again.
        self.candidates: list[dict[bytes, list[Any]]] = [{} for _ in range(workers)]
        self.columns: list[tuple[list[int], list[bytes], list[bytes]]] = [
            ([], [], []) for _ in range(workers)
        ]
        self.arrivals: Arrivals = ([], [], [], [])  # this worker's children that it owns
        self.mine: dict[bytes, Verdict] = {}  # this worker's verdicts on its own children
        self.fresh: tuple[list[list[bytes]], set[bytes]] = ([], set())  # for newest()
        # Taken this level, to expand (see Item).
        self.items: list[Item] = []
        self.level_items = 0  # items made this level, when made one by one
        self.finals: dict[bytes, tuple[Order, World, Node]] = {}  # final key -> the first
        self.violations: list[tuple[Order, str, World, Node, str, bytes | None]] = []
        self.transitions = self.handler_calls = self.truncated = 0
        # The first transition that may skip timer orders, by (depth, parent, action) as
        # workers order everything, whichever worker met it: (order, told, trace).
        self.first_gap: tuple[tuple[int, bytes, bytes], str, tuple[Action, ...]] | None = None
        self.activations = Activations()
        self.known_actions: dict[bytes, Action] = {}  # deliveries made so far, by key
        # Sleep sets are ints while a worker expands (as in the depth-first search), and
        # sets of action keys where workers compare them: each numbers actions its own way.
        self.masks = SleepMasks(self.activations)
        self.key_sets: dict[int, frozenset[bytes]] = {0: _EMPTY}  # bits -> their keys
        if initial is not None:
            key = self.key(initial)
            owner = owner_of(key, workers)
            self.candidates[owner][key] = [initial, None, None, None, None, 0]
            self.columns[owner] = ([0], [b""], [b""])

    def key(self, world: World) -> bytes:
        symmetry = self.config.symmetry
        return world.fingerprint if symmetry is None else symmetry.fingerprint(world)

    def intern(self, sleep: AbstractSet[bytes]) -> frozenset[bytes]:
        """``sleep`` as the one frozen set of its members: most worlds share a few."""
        frozen = frozenset(sleep)
        return self.shared.setdefault(frozen, frozen)

    def keys_of(self, sleep: int) -> frozenset[bytes]:
        """The keys of the actions in sleep set ``sleep`` (bits), as owners compare them."""
        found = self.key_sets.get(sleep)
        if found is None:
            self.know_keys({sleep})
            found = self.key_sets[sleep]
        return found

    def know_keys(self, sleeps: AbstractSet[int]) -> None:
        """Have ``key_sets`` hold the keys of each of ``sleeps`` (and forget others first,
        if it would grow too large)."""
        key_sets, by_number = self.key_sets, self.masks.by_number
        if len(key_sets) + len(sleeps) > _KEY_SETS:
            key_sets.clear()
        for sleep in sleeps:
            if sleep in key_sets:
                continue
            keys = []
            rest = sleep
            while rest:
                bit = rest & -rest  # the lowest
                rest ^= bit
                keys.append(by_number[bit.bit_length() - 1].key)
            key_sets[sleep] = self.intern(frozenset(keys))

    def bits_of(self, keys: AbstractSet[bytes]) -> int:
        """Sleep set ``keys`` as bits; each of them numbered here (an owner's verdict on a
        child made here: its sleep set is no larger than the one made here)."""
        numbers = self.masks.numbers
        sleep = 0
        for key in keys:
            sleep |= numbers[key]
        return sleep

    # -- the owner's side -----------------------------------------------------------------

    def decide(self, arrivals: Sequence[bytes | None]) -> tuple[list[bytes | None], list[int], int]:
        """Judge every worker's children that this worker owns; say who takes what.

        A child is taken by the worker that made it, with the sleep set it was
        made with, unless a verdict says otherwise: most are, so only the
        exceptions travel (see ``Verdict``), and the common case is decided
        by set operations, in bulk. Returns each other worker's verdicts
        (None for this one's own), how many worlds each takes, and how many
        of those are new.
        """
        index, stored = self.index, self.stored
        parts: dict[int, Arrivals] = {index: self.arrivals}
        for generator, blob in enumerate(arrivals):
            if blob is not None:
                parts[generator] = loads(blob)
        generators = sorted(parts)
        keysets = {g: set(parts[g][0]) for g in generators}
        places: dict[int, dict[bytes, int]] = {}

        def place(generator: int, key: bytes) -> int:
            found = places.get(generator)
            if found is None:
                keys = parts[generator][0]
                found = places[generator] = dict(zip(keys, range(len(keys)), strict=True))
            return found[key]

        verdicts: list[dict[bytes, Verdict]] = [{} for _ in range(self.workers)]
        # Made by several workers this level: the smallest tie-break takes it, with the
        # intersection of the sleep sets (as if one worker had made it every time).
        winners: dict[bytes, tuple[int, frozenset[bytes]]] = {}
        common: set[bytes] = set()
        for position, generator in enumerate(generators):
            for other in generators[position + 1 :]:
                common |= keysets[generator] & keysets[other]
        for key in sorted(common):
            makers = []
            for generator in generators:
                if key in keysets[generator]:
                    _, sleeps, parents, actions = parts[generator]
                    at = place(generator, key)
                    makers.append((parents[at], actions[at], generator, sleeps[at]))
            makers.sort(key=_tie)
            sleep = makers[0][3]
            for _, _, generator, other_sleep in makers[1:]:
                if sleep:
                    sleep = sleep & other_sleep
                verdicts[generator][key] = None
            winners[key] = (makers[0][2], self.intern(sleep))
        # Seen at an earlier level: taken again only for actions asleep then and awake now.
        seen: dict[bytes, frozenset[bytes]] = {}
        again: list[tuple[int, bytes]] = []
        for generator in generators:
            for key in stored.keys() & keysets[generator]:
                winner = winners.get(key)
                if winner is None or winner[0] == generator:
                    seen[key] = stored[key]
                    again.append((generator, key))
        size = len(stored)
        for generator in generators:
            keys, sleeps, _, _ = parts[generator]
            stored.update(zip(keys, sleeps, strict=True))
        for key, (generator, sleep) in winners.items():
            stored[key] = sleep
            if key not in seen:
                verdicts[generator][key] = (sleep, None)
        for generator, key in again:
            before = seen[key]
            winner = winners.get(key)
            sleep = parts[generator][1][place(generator, key)] if winner is None else winner[1]
            if before <= sleep:  # everything taken from here before is asleep now too
                stored[key] = before
                verdicts[generator][key] = None
            else:
                stored[key] = self.intern(before & sleep)
                verdicts[generator][key] = (sleep, before)
        new = len(stored) - size
        self.fresh = ([parts[g][0] for g in generators], set(seen))
        self.arrivals = ([], [], [], [])
        self.mine = verdicts[index]
        counts = [0] * self.workers
        for generator in generators:
            skipped = sum(verdict is None for verdict in verdicts[generator].values())
            counts[generator] = len(parts[generator][0]) - skipped
        blobs: list[bytes | None] = [
            None if generator == index else pickle.dumps(part, pickle.HIGHEST_PROTOCOL)
            for generator, part in enumerate(verdicts)
        ]
        return blobs, counts, new

    def newest(self) -> list[bytes]:
        """The keys new in the last decisions (asked only to cut the search at a budget)."""
        keys, seen = self.fresh
        return sorted({key for part in keys for key in part if key not in seen})

    # -- the expanding side ---------------------------------------------------------------

    def take(
        self, decisions: Sequence[bytes | None], depth: int, last: bytes | None = None
    ) -> tuple[int, int, int]:
        """Take the worlds the owners gave this worker, check them, and make them the items.

        With ``last`` (a budget ran out), only new worlds with keys up to it.
        Returns how many actions the items will take, how many items there
        are, and how many violations so far.
        """
        return self.check(depth, self._verdicts(decisions), last)

    def _verdicts(self, decisions: Sequence[bytes | None]) -> dict[bytes, Verdict]:
        """Every owner's verdicts on this worker's children, this one's included."""
        verdicts = self.mine
        for blob in decisions:
            if blob is not None:
                verdicts.update(loads(blob))
        self.mine = {}
        return verdicts

    def advance(
        self, decisions: Sequence[bytes | None], depth: int, stop_at_first_violation: bool
    ) -> tuple[tuple[int, int, int], tuple[list[bytes | None], bool, int] | None]:
        """``take`` and ``expand`` in one command: each world checked just before it is
        expanded, while it is still in the cache. Returns what they return (None for
        ``expand`` if a violation stops the search before it).

        An invariant that fails must stop the search before this level is expanded, so
        then every world is checked first.
        """
        if stop_at_first_violation and self.config.invariants:
            taken = self.take(decisions, depth)
            if self.violations:
                return taken, None
            return taken, self.expand(depth)
        self.level_items = 0
        items = self._checked(depth, self._verdicts(decisions), None)
        expanded = self.expand(depth, items=items)
        return (0, self.level_items, len(self.violations)), expanded

    def ship(self, plan: Sequence[tuple[int, int]]) -> list[bytes | None]:
        """Send other workers items worth ``plan``'s counts of actions, to even out the level."""
        shipments: list[bytes | None] = [None] * self.workers
        items = self.items
        for destination, actions in plan:
            chunk = []
            while actions > 0 and items:
                world, key, asleep, todo, node, new, _ = items.pop()
                keys = [action.key for action in todo]
                chunk.append((world, key, trace_of(node), self.keys_of(asleep), keys, new))
                actions -= len(todo)
            shipments[destination] = dumps(chunk)
        return shipments

    def receive(self, shipments: Sequence[bytes]) -> None:
        network = self.config.network
        for blob in shipments:
            for world, key, trace, asleep_keys, keys, new in loads(blob):
                every = enabled(world, network, self.known_actions)
                self.masks.number(every)
                actions = {a.key: a for a in every}
                asleep = 0
                for action in actions.values():
                    if action.key in asleep_keys:
                        asleep |= action.bit
                todo = [actions[k] for k in keys]
                self.items.append(
                    (world, key, asleep, todo, node_of(trace), new, [*actions.values()])
                )

    def check(
        self, depth: int, verdicts: dict[bytes, Verdict], last: bytes | None
    ) -> tuple[int, int, int]:
        """Check the worlds taken this level; make them the items to expand.

        Returns how many actions the items will take, how many items there
        are, and how many violations so far.
        """
        items = self.items = list(self._checked(depth, verdicts, last))
        return sum(len(item[3]) for item in items), len(items), len(self.violations)

    def _checked(
        self, depth: int, verdicts: dict[bytes, Verdict], last: bytes | None
    ) -> Iterator[Item]:
        """The items to expand: the children made last level that the owners' ``verdicts``
        let this worker take, each made if it was only planned, and checked as it comes
        (and the level's final worlds once all have come). With ``last`` (a budget ran
        out), only new worlds with keys up to it."""
        tables, columns = self.candidates, self.columns
        self.candidates = [{} for _ in tables]  # for the children of these
        self.columns = [([], [], []) for _ in tables]
        return self._checking(depth, tables, [sleeps for sleeps, _, _ in columns], verdicts, last)

    def _checking(
        self,
        depth: int,
        tables: list[dict[bytes, list[Any]]],
        sleeps: list[list[int]],
        verdicts: dict[bytes, Verdict],
        last: bytes | None,
    ) -> Iterator[Item]:
        network, reduce, known = self.config.network, self.reduce, self.known_actions
        invariants, number = self.config.invariants, self.masks.number
        finals: list[bytes] = []
        every = not verdicts and last is None  # the common case: every child, as made
        items = 0
        made = chain.from_iterable(map(zip, (t.items() for t in tables), sleeps))
        for (key, entry), sleep in made:
            world, node, parent, plan, parent_actions, _ = entry
            before = None
            if not every:
                if key in verdicts:
                    verdict = verdicts[key]
                    if verdict is None:
                        continue
                    keys, before = verdict
                    sleep = self.bits_of(keys)
                if last is not None and (before is not None or key > last):
                    continue
            actions = None  # the actions after node's last one, from the parent's
            if world is None:
                world, actions = make_planned(parent, node[1], plan, parent_actions)
            elif parent_actions is not None:
                actions = actions_after(parent, parent_actions, node[1], world)
            quiescent = not world.envelopes and not world.pending
            if before is None and (invariants or quiescent):
                self._discovered(world, key, node, depth, finals)
            if quiescent:
                continue
            if actions is None:
                actions = enabled(world, network, known)
                number(actions)
            if not reduce:
                todo, asleep = actions, 0
            elif before is None:
                todo = [a for a in actions if not sleep & a.bit] if sleep else actions
                asleep = sleep
            else:  # actions asleep last time but awake now were never taken from here
                todo = [a for a in actions if a.key in before and not sleep & a.bit]
                asleep = sleep
                for action in actions:
                    if action.key not in before:
                        asleep |= action.bit
            if todo:
                items += 1
                yield world, key, asleep, todo, node, before is None, actions
        self.level_items = items
        checks = self.config.final_checks
        for final_key in finals:  # once each, on the first (smallest key) of this level's
            _, final, node = self.finals[final_key]
            self._check(final, checks, (depth, final.fingerprint), node, final_key)

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
        for name, detail in failed_checks(world, checks, lambda: trace_of(node)):
            self.violations.append(((*where, name), name, world, node, detail, final_key))

    def expand(
        self, depth: int, shipments: Sequence[bytes] = (), *, items: Iterable[Item] | None = None
    ) -> tuple[list[bytes | None], bool, int]:
        """Take every action of every item (and of those shipped here); tell owners.

        ``items``: those to expand instead of the ones ``take`` made. Returns an
        arrivals blob per owner (None for this worker's own), whether the deadline
        cut the expansion short, and how many violations so far.
        """
        self.receive(shipments)
        if items is None:
            items = self.items
        self.items = []
        config = self.config
        network, failures, reduce = config.network, config.failures, self.reduce
        candidates, columns = self.candidates, self.columns
        workers = self.workers
        after = self.masks.after
        key_of = self.key if config.symmetry is not None else None
        if config.max_depth is not None and depth >= config.max_depth:
            self.truncated += sum(item[5] for item in items)  # the new ones
            items = ()
        transitions = 0
        every = next_look = 1  # transitions between looks at the clock, and the next look
        looked = time.monotonic()
        activations = self.activations
        calls_before = activations.calls
        for world, key, asleep, todo, node, _, actions in items:
            for action in todo:
                transitions += 1
                child_node = (node, action)
                # A delivery planned: its world is made only if taken (most worlds made
                # again are made again here, or by another worker, or were seen before).
                plan = None if key_of is not None else plan_delivery(world, action, activations)
                child: World | None = None
                if plan is not None:
                    child_key = plan.fingerprint
                else:
                    gaps = activations.timer_gaps
                    made, failure = step(world, action, network, activations=activations)
                    if activations.timer_gaps != gaps:
                        self._timer_gap(depth, key, action, child_node)
                    child_key = made.fingerprint if key_of is None else key_of(made)
                    child = made
                    if failure is not None and failures == "violation":
                        detail = failure_report(failure, action, trace_of(child_node))
                        order = (depth + 1, made.fingerprint, "activation failed")
                        self.violations.append(
                            (order, "activation failed", made, child_node, detail, None)
                        )
                sleep = 0
                if reduce:
                    if asleep:
                        sleep = after(asleep, action, world, plan)
                    asleep |= action.bit
                owner = child_key[-1] % workers  # see owner_of
                table = candidates[owner]
                sleeps, parents, action_keys = columns[owner]
                candidate = table.get(child_key)
                if candidate is None:
                    table[child_key] = [child, child_node, world, plan, actions, len(sleeps)]
                    sleeps.append(sleep)
                    parents.append(key)
                    action_keys.append(action.key)
                else:  # made twice here: one child, as for the owner's merge
                    place = candidate[5]
                    sleeps[place] &= sleep
                    if (key, action.key) < (parents[place], action_keys[place]):
                        candidate[0], candidate[1] = child, child_node
                        candidate[2], candidate[3], candidate[4] = world, plan, actions
                        parents[place], action_keys[place] = key, action.key
                if transitions < next_look:
                    continue
                now = time.monotonic()  # (looks adapt as the search's own do: see _Budget)
                since, looked = now - looked, now
                if since < _LOOK_EVERY / 4:
                    every = min(_TICK, every * 2)
                elif since > _LOOK_EVERY:
                    every = max(1, every // 2)
                next_look = transitions + every
                if now >= config.deadline:
                    self.transitions += transitions
                    self.handler_calls += activations.calls - calls_before
                    for _ in items:  # every world taken is checked, as it was counted
                        pass
                    return [None] * self.workers, True, len(self.violations)
        self.transitions += transitions
        self.handler_calls += activations.calls - calls_before
        blobs: list[bytes | None] = [None] * workers
        key_sets = self.key_sets
        for owner, table in enumerate(candidates):
            sleeps, parents, action_keys = columns[owner]
            self.know_keys(set(sleeps))  # each mask's keys, found once
            part = (list(table), list(map(key_sets.__getitem__, sleeps)), parents, action_keys)
            if owner == self.index:
                self.arrivals = part
            else:
                blobs[owner] = pickle.dumps(part, pickle.HIGHEST_PROTOCOL)
        return blobs, False, len(self.violations)

    def _timer_gap(self, depth: int, key: bytes, action: Action, node: Node) -> None:
        """Keep the transition that may skip timer orders if it is the first met so far."""
        order = (depth + 1, key, action.key)
        if self.first_gap is None or order < self.first_gap[0]:
            gap = self.activations.timer_gap
            assert gap is not None
            self.first_gap = (order, told_gap(gap), trace_of(node))

    def results(self) -> bytes:
        """Final worlds, violations and counts, with traces, for the coordinator."""
        finals = [(k, order, w, trace_of(n)) for k, (order, w, n) in self.finals.items()]
        violations = [
            (order, name, world, trace_of(node), detail, final_key)
            for order, name, world, node, detail, final_key in self.violations
        ]
        activations = self.activations
        counts = (
            self.transitions,
            self.handler_calls,
            self.truncated,
            activations.timer_gaps,
            self.first_gap,
        )
        return dumps((finals, violations, counts))


def _tie(maker: tuple[bytes, bytes, int, frozenset[bytes]]) -> tuple[bytes, bytes]:
    return maker[0], maker[1]
