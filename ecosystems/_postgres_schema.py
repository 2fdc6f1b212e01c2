"""The Postgres ecosystem's tables, created and versioned by the library on first open.

Every table is prefixed ``pachyderm_``, so an application's own tables can
share the database. ``pachyderm_meta`` holds the schema version and the
partition count, fixed when the schema is created: every process that opens
the database must agree on where an entity lives.
"""

from __future__ import annotations

from typing import Any

from pachyderm.errors import StoreCorruptedError

__all__ = ["DEAD_LETTER_TAKEN", "DEFAULT_PARTITIONS", "FENCED", "SCHEMA_VERSION", "ensure_schema"]

SCHEMA_VERSION = 5
DEFAULT_PARTITIONS = 64
FENCED = "PD001"
"""SQLSTATE of a group refused by ``pachyderm_fence``: a partition it changes moved on."""
DEAD_LETTER_TAKEN = "PD002"
"""SQLSTATE of a group removing a dead letter another process removed first."""
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
    # 3: a group in one round trip. Its statements and its COMMIT go to the server
    # together (a pipeline), so what must refuse a group is checked there: the fence
    # (partitions moved on) and dead letters taken by another process raise, with
    # SQLSTATEs of their own, and the server rolls the group back. Each process marks
    # the last group it wrote in pachyderm_writes, in that group's transaction: after
    # a connection lost mid-group, the mark says whether the group committed. Inbox
    # rows carry the id of the transaction that wrote them, so that a scan reads only
    # the rows of transactions the last scan's snapshot did not see, and the process
    # waiting on a reply (its incarnation: its notification channel), instead of a
    # flag (a waiter from before the upgrade is gone: 0).
    2: """
    CREATE FUNCTION pachyderm_fence(ps integer[], epochs bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        moved record;
    BEGIN
        -- The share locks are held to the commit: no owner change comes in between.
        FOR moved IN
            SELECT t.p, t.epoch, e.epoch AS mine
            FROM pachyderm_partitions AS t JOIN unnest(ps, epochs) AS e (p, epoch) USING (p)
            ORDER BY t.p FOR SHARE OF t
        LOOP
            IF moved.epoch <> moved.mine THEN
                RAISE EXCEPTION 'partition % moved to another worker (epoch %, this worker '
                    'had %): this group was not written; its entities are run there now',
                    moved.p, moved.epoch, NULLIF(moved.mine, -1)
                    USING ERRCODE = 'PD001';
            END IF;
        END LOOP;
    END $$;
    CREATE FUNCTION pachyderm_take_dead_letters(ecos text[], ids bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        letter record;
    BEGIN
        FOR letter IN SELECT * FROM unnest(ecos, ids) AS l (eco, id) LOOP
            DELETE FROM pachyderm_dead_letters WHERE eco = letter.eco AND id = letter.id;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'dead letter % of ecosystem % was taken by another process '
                    '(redelivered or discarded there) while this one did the same',
                    letter.id, quote_literal(letter.eco)
                    USING ERRCODE = 'PD002';
            END IF;
        END LOOP;
    END $$;
    ALTER TABLE pachyderm_inbox
        ADD COLUMN xid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
        ADD COLUMN waiter bigint;
    UPDATE pachyderm_inbox SET waiter = 0 WHERE reply;
    ALTER TABLE pachyderm_inbox DROP COLUMN reply;
    DROP INDEX pachyderm_inbox_by_partition;
    CREATE INDEX pachyderm_inbox_by_partition ON pachyderm_inbox (p, xid);
    CREATE TABLE pachyderm_writes (
        incarnation bigint PRIMARY KEY,
        serial bigint NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 4: dead letters claimed in their rows. A process redelivering or discarding a
    # letter claims it (claimed_by: its incarnation) until the group removing it
    # commits, and that group removes only letters it claimed. A claim outlives the
    # claimer's reconnects (the session advisory lock it replaces did not: a reader
    # that reconnected lost it, and two processes could take one letter); it lapses
    # (claimed_until) only if its process's writing session is gone by then.
    # pachyderm_take_dead_letters stays for processes of version 3 still running, and
    # now refuses a letter a process of version 4 claimed.
    3: """
    ALTER TABLE pachyderm_dead_letters
        ADD COLUMN claimed_by bigint,
        ADD COLUMN claimed_until timestamptz;
    CREATE FUNCTION pachyderm_take_claimed_dead_letters(
        ecos text[], ids bigint[], claimer bigint
    ) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        letter record;
    BEGIN
        FOR letter IN SELECT * FROM unnest(ecos, ids) AS l (eco, id) LOOP
            DELETE FROM pachyderm_dead_letters
            WHERE eco = letter.eco AND id = letter.id
            AND claimed_by IS NOT DISTINCT FROM claimer;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'dead letter % of ecosystem % was taken by another process '
                    '(redelivered or discarded there) while this one did the same',
                    letter.id, quote_literal(letter.eco)
                    USING ERRCODE = 'PD002';
            END IF;
        END LOOP;
    END $$;
    -- Version 3's: only unclaimed letters (no claimer).
    CREATE OR REPLACE FUNCTION pachyderm_take_dead_letters(ecos text[], ids bigint[])
    RETURNS void
    LANGUAGE sql AS $$ SELECT pachyderm_take_claimed_dead_letters(ecos, ids, NULL) $$;
    """,
    # 5: each worker's lease beside its liveness. A worker counted the others alive by
    # its own lease: one with a shorter lease than another's missed that one between
    # its renewals, took its share, handed it back, and again. (A row from before the
    # upgrade has none: counted by the reader's own, as before.)
    4: """
    ALTER TABLE pachyderm_workers ADD COLUMN lease double precision;
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
