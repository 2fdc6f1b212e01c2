"""Networks: which in-flight messages may be delivered next, and in what canonical order.

``"unordered"``: any message in flight (what the original explored).
``"fifo"``: per sender->receiver channel, in send order (what the live
ecosystems guarantee).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pachyderm.errors import PachydermError, describe
from simulation._world import Envelope

__all__ = ["NETWORKS", "Network", "arrange", "deliverable"]

Network = Literal["unordered", "fifo"]
NETWORKS: tuple[str, ...] = ("unordered", "fifo")


def check_network(network: object) -> Network:
    if network not in NETWORKS:
        raise PachydermError(f"network must be one of {NETWORKS}, got {describe(network)}")
    return network  # type: ignore[return-value]


def arrange(network: Network, envelopes: Iterable[Envelope]) -> tuple[Envelope, ...]:
    """Envelopes in the network's canonical order.

    Unordered: sorted by key, so the same multiset is the same tuple. FIFO:
    grouped by channel (channels sorted), each channel keeping its send order.
    ``envelopes`` must list each channel's messages in send order.
    """
    if network == "unordered":
        return tuple(sorted(envelopes, key=lambda item: item.key))
    # A stable sort by channel keeps the send order inside each channel.
    return tuple(sorted(envelopes, key=lambda item: item.channel))


def deliverable(network: Network, envelopes: tuple[Envelope, ...]) -> list[int]:
    """Indices of the envelopes that may be delivered next, each distinct message once."""
    indices: list[int] = []
    seen: set[bytes] = set()
    if network == "unordered":
        for index, item in enumerate(envelopes):
            if item.key not in seen:  # identical messages are one choice, not several
                seen.add(item.key)
                indices.append(index)
        return indices
    for index, item in enumerate(envelopes):
        channel = item.channel
        if channel not in seen:  # the head of each channel
            seen.add(channel)
            indices.append(index)
    return indices
