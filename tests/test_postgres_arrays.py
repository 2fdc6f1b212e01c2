"""The arrays a group sends in PostgreSQL's binary format reach the server intact."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from ecosystems._postgres_arrays import blobs, int4s, int8s, texts

CASES: list[tuple[Callable[[Sequence[Any]], Any], str, list[Any]]] = [
    (int4s, "integer", []),
    (int4s, "integer", [0, 1, -2, 2**31 - 1, -(2**31)]),
    (int4s, "integer", [None, 3, None]),
    (int8s, "bigint", [2**63 - 1, -(2**63), 7]),
    (int8s, "bigint", [5, None]),
    (int8s, "bigint", []),
    (texts, "text", ["a", "", "é漢字", "x" * 10_000]),
    (texts, "text", [None, "y"]),
    (texts, "text", []),
    (blobs, "bytea", [b"", b"\x00\xff", bytes(range(256)), b"z" * 100_000]),
    (blobs, "bytea", [None, b"q", None]),
    (blobs, "bytea", []),
]


@pytest.mark.parametrize(("make", "kind", "items"), CASES)
def test_an_array_reads_back_as_sent(
    postgres_dsn: str, make: Callable[[Sequence[Any]], Any], kind: str, items: list[Any]
) -> None:
    """Each element, NULLs, empty arrays and the declared type (uncast) arrive as sent."""
    with psycopg.connect(postgres_dsn) as connection:
        row = connection.execute(
            f"SELECT %b::{kind}[], pg_typeof(%b)::text, cardinality(%b::{kind}[])",
            (make(items), make(items), make(items)),
        ).fetchone()
    assert row is not None
    got, type_name, length = row
    if kind == "bytea":
        got = [None if item is None else bytes(item) for item in got]
    assert (got, type_name, length) == (items, f"{kind}[]", len(items))


def test_a_memoryview_is_sent_as_its_bytes(postgres_dsn: str) -> None:
    """Blobs may be memoryviews (records read back from the server are)."""
    with psycopg.connect(postgres_dsn) as connection:
        row = connection.execute("SELECT %b::bytea[]", (blobs([memoryview(b"mv")]),)).fetchone()
    assert row is not None
    assert [bytes(item) for item in row[0]] == [b"mv"]


def test_a_value_out_of_the_element_range_is_refused_before_sending(postgres_dsn: str) -> None:
    """An int4 array cannot carry a bigint: the packing refuses it, never truncates it."""
    with psycopg.connect(postgres_dsn) as connection, pytest.raises(struct.error):
        connection.execute("SELECT %b::int[]", (int4s([2**31]),))
