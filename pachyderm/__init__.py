"""Pachyderm: immortal actors for Python. An elephant never forgets.

Entities are persistent actors addressed by ``<class, id>``, written as pure
``activate(message, state) -> (outbox, state)`` functions and hosted by
swappable ecosystems (``ecosystems.LocalDisk``, ``ecosystems.InMemory``,
``simulation.Simulation``).
"""

from typing import TYPE_CHECKING, Any

from pachyderm._clock import ManualClock
from pachyderm._codec import decode, encode, encode_canonical
from pachyderm._commands import After, Cancel, Outbox, after, cancel
from pachyderm._dead_letters import DeadLetter, Unreadable
from pachyderm._entity import Entity, EntityId
from pachyderm._values import register_value
from pachyderm.errors import (
    ActivationError,
    CodecError,
    EcosystemClosedError,
    ExplorationError,
    ForkedProcessError,
    InitError,
    InvalidActivationError,
    InvalidAddressError,
    InvalidArgumentError,
    InvalidIdError,
    MessageTooLargeError,
    OutcomeUnknownError,
    PachydermError,
    PartitionLostError,
    RegistrationError,
    RemoteActivationFailure,
    StoreAccessError,
    StoreCorruptedError,
    StoreLockedError,
    TimerOrderWarning,
    UnknownDeadLetterError,
    UnregisteredNameError,
    UnstableNameWarning,
    UpgradeError,
    WaitingForClassError,
)

__all__ = [
    "ActivationError",
    "After",
    "Cancel",
    "CodecError",
    "DeadLetter",
    "Ecosystem",
    "EcosystemClosedError",
    "EcosystemKind",
    "Entity",
    "EntityId",
    "ExplorationError",
    "Follower",
    "ForkedProcessError",
    "InitError",
    "InvalidActivationError",
    "InvalidAddressError",
    "InvalidArgumentError",
    "InvalidIdError",
    "ManualClock",
    "MessageTooLargeError",
    "Outbox",
    "OutcomeUnknownError",
    "PachydermError",
    "PartitionLostError",
    "RegistrationError",
    "RemoteActivationFailure",
    "ShellEcosystem",
    "ShellFollower",
    "StoreAccessError",
    "StoreCorruptedError",
    "StoreLockedError",
    "TimerOrderWarning",
    "UnknownDeadLetterError",
    "Unreadable",
    "UnregisteredNameError",
    "UnstableNameWarning",
    "UpgradeError",
    "WaitingForClassError",
    "after",
    "cancel",
    "decode",
    "encode",
    "encode_canonical",
    "register_value",
]

if TYPE_CHECKING:
    from pachyderm._ecosystem import Ecosystem
    from pachyderm._followers import Follower, ShellFollower
    from pachyderm._kind import EcosystemKind
    from pachyderm._shell import ShellEcosystem

# The live runtime needs trio; entities, the codec and the simulation do not,
# so its names are imported on first use.
_LIVE = {
    "Ecosystem": "pachyderm._ecosystem",
    "EcosystemKind": "pachyderm._kind",
    "Follower": "pachyderm._followers",
    "ShellEcosystem": "pachyderm._shell",
    "ShellFollower": "pachyderm._followers",
}


def __getattr__(name: str) -> Any:
    module = _LIVE.get(name)
    if module is None:
        raise AttributeError(f"module 'pachyderm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
