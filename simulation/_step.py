"""One transition of a world: deliver, drop or duplicate one in-flight message.

Delivery runs the very activation step the live ecosystems run
(``pachyderm._activation.activate``), so what the simulation proves about a
handler holds for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pachyderm._activation import DEFAULT_MAX_MESSAGE_BYTES, Failure, activate
from pachyderm._codec import decode, encode_canonical
from simulation._network import Network, arrange, deliverable
from simulation._world import Envelope, World, envelope

__all__ = ["Action", "StepFailure", "deliver", "enabled", "independent", "step"]

Kind = Literal["deliver", "drop", "duplicate"]


@dataclass(frozen=True, slots=True)
class Action:
    """What happens next: ``kind`` applied to one in-flight message."""

    kind: Kind
    envelope: Envelope

    @property
    def key(self) -> bytes:
        """Names the action the same way in every world where it is possible."""
        return self.kind[:2].encode() + self.envelope.key

    def __str__(self) -> str:
        return f"{self.kind} {self.envelope!r}"


class StepFailure(Exception):
    """The delivered message's activation failed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def enabled(world: World, network: Network) -> list[Action]:
    """Every action possible in ``world``, in a deterministic order."""
    heads = [world.envelopes[index] for index in deliverable(network, world.envelopes)]
    actions = [Action("deliver", item) for item in heads]
    if world.drops_left:
        actions.extend(Action("drop", item) for item in heads)
    if world.duplicates_left:
        actions.extend(Action("duplicate", item) for item in heads)
    return actions


def independent(first: Action, second: Action) -> bool:
    """Whether the two commute and neither disables the other.

    Deliveries to different entities do; anything touching the same entity
    does not, nor do two faults (they draw on the budgets).
    """
    if first.envelope.recipient_key == second.envelope.recipient_key:
        return False
    return first.kind == "deliver" or second.kind == "deliver"


def step(
    world: World,
    action: Action,
    network: Network,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> World:
    """The world after ``action``.

    Raises:
        StepFailure: a delivery's activation raised or returned something invalid.
    """
    target = action.envelope
    index = next(i for i, item in enumerate(world.envelopes) if item.key == target.key)
    rest = world.envelopes[:index] + world.envelopes[index + 1 :]
    if action.kind == "drop":
        return World(world.states, rest, world.drops_left - 1, world.duplicates_left)
    if action.kind == "duplicate":
        envelopes = arrange(network, (*world.envelopes, target))
        return World(world.states, envelopes, world.drops_left, world.duplicates_left - 1)
    after, sent = deliver(world, target, max_message_bytes)
    envelopes = arrange(network, (*rest, *sent)) if sent else rest
    return World(after.states, envelopes, world.drops_left, world.duplicates_left)


def deliver(
    world: World, target: Envelope, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[World, list[Envelope]]:
    """Activate ``target``'s recipient: the world with its new state, and what it sent.

    The returned world's in-flight messages are left as they were.
    """
    recipient = target.recipient
    key, state_blob = world.state_blob(recipient)
    state: Any = decode(state_blob) if state_blob is not None else recipient.init()
    outcome = activate(recipient, state, decode(target.blob), max_message_bytes)
    if isinstance(outcome, Failure):
        raise StepFailure(outcome.error)
    sent = [envelope(to, decode(blob), recipient) for to, blob in outcome.outbox]
    return world.with_state(key, recipient, encode_canonical(outcome.state)), sent
