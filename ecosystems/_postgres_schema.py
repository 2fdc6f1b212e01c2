"""The Postgres ecosystem's tables, created and versioned by the library on first open.

Every table is prefixed ``pachyderm_``, so an application's own tables can
share the database. ``pachyderm_meta`` holds the schema version and the
partition count, fixed when the schema is created: every process that opens
the database must agree on where an entity lives.
"""

from __future__ import annotations

from typing import Any

from pachyderm.errors import StoreCorruptedError

__all__ = ["DEFAULT_PARTITIONS", "SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION = 2
DEFAULT_PARTITIONS = 64
_LOCK_KEY = 0x7061636879  # "pachy": serializes schema creation and upgrades between processes

_CREATE = """
CREATE TABLE IF NOT EXISTS pachyderm_meta (key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE pachyderm_partitions (
    p integer PRIMARY KEY,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    lease_until timestamptz
);
CREATE TABLE pachyderm_workers (id text PRIMARY KEY, seen timestamptz NOT NULL);
CREATE TABLE pachyderm_entities (
    eco text NOT NULL,
    address bytea NOT NULL,
    p integer NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (eco, address)
);
CREATE TABLE pachyderm_inbox (
    seq bigint PRIMARY KEY,
    p integer NOT NULL,
    eco text NOT NULL,
    address bytea NOT NULL,
    message bytea NOT NULL,
    reply boolean NOT NULL DEFAULT false
);
CREATE INDEX pachyderm_inbox_by_partition ON pachyderm_inbox (p, seq);
CREATE TABLE pachyderm_timers (
    seq bigint PRIMARY KEY,
    due bigint NOT NULL,
    p integer NOT NULL,
    eco text NOT NULL,
    owner bytea,
    name text,
    recipient bytea NOT NULL,
    message bytea NOT NULL
);
CREATE INDEX pachyderm_timers_by_due ON pachyderm_timers (p, due, seq);
CREATE INDEX pachyderm_timers_by_name ON pachyderm_timers (eco, owner, name)
    WHERE name IS NOT NULL;
CREATE TABLE pachyderm_dead_letters (
    eco text NOT NULL,
    id bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (eco, id)
);
CREATE TABLE pachyderm_replies (
    seq bigint PRIMARY KEY,
    record bytea,
    dead_letter bigint
);
CREATE SEQUENCE pachyderm_incarnation;
"""

# Upgrades from each version to the next, run in the opening transaction. A new
# database is made at version 1 and upgraded like any other, so every upgrade runs
# in every test run.
UPGRADES: dict[int, str] = {
    # 2: followers in other processes. Each entity row counts its versions; a
    # process following an entity it does not run has a pachyderm_follows row, and
    # the commit that changes the entity leaves it a pachyderm_updates row. Replies
    # are timed, so those of a process that died can be swept. Inbox rows are taken
    # in the order they were written (pos), not by seq: seqs of different processes
    # do not compare, and a sender that moved from a newer process to an older one
    # had its later messages applied first. Rows already there get positions in
    # the order the table holds them.
    1: """
    ALTER TABLE pachyderm_entities ADD COLUMN version bigint NOT NULL DEFAULT 1;
    CREATE TABLE pachyderm_follows (
        eco text NOT NULL,
        address bytea NOT NULL,
        follower text NOT NULL,
        seen timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (eco, address, follower)
    );
    CREATE TABLE pachyderm_updates (
        id bigserial PRIMARY KEY,
        follower text NOT NULL,
        eco text NOT NULL,
        address bytea NOT NULL,
        version bigint NOT NULL,
        record bytea NOT NULL
    );
    CREATE INDEX pachyderm_updates_by_follower ON pachyderm_updates (follower, id);
    ALTER TABLE pachyderm_replies ADD COLUMN made timestamptz NOT NULL DEFAULT now();
    CREATE SEQUENCE pachyderm_inbox_pos;
    ALTER TABLE pachyderm_inbox
        ADD COLUMN pos bigint NOT NULL DEFAULT nextval('pachyderm_inbox_pos');
    DROP INDEX pachyderm_inbox_by_partition;
    CREATE INDEX pachyderm_inbox_by_partition ON pachyderm_inbox (p, pos);
    """,
}


def ensure_schema(
    connection: Any, name: str, partitions: int, version: int = SCHEMA_VERSION
) -> int:
    """Create the schema, or check and upgrade it; return the database's partition count.

    Runs under a transaction-level advisory lock so that processes opening a
    new database together create it once. ``version``: the version to bring it
    to (tests make older ones).

    Raises:
        StoreCorruptedError: the schema is newer than this code, or the
            database has Pachyderm tables without a version.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        (exists,) = connection.execute(
            "SELECT to_regclass('pachyderm_meta') IS NOT NULL"
        ).fetchone()
        if not exists:
            connection.execute(_CREATE)
            connection.execute(
                "INSERT INTO pachyderm_meta VALUES ('schema_version', 1), ('partitions', %s)",
                (partitions,),
            )
            connection.execute(
                "INSERT INTO pachyderm_partitions (p) SELECT generate_series(0, %s - 1)",
                (partitions,),
            )
            _upgrade(connection, 1, version)
            return partitions
        meta = dict(connection.execute("SELECT key, value FROM pachyderm_meta").fetchall())
        stored = meta.get("schema_version")
        if stored is None or "partitions" not in meta:
            raise StoreCorruptedError(
                f"{name} has a pachyderm_meta table without a schema version or partition "
                f"count: it was not made by Pachyderm, or it is damaged"
            )
        if stored > SCHEMA_VERSION:
            raise StoreCorruptedError(
                f"{name} has Pachyderm schema version {stored}, but this Pachyderm knows "
                f"versions up to {SCHEMA_VERSION}: upgrade pachyderm-entities in this process"
            )
        _upgrade(connection, stored, version)
        return int(meta["partitions"])


def _upgrade(connection: Any, stored: int, version: int) -> None:
    while stored < version:
        connection.execute(UPGRADES[stored])
        stored += 1
        connection.execute(
            "UPDATE pachyderm_meta SET value = %s WHERE key = 'schema_version'", (stored,)
        )
