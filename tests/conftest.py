"""Fixtures shared by the suite: every behaviour test runs on every live ecosystem.

Beside InMemory, LocalDisk and Postgres (on a real server the run starts
itself: ``tests/postgres_server.py``), the behaviour tests run on
``examples.sqlite_kind``: an ecosystem kind built from outside the core, on
the public seam (``pachyderm.hosting``), which must keep the same guarantees.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from ecosystems import InMemory, LocalDisk, Postgres
from examples.sqlite_kind import SQLite
from pachyderm import Ecosystem, EcosystemKind
from tests.postgres_server import HOW_TO_GET_ONE, running_server

KINDS = {"InMemory": InMemory, "LocalDisk": LocalDisk, "Postgres": Postgres, "SQLite": SQLite}
LOCATIONS = {"InMemory": None, "LocalDisk": "store", "Postgres": None, "SQLite": "store.db"}


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | None]:
    """A PostgreSQL server for the whole run (a DSN of its ``postgres`` database), or None."""
    with running_server() as dsn:
        yield dsn


class PostgresDatabases:
    """Creates and drops throwaway databases on the test run's server."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as connection:
            connection.execute(statement)

    def create(self) -> str:
        from psycopg.conninfo import make_conninfo

        name = f"test_{uuid.uuid4().hex[:16]}"
        self._admin(f"CREATE DATABASE {name}")
        return make_conninfo(self.base, dbname=name)

    def drop(self, dsn: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {_database(dsn)} WITH (FORCE)")

    def recreate(self, dsn: str) -> None:
        """Empty the database ``dsn`` names: dropped and created again."""
        self.drop(dsn)
        self._admin(f"CREATE DATABASE {_database(dsn)}")


def _database(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn)["dbname"])


@pytest.fixture
def postgres_databases(postgres_server: str | None) -> PostgresDatabases:
    """Throwaway databases; skipped (failed in CI) where no server can be had."""
    if postgres_server is None:
        if os.environ.get("PACHYDERM_REQUIRE_POSTGRES"):
            pytest.fail(HOW_TO_GET_ONE)
        pytest.skip(HOW_TO_GET_ONE)
    return PostgresDatabases(postgres_server)


@pytest.fixture
def postgres_dsn(
    postgres_databases: PostgresDatabases, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh database, also the shell face's default (``$PACHYDERM_DSN``); dropped after."""
    dsn = postgres_databases.create()
    monkeypatch.setenv("PACHYDERM_DSN", dsn)
    Postgres.close()
    yield dsn
    Postgres.close()
    postgres_databases.drop(dsn)


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> EcosystemKind:
    """Each live ecosystem kind in turn (Postgres with a fresh database as its default)."""
    if request.param == "Postgres":
        request.getfixturevalue("postgres_dsn")
    return KINDS[request.param]


class HeldWrite:
    """A store's next write once ``armed``, held after it is done (written, not yet
    answered: what a slow fsync leaves) until ``proceed`` is set; ``written`` says when."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, storage: object) -> None:
        self.armed, self.written, self.proceed = (threading.Event() for _ in range(3))
        storage_class = type(storage)
        write = storage_class.write  # type: ignore[attr-defined]

        def held_write(storage: Any, batch: Any, *, sync: bool) -> None:
            write(storage, batch, sync=sync)
            if self.armed.is_set():
                self.armed.clear()
                self.written.set()
                self.proceed.wait(10)

        monkeypatch.setattr(storage_class, "write", held_write)


class OpenEcosystem:
    """Opens a store of one kind; LocalDisk reopens the same directory each call."""

    def __init__(
        self,
        kind: EcosystemKind,
        location: str | None,
        reset: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.location = location
        self.persistent = location is not None
        self._reset = reset

    def __call__(self, **options: Any) -> AbstractAsyncContextManager[Ecosystem]:
        return self.kind.open(self.location, **options)

    def reset(self) -> None:
        """Start from an empty store again (its files, or its database, are removed)."""
        if self._reset is not None:
            self._reset()
            return
        if self.location is None:
            return
        if os.path.isdir(self.location):
            shutil.rmtree(self.location)
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.location + suffix)


@pytest.fixture
def open_ecosystem(
    kind: EcosystemKind, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OpenEcosystem]:
    """Open a fresh store of the current kind (the same location on each call)."""
    name = next(name for name, value in KINDS.items() if value is kind)
    if kind is Postgres:  # a database of its own, as the file kinds' stores are not the shell's
        databases = request.getfixturevalue("postgres_databases")
        dsn = databases.create()
        yield OpenEcosystem(kind, dsn, partial(databases.recreate, dsn))
        databases.drop(dsn)
        return
    location = LOCATIONS[name]
    yield OpenEcosystem(kind, None if location is None else str(tmp_path / location))


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
