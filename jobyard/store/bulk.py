"""Many rows in one statement: inserting them, the fast way on each database, and
ending them by id (``ending_update``, run with ``executemany``).

PostgreSQL gets one ``INSERT ... SELECT FROM unnest(<one array per column>)``: a
handful of parameters whatever the number of rows, so neither the driver nor the
server parses thousands of placeholders (a batch of 500 tasks: ~12 ms instead of
~45-90 ms with a multi-row VALUES). SQLite gets the driver's own ``executemany``
of one prepared statement, with the values converted by the columns' types first:
no network, so what costs is Python's work per row, and SQLAlchemy's per-row
bookkeeping (or its multi-row VALUES for RETURNING) doubled the time of a batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
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
    columns of the inserted rows (in no particular order). The rows are inserted in the
    order given, so an autoincrement key ascends in that order: sorted by it, the rows
    returned follow ``rows``.

    ``skip_conflicts_on``: the columns of a unique constraint; a row that would break it
    is left out (``ON CONFLICT (...) DO NOTHING``) instead of failing the statement.
    """
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return _insert_unnest(conn, table, rows, returning, skip_conflicts_on)
    return _insert_executemany(conn, table, rows, returning, skip_conflicts_on)


def ending_update(
    table: sa.Table, key: str, statuses: Sequence[str], values: Mapping[str, Any]
) -> sa.Update:
    """``UPDATE table SET values WHERE id = :key AND status IN statuses``, to be built
    once and run with ``executemany``: a turn ends many rows with one statement, and
    none is built or keyed per row. A row whose status has moved on stays as it was."""
    return (
        table.update()
        .where(
            table.c.id == sa.bindparam(key),
            sa.or_(*(table.c.status == status for status in statuses)),
        )
        .values(**values)
    )


def typed_param(table: sa.Table, name: str, column: str) -> sa.BindParameter[Any]:
    """A bound parameter converted as ``table``'s ``column`` is (times to UTC text on SQLite)."""
    return sa.bindparam(name, type_=table.c[column].type)


def _insert_executemany(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[sa.Column[Any]],
    skip_conflicts_on: Sequence[sa.Column[Any]],
) -> list[Row[Any]]:
    names = list(rows[0])
    quoted = ", ".join(_quote(conn, name) for name in names)
    sql = (
        f"INSERT INTO {_quote(conn, table.name)} ({quoted}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    ) + _on_conflict(conn, skip_conflicts_on)
    columns = [_to_db(conn, table.c[name], [row[name] for row in rows]) for name in names]
    params = list(zip(*columns, strict=True))
    if not returning:
        conn.exec_driver_sql(sql, params)
        return []
    # The driver's executemany returns no rows. New rows get rowids above every
    # existing one, and no other writer can insert between these statements: this
    # transaction holds SQLite's write lock, or its snapshot would fail the insert.
    before = conn.execute(
        sa.select(sa.func.max(sa.literal_column("rowid"))).select_from(table)
    ).scalar()
    conn.exec_driver_sql(sql, params)
    rowid: sa.ColumnElement[int] = sa.literal_column("rowid")
    inserted = sa.select(*returning).where(rowid > (before or 0)).order_by(rowid)
    return list(conn.execute(inserted))


def _to_db(conn: Connection, column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """The values of one column as SQLAlchemy would hand them to the driver."""
    convert = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    if convert is None:
        return values
    if isinstance(column.type, UTCDateTime):  # a batch's rows mostly share their times
        known = {value: convert(value) for value in set(values)}
        return [known[value] for value in values]
    return list(map(convert, values))


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
    # Ordered by position: a serial key's values are then drawn in the order of ``rows``.
    sql = (
        f"INSERT INTO {_quote(conn, table.name)} ({quoted}) "
        f"SELECT {quoted} FROM unnest({arrays}) WITH ORDINALITY AS given({quoted}, position) "
        "ORDER BY position"
    ) + _on_conflict(conn, skip_conflicts_on)
    if returning:
        sql += " RETURNING " + ", ".join(_quote(conn, column.name) for column in returning)
    params = {
        _param(i): [_value(column, row[column.name]) for row in rows]
        for i, column in enumerate(columns)
    }
    result = conn.execute(sa.text(sql), params)
    return list(result) if returning else []


def _on_conflict(conn: Connection, keys: Sequence[sa.Column[Any]]) -> str:
    if not keys:
        return ""
    return f" ON CONFLICT ({', '.join(_quote(conn, column.name) for column in keys)}) DO NOTHING"


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
