"""Inserting many rows in one statement, the fast way on each database.

PostgreSQL gets one ``INSERT ... SELECT FROM unnest(<one array per column>)``: a
handful of parameters whatever the number of rows, so neither the driver nor the
server parses thousands of placeholders (a batch of 500 tasks: ~12 ms instead of
~45-90 ms with a multi-row VALUES). SQLite gets a multi-row insert through
SQLAlchemy's executemany, which costs little there: no network, no placeholder
parsing in Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Row

from jobyard.store.tables import UTCDateTime


def insert_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[sa.Column[Any]] = (),
    skip_conflicts_on: Sequence[sa.Column[Any]] = (),
) -> list[Row[Any]]:
    """Insert ``rows`` (all with the same keys) into ``table``; return the ``returning``
    columns of the inserted rows (in no particular order).

    ``skip_conflicts_on``: the columns of a unique constraint; a row that would break it
    is left out (``ON CONFLICT (...) DO NOTHING``) instead of failing the statement.
    """
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return _insert_unnest(conn, table, rows, returning, skip_conflicts_on)
    insert = sqlite.insert(table)
    if skip_conflicts_on:
        insert = insert.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
    if not returning:
        conn.execute(insert, list(rows))
        return []
    return list(conn.execute(insert.returning(*returning), list(rows)))


def _insert_unnest(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[sa.Column[Any]],
    skip_conflicts_on: Sequence[sa.Column[Any]],
) -> list[Row[Any]]:
    names = list(rows[0])
    columns = [table.c[name] for name in names]
    arrays = ", ".join(
        f"CAST(:{_param(i)} AS {_array_type(column)})" for i, column in enumerate(columns)
    )
    quoted = ", ".join(_quote(conn, name) for name in names)
    sql = (
        f"INSERT INTO {_quote(conn, table.name)} ({quoted}) "
        f"SELECT * FROM unnest({arrays}) AS given({quoted})"
    )
    if skip_conflicts_on:
        keys = ", ".join(_quote(conn, column.name) for column in skip_conflicts_on)
        sql += f" ON CONFLICT ({keys}) DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(_quote(conn, column.name) for column in returning)
    params = {
        _param(i): [_value(column, row[column.name]) for row in rows]
        for i, column in enumerate(columns)
    }
    result = conn.execute(sa.text(sql), params)
    return list(result) if returning else []


def _param(index: int) -> str:
    return f"column_{index}"


def _quote(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def _array_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "timestamptz[]"
    if isinstance(kind, sa.JSON):
        return "json[]"
    if isinstance(kind, sa.BigInteger):
        return "bigint[]"
    if isinstance(kind, sa.Integer):
        return "integer[]"
    if isinstance(kind, sa.Boolean):
        return "boolean[]"
    if isinstance(kind, sa.Float):
        return "float8[]"
    if isinstance(kind, sa.String):  # also Text
        return "text[]"
    raise TypeError(f"no array type for column {column.name} of type {kind!r}")


def _value(column: sa.Column[Any], value: Any) -> Any:
    if isinstance(column.type, sa.JSON):
        return json.dumps(value)  # None too: JSON null, as SQLAlchemy's JSON type stores it
    if value is None:
        return None
    if isinstance(column.type, UTCDateTime) and value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value
