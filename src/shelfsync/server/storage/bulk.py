"""executemany straight to the driver, for the hot bulk writes (issue 7).

`Connection.execute(stmt, [dict, ...])` builds a parameter dictionary per row
and runs each value through its type's bind processor inside SQLAlchemy's
generic machinery; for a report batch of 1,000 changes that cost more than the
driver's own work inserting the rows (profile in docs/benchmarks.md).

Here the caller builds each row as a plain tuple, converting the values that
need it with the *same* bind processor SQLAlchemy would apply for the column
and dialect (so the stored values are identical; tests/storage compares them),
and the statement goes to the driver's executemany through `exec_driver_sql`.

Inserts on PostgreSQL go through COPY instead (`insert_rows`): psycopg's
executemany, even pipelined, spends about 30 us of Python per row (a report
batch writes 2,000 rows), where COPY streams the rows in one statement; the
server converts the same text as it would for the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

__all__ = ["Bind", "bind_processor", "executemany", "insert_rows", "insert_sql", "update_sql"]

Bind = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def bind_processor(column: sa.Column[Any], dialect: Dialect) -> Bind:
    """What SQLAlchemy does to a Python value bound to `column` (None passes through)."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else _identity


def _placeholder(dialect: Dialect) -> str:
    # pysqlite is "qmark"; psycopg's "pyformat" style includes plain "%s".
    if dialect.paramstyle == "qmark":
        return "?"
    if dialect.paramstyle in ("format", "pyformat"):
        return "%s"
    raise NotImplementedError(f"bulk writes: no placeholder for {dialect.paramstyle}")


def insert_sql(dialect: Dialect, table: sa.Table, columns: Sequence[str]) -> str:
    """`INSERT INTO table (columns...) VALUES (?, ...)` in the driver's style."""
    prep = dialect.identifier_preparer
    names = ", ".join(prep.quote(table.c[c].name) for c in columns)
    marks = ", ".join([_placeholder(dialect)] * len(columns))
    # Identifiers of our own tables, quoted by the dialect; values go as parameters.
    return f"INSERT INTO {prep.format_table(table)} ({names}) VALUES ({marks})"  # noqa: S608


def update_sql(dialect: Dialect, table: sa.Table, columns: Sequence[str], *, key: str) -> str:
    """`UPDATE table SET c1 = ?, ... WHERE key = ?`: each row ends with the key's value."""
    prep = dialect.identifier_preparer
    mark = _placeholder(dialect)
    sets = ", ".join(f"{prep.quote(table.c[c].name)} = {mark}" for c in columns)
    table_name, key_name = prep.format_table(table), prep.quote(table.c[key].name)
    return f"UPDATE {table_name} SET {sets} WHERE {key_name} = {mark}"  # noqa: S608


def executemany(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        conn.exec_driver_sql(sql, list(rows))


def insert_rows(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert `rows` (values in `columns` order, bound as for executemany)."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name != "postgresql":
        executemany(conn, insert_sql(dialect, table, columns), rows)
        return
    prep = dialect.identifier_preparer
    names = ", ".join(prep.quote(table.c[c].name) for c in columns)
    # Identifiers of our own tables, quoted by the dialect; the rows are data.
    sql = f"COPY {prep.format_table(table)} ({names}) FROM STDIN"
    driver = conn.connection.driver_connection
    assert driver is not None  # an open Connection has its driver connection
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would have raised it (the callers translate those).
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc
