"""The public face: exactly these names, and a core that imports no store or scheduler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ecosystems
import pachyderm
import pachyderm.errors
import simulation

ROOT = Path(__file__).resolve().parent.parent


def test_pachyderm_exports() -> None:
    """pachyderm exports exactly its documented names, sorted."""
    assert pachyderm.__all__ == sorted(pachyderm.__all__)
    assert set(pachyderm.__all__) == {
        "ActivationError",
        "After",
        "Cancel",
        "CodecError",
        "DeadLetter",
        "Ecosystem",
        "EcosystemClosedError",
        "EcosystemKind",
        "ExplorationError",
        "InitError",
        "Entity",
        "EntityId",
        "Follower",
        "ForkedProcessError",
        "InvalidActivationError",
        "InvalidAddressError",
        "InvalidArgumentError",
        "InvalidIdError",
        "ManualClock",
        "MessageTooLargeError",
        "PartitionLostError",
        "RemoteActivationFailure",
        "Outbox",
        "OutcomeUnknownError",
        "PachydermError",
        "RegistrationError",
        "ShellEcosystem",
        "ShellFollower",
        "StoreAccessError",
        "StoreCorruptedError",
        "StoreLockedError",
        "UnknownDeadLetterError",
        "Unreadable",
        "UnregisteredNameError",
        "TimerOrderWarning",
        "UnstableNameWarning",
        "UpgradeError",
        "WaitingForClassError",
        "after",
        "cancel",
        "decode",
        "encode",
        "encode_canonical",
        "register_value",
    }
    for name in pachyderm.__all__:
        assert getattr(pachyderm, name) is not None


def test_every_error_is_a_pachyderm_error() -> None:
    """Every exception in errors.py derives from PachydermError (or is a warning), exported."""
    for name in pachyderm.errors.__all__:
        error = getattr(pachyderm.errors, name)
        assert issubclass(error, pachyderm.PachydermError) or issubclass(error, UserWarning)
        assert getattr(pachyderm, name) is error


def test_ecosystems_exports() -> None:
    """ecosystems exports LocalDisk, InMemory and Postgres."""
    assert ecosystems.__all__ == ["InMemory", "LocalDisk", "Postgres"]
    assert isinstance(ecosystems.Postgres, pachyderm.EcosystemKind)
    assert isinstance(ecosystems.LocalDisk, pachyderm.EcosystemKind)
    assert isinstance(ecosystems.InMemory, pachyderm.EcosystemKind)
    assert simulation.__all__ == [
        "Action",
        "DeadLetter",
        "Envelope",
        "Exploration",
        "PendingTimer",
        "Simulation",
        "Violation",
        "World",
    ]


def test_core_imports_no_store_and_no_scheduler() -> None:
    """import pachyderm loads neither ecosystems, simulation, plyvel nor trio."""
    code = (
        "import sys, pachyderm; "
        "print(sorted(m for m in ('ecosystems', 'simulation', 'plyvel', 'trio') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_hosting_exports() -> None:
    """pachyderm.hosting exports exactly the seam for ecosystem authors, sorted."""
    import pachyderm.hosting as hosting

    assert hosting.__all__ == sorted(hosting.__all__)
    assert set(hosting.__all__) == {
        "Activated",
        "Batch",
        "CancelTimer",
        "Clock",
        "Command",
        "EcosystemKind",
        "Failed",
        "Ident",
        "KeyValueStorage",
        "Operation",
        "PendingMessage",
        "Send",
        "SetTimer",
        "SharedBatch",
        "SharedStorage",
        "Storage",
        "StorageOpener",
        "Store",
        "Timer",
        "Transition",
        "WallClock",
        "activate",
        "encode_message",
        "load_state",
        "record_bytes",
    }
    for name in hosting.__all__:
        assert getattr(hosting, name) is not None


def test_the_core_runs_on_a_store_written_outside_it() -> None:
    """examples.sqlite_kind builds an ecosystem kind from pachyderm.hosting alone."""
    source = (ROOT / "examples" / "sqlite_kind.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "pachyderm._" in line or "ecosystems" in line]
