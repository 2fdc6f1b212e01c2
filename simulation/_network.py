"""Networks: which in-flight messages may be delivered next, and in what canonical order.

``"unordered"``: any message in flight (what the original explored).
``"fifo"``: per sender->receiver channel, in send order (what the live
ecosystems guarantee).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pachyderm.errors import InvalidArgumentError, describe
from simulation._world import Envelope, World, envelope

__all__ = [
    "NETWORKS",
    "Network",
    "arrange",
    "check_network",
    "deliverable",
    "initial_world",
    "outside_envelopes",
]

Network = Literal["unordered", "fifo"]
NETWORKS: tuple[str, ...] = ("unordered", "fifo")


def check_network(network: object) -> Network:
    if network not in NETWORKS:
        raise InvalidArgumentError(f"network must be one of {NETWORKS}, got {describe(network)}")
    return network  # type: ignore[return-value]


def arrange(network: Network, envelopes: Iterable[Envelope]) -> tuple[Envelope, ...]:
    """Envelopes in the network's canonical order.

    Unordered: sorted by key, so the same multiset is the same tuple. FIFO:
    grouped by channel (channels sorted), each channel in send order (each
    envelope's ``order``: a world made for an unordered network keeps its
    envelopes by key, not as they were sent).
    """
    if network == "unordered":
        return tuple(sorted(envelopes, key=lambda item: item.key))
    return tuple(sorted(envelopes, key=lambda item: (item.channel, item.order)))


def deliverable(network: Network, envelopes: tuple[Envelope, ...]) -> list[int]:
    """Indices of the envelopes that may be delivered next, each distinct message once."""
    indices: list[int] = []
    if network == "unordered":
        previous = None
        for index, item in enumerate(envelopes):
            if item.key != previous:  # sorted: identical messages are adjacent, one choice
                previous = item.key
                indices.append(index)
        return indices
    seen: set[bytes] = set()
    for index, item in enumerate(envelopes):
        channel = item.channel
        if channel not in seen:  # the head of each channel
            seen.add(channel)
            indices.append(index)
    return indices


def outside_envelopes(envelopes: Iterable[tuple[Any, Any]], first: int = 0) -> list[Envelope]:
    """Envelopes sent from outside, numbered in send order from ``first``."""
    items: list[Envelope] = []
    if isinstance(envelopes, (str, bytes)) or not isinstance(envelopes, Iterable):
        raise InvalidArgumentError(
            f"envelopes are an iterable of (address, message) pairs, like "
            f"[(Counter('c'), 'inc')]; got {describe(envelopes)}"
        )
    for item in envelopes:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidArgumentError(
                f"envelopes are (address, message) pairs, like (Counter('c'), 'inc'); "
                f"got {describe(item)}"
            )
        items.append(envelope(*item, order=first + len(items)))
    return items


def _budget(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(f"{name} must be an int >= 0, got {describe(value)}")
    return value


def initial_world(
    envelopes: Iterable[tuple[Any, Any]],
    world: World | None,
    network: Network,
    drops: int,
    duplicates: int,
) -> World:
    """``world`` (default: fresh) with ``envelopes`` added, in the network's order."""
    if world is not None and not isinstance(world, World):
        raise InvalidArgumentError(
            f"world must be a World (from Simulation.fresh(), run() or exhaust()) or None, "
            f"got {describe(world)}"
        )
    start = world or World()
    sent = outside_envelopes(envelopes, start.next_order)
    return start.replace(
        envelopes=arrange(network, [*start.envelopes, *sent]),
        drops_left=_budget("drops", drops),
        duplicates_left=_budget("duplicates", duplicates),
        next_order=start.next_order + len(sent),
        fifo=network == "fifo",
    )
