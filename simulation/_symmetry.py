"""Symmetry reduction: worlds that differ only by a renaming of interchangeable entities are one.

Three identical replicas make 3! = 6 copies of most worlds, each explored for
nothing. Declared interchangeable (``symmetric=[[R(0), R(1), R(2)]]``), a world
is identified by the smallest fingerprint among its renamings (every
permutation of every group applied to states, messages in flight, timers and
dead letters, addresses inside values included): one world per equivalence
class. Renaming a part decodes and encodes it, so each renaming keeps the
parts it renamed: worlds share most of theirs. Sound only if the entities
really are interchangeable: same class, handlers that do not treat one id
differently from another, and a start that is the same under renaming. A dead
letter's error text is not renamed, so worlds with dead letters may be merged
less, never wrongly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from pachyderm._codec import decode, encode, encode_canonical
from pachyderm._entity import Entity
from pachyderm.errors import InvalidArgumentError, describe
from simulation._network import Network, arrange
from simulation._world import (
    DeadLetter,
    Envelope,
    PendingTimer,
    State,
    World,
    dead_letter,
    envelope,
    pending_timer,
    state_entry,
)

__all__ = ["Symmetry", "check_symmetric"]

Renaming = dict[Entity[Any, Any], Entity[Any, Any]]
MAX_RENAMINGS = 40_320  # 8!: each world is renamed once per renaming
_CACHED_PARTS = 1 << 16  # renamed parts kept, all renamings together; then all forgotten


def check_symmetric(groups: object) -> list[tuple[Entity[Any, Any], ...]]:
    """The groups of interchangeable addresses, checked: refused with what to do otherwise."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
        raise InvalidArgumentError(
            f"symmetric must be a list of groups of interchangeable addresses, like "
            f"[[Replica(0), Replica(1), Replica(2)]]; got {describe(groups)}"
        )
    checked: list[tuple[Entity[Any, Any], ...]] = []
    seen: set[Entity[Any, Any]] = set()
    renamings = 1
    for group in groups:
        members = tuple(group) if isinstance(group, Iterable) else ()
        if len(members) < 2 or not all(isinstance(member, Entity) for member in members):
            raise InvalidArgumentError(
                f"each group in symmetric lists two or more entity addresses, like "
                f"[Replica(0), Replica(1)]; got {describe(group)}"
            )
        if len({type(member) for member in members}) != 1:
            raise InvalidArgumentError(
                f"interchangeable entities must be of one class; the group {list(members)!r} "
                f"mixes {sorted({type(m).__qualname__ for m in members})}"
            )
        for member in members:
            if member in seen:
                raise InvalidArgumentError(
                    f"{member!r} is in two groups of symmetric (or twice in one): "
                    f"an entity is interchangeable with one group only"
                )
            seen.add(member)
        renamings *= _factorial(len(members))
        checked.append(members)
    if renamings > MAX_RENAMINGS:
        raise InvalidArgumentError(
            f"symmetric groups of sizes {[len(g) for g in checked]} make {renamings:,} "
            f"renamings of each world, more than {MAX_RENAMINGS:,}: declare smaller groups"
        )
    return checked


def _factorial(n: int) -> int:
    result = 1
    for factor in range(2, n + 1):
        result *= factor
    return result


class Symmetry:
    """Fingerprints worlds up to renaming within the declared groups."""

    def __init__(self, groups: Sequence[tuple[Entity[Any, Any], ...]], network: Network) -> None:
        self.network = network
        per_group = [
            [dict(zip(group, order, strict=True)) for order in itertools.permutations(group)]
            for group in groups
        ]
        self.renamings: list[Renaming] = []
        for choice in itertools.product(*per_group):
            renaming: Renaming = {}
            for part in choice:
                renaming.update(part)
            if any(source != target for source, target in renaming.items()):
                self.renamings.append(renaming)  # the identity is the world itself
        # Each renaming's renamed parts (states, messages, timers, dead letters), by what
        # names them: worlds share most of their parts, and renaming one decodes and
        # encodes every address and value in it.
        self.renamed: list[dict[Any, Any]] = [{} for _ in self.renamings]
        self.cached = 0  # parts in all of them

    def fingerprint(self, world: World) -> bytes:
        """One per equivalence class: of the smallest fingerprint among ``world``'s renamings
        (hashed again, so that its bytes are as evenly spread as any fingerprint's)."""
        smallest = world.total
        for index in range(len(self.renamings)):
            smallest = min(smallest, self.rename(world, index).total)
        return hashlib.blake2b(smallest.to_bytes(16, "little"), digest_size=16).digest()

    def rename(self, world: World, index: int) -> World:
        """``world`` under renaming ``index``: every address renamed, inside values too."""
        if self.cached > _CACHED_PARTS:
            for kept in self.renamed:
                kept.clear()
            self.cached = 0
        renaming, cache = self.renamings[index], self.renamed[index]
        before = len(cache)
        states = sorted(
            (_cached(cache, ("s", e.canonical), self._state, e, renaming) for e in world.states),
            key=_by_key,
        )
        envelopes = arrange(
            self.network,
            [
                _cached(cache, ("e", e.key, e.order), self._envelope, e, renaming)
                for e in world.envelopes
            ],
        )
        pending = sorted(
            (_cached(cache, ("t", t.key), self._timer, t, renaming) for t in world.pending),
            key=lambda timer: (timer.owner_key, timer.due),
        )
        dead = sorted(
            (_cached(cache, ("d", d.key), self._dead, d, renaming) for d in world.dead),
            key=_by_key,
        )
        self.cached += len(cache) - before
        return World(
            tuple(states),
            envelopes,
            world.drops_left,
            world.duplicates_left,
            pending=tuple(pending),
            dead=tuple(dead),
            now=world.now,
            next_order=world.next_order,
            fifo=world.fifo,
        )

    @staticmethod
    def _state(entry: State, renaming: Renaming) -> State:
        address = renaming.get(entry.address, entry.address)
        _, value = decode(entry.record)  # [version, state]
        value = renamed(value, renaming)
        return state_entry(
            address, encode_canonical(address), encode(value), encode_canonical(value)
        )

    @staticmethod
    def _envelope(item: Envelope, renaming: Renaming) -> Envelope:
        recipient = renaming.get(item.recipient, item.recipient)
        sender = item.sender if item.sender is None else renaming.get(item.sender, item.sender)
        return envelope(recipient, renamed(item.message, renaming), sender, order=item.order)

    @staticmethod
    def _timer(timer: PendingTimer, renaming: Renaming) -> PendingTimer:
        owner = renaming.get(timer.owner, timer.owner)
        recipient = renaming.get(timer.recipient, timer.recipient)
        message = renamed(timer.message, renaming)
        return pending_timer(
            owner,
            encode_canonical(owner),
            timer.name,
            timer.due,
            timer.delay,
            recipient,
            encode(message),
            encode_canonical(message),
        )

    @staticmethod
    def _dead(letter: DeadLetter, renaming: Renaming) -> DeadLetter:
        address = renaming.get(letter.address, letter.address)
        message = renamed(letter.message, renaming)
        return dead_letter(
            address,
            encode_canonical(address),
            encode(message),
            encode_canonical(message),
            letter.error,
        )


def _cached(cache: dict[Any, Any], name: Any, rename: Any, part: Any, renaming: Renaming) -> Any:
    found = cache.get(name)
    if found is None:
        found = cache[name] = rename(part, renaming)
    return found


def _by_key(item: Any) -> bytes:
    key: bytes = item.key
    return key


def renamed(value: Any, renaming: Renaming) -> Any:
    """``value`` with the addresses in it renamed, containers rebuilt with their own types."""
    if isinstance(value, Entity):
        return renaming.get(value, value)
    kind = type(value)
    if kind is list:
        return [renamed(item, renaming) for item in value]
    if kind is dict:
        return {renamed(k, renaming): renamed(v, renaming) for k, v in value.items()}
    if kind in (set, frozenset):
        return kind(renamed(item, renaming) for item in value)
    if kind is tuple:
        return tuple(renamed(item, renaming) for item in value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return kind(*(renamed(item, renaming) for item in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: renamed(getattr(value, field.name), renaming)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **changes)
    return value
