"""One transition of a world: deliver, drop or duplicate one in-flight message.

Delivery runs the very activation step the live ecosystems run
(``pachyderm._activation.activate``), so what the simulation proves about a
handler holds for them.
"""

from __future__ import annotations

from typing import Literal

from pachyderm._codec import decode, encode_canonical
from pachyderm._step import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Failed,
    Send,
    activate,
    load_state,
    record_bytes,
)
from simulation._network import Network, arrange, deliverable
from simulation._world import Envelope, States, World, make_envelope

__all__ = ["Action", "StepFailure", "deliver", "enabled", "step"]

Kind = Literal["deliver", "drop", "duplicate"]
_PREFIX = {"deliver": b"de", "drop": b"dr", "duplicate": b"du"}


class Action:
    """What happens next: ``kind`` applied to one in-flight message.

    ``key`` names the action the same way in every world where it is possible;
    actions are equal when their keys are. (A plain class: searches make
    millions, and a frozen dataclass is several times slower to create.)
    """

    __slots__ = ("envelope", "index", "key", "kind")

    def __init__(self, kind: Kind, envelope: Envelope, index: int = -1) -> None:
        self.kind = kind
        self.envelope = envelope
        self.key = envelope.deliver_key if kind == "deliver" else _PREFIX[kind] + envelope.key
        self.index = index  # where the envelope was in the world it was found in: a hint

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Action) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Action({self.kind!r}, {self.envelope!r})"

    def __str__(self) -> str:
        return f"{self.kind} {self.envelope!r}"


class StepFailure(Exception):
    """The delivered message's activation failed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def enabled(world: World, network: Network) -> list[Action]:
    """Every action possible in ``world``, in a deterministic order."""
    envelopes = world.envelopes
    heads = deliverable(network, envelopes)
    actions = [Action("deliver", envelopes[index], index) for index in heads]
    # (Deliveries first, then faults: the order traces and shrinking rely on.)
    if world.drops_left:
        actions.extend(Action("drop", envelopes[index], index) for index in heads)
    if world.duplicates_left:
        actions.extend(Action("duplicate", envelopes[index], index) for index in heads)
    return actions


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
    index = action.index
    if not 0 <= index < len(world.envelopes) or world.envelopes[index].key != target.key:
        index = next(i for i, item in enumerate(world.envelopes) if item.key == target.key)
    rest = world.envelopes[:index] + world.envelopes[index + 1 :]
    if action.kind == "drop":
        return World(world.states, rest, world.drops_left - 1, world.duplicates_left)
    if action.kind == "duplicate":
        envelopes = arrange(network, (*world.envelopes, target))
        return World(world.states, envelopes, world.drops_left, world.duplicates_left - 1)
    states, sent = deliver(world, target, max_message_bytes)
    envelopes = arrange(network, (*rest, *sent)) if sent else rest
    return World(states, envelopes, world.drops_left, world.duplicates_left)


def deliver(
    world: World, target: Envelope, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[States, list[Envelope]]:
    """Activate ``target``'s recipient: the world's states with its new one, and what it sent."""
    recipient = target.recipient
    key = target.recipient_key
    state = load_state(recipient, world.state_blob_at(key))
    message = decode(target.blob)
    outcome = activate(recipient, state, message, max_message_bytes, encode_canonical)
    if isinstance(outcome, Failed):
        raise StepFailure(outcome.error)  # type: ignore[arg-type]
    sent = [
        make_envelope(
            command.recipient, encode_canonical(command.recipient), recipient, key, command.message
        )
        for command in outcome.commands
        if type(command) is Send
    ]
    stored = record_bytes(recipient.version, outcome.state_bytes)
    return world.states_with(key, recipient, stored), sent
