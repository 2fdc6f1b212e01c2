"""Fixtures shared by the suite: every behaviour test runs on every live ecosystem.

Beside InMemory and LocalDisk, the behaviour tests run on ``examples.sqlite_kind``:
an ecosystem kind built from outside the core, on the public seam
(``pachyderm.hosting``), which must keep the same guarantees.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from ecosystems import InMemory, LocalDisk
from examples.sqlite_kind import SQLite
from pachyderm import Ecosystem, EcosystemKind

KINDS = {"InMemory": InMemory, "LocalDisk": LocalDisk, "SQLite": SQLite}
LOCATIONS = {"InMemory": None, "LocalDisk": "store", "SQLite": "store.db"}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh ``trio.run`` of their own."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    trio.run(partial(pyfuncitem.obj, **arguments))
    return True


@pytest.fixture(autouse=True)
def _structlog_left_as_found() -> Iterator[None]:
    """capture_logs() leaves structlog "configured", which turns Pachyderm's logging on.

    Reset it after each test so no test runs with the previous one's logging.
    """
    yield
    structlog.reset_defaults()


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> EcosystemKind:
    """Each live ecosystem kind in turn."""
    return KINDS[request.param]


class OpenEcosystem:
    """Opens a store of one kind; LocalDisk reopens the same directory each call."""

    def __init__(self, kind: EcosystemKind, location: str | None) -> None:
        self.kind = kind
        self.location = location
        self.persistent = location is not None

    def __call__(self, **options: Any) -> AbstractAsyncContextManager[Ecosystem]:
        return self.kind.open(self.location, **options)

    def reset(self) -> None:
        """Start from an empty store again (its files are removed)."""
        if self.location is None:
            return
        if os.path.isdir(self.location):
            shutil.rmtree(self.location)
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.location + suffix)


@pytest.fixture
def open_ecosystem(kind: EcosystemKind, tmp_path: Path) -> OpenEcosystem:
    """Open a fresh store of the current kind (the same location on each call)."""
    name = next(name for name, value in KINDS.items() if value is kind)
    location = LOCATIONS[name]
    return OpenEcosystem(kind, None if location is None else str(tmp_path / location))


@pytest.fixture
def pachyderm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh ``$PACHYDERM_HOME`` for the shell face, closed again after the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("PACHYDERM_HOME", str(home))
    for kind in KINDS.values():
        kind.close()
    yield home
    for kind in KINDS.values():
        kind.close()
