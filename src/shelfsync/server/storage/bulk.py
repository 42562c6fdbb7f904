"""Statements straight to the driver, for the hot bulk writes and reads (issue 7).

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
batch writes 2,000 rows), where COPY streams the rows in one statement. The
rows go in COPY's binary format, each value dumped for its column's own type
(`_copy_types`): half the client's CPU of the text format (psycopg's text
row writer costs about 10 us a row, the binary one 5), and the server reads
the values without parsing text. The stored values are the same
(tests/storage/test_bulk_contract.py).

`select_rows` is the read counterpart, for the feed page's 1,001 rows: the
statement compiled once, run on the driver's cursor, and its rows handed back
as the driver's plain tuples. Through `Connection.execute` each row became a
SQLAlchemy Row first (about a fifth of the page's read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import postgres
from sqlalchemy.engine import Connection, Dialect

__all__ = [
    "Bind",
    "CompiledSelect",
    "bind_processor",
    "driver_select",
    "executemany",
    "insert_rows",
    "insert_sql",
    "select_rows",
    "update_sql",
]

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
    driver = conn.connection.driver_connection
    assert driver is not None  # an open Connection has its driver connection
    types = _copy_types(dialect, table, tuple(columns))
    # Identifiers of our own tables, quoted by the dialect; the rows are data.
    sql = f"COPY {prep.format_table(table)} ({names}) FROM STDIN"
    if types is not None:
        sql += " (FORMAT BINARY)"
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    except dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would have raised it (the callers translate those).
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc


_COPY_TYPES: dict[tuple[str, tuple[str, ...]], list[str] | None] = {}


def _copy_types(dialect: Dialect, table: sa.Table, columns: tuple[str, ...]) -> list[str] | None:
    """The PostgreSQL type of each column, as psycopg names it (`int4`,
    `varchar`, ...), for a binary COPY; None if psycopg lacks one of them
    (that table then goes in COPY's text format)."""
    key = (table.name, columns)
    if key not in _COPY_TYPES:
        names: list[str] | None = []
        for c in columns:
            declared = table.c[c].type.compile(dialect=dialect)
            info = postgres.types.get(declared.split("(", 1)[0].strip().lower())
            if info is None or names is None:
                names = None
                break
            names.append(info.name)
        _COPY_TYPES[key] = names
    return _COPY_TYPES[key]


class CompiledSelect:
    """A SELECT compiled once for one dialect: its SQL in the driver's parameter
    style and how each parameter binds (also Database.first_nowait's)."""

    def __init__(self, statement: sa.Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.statement = statement  # kept: the cache is keyed by its id
        self.sql = str(compiled)
        self.positional = compiled.positiontup  # None: named (psycopg's pyformat)
        # The literals' values (LIMIT's offset); the caller's parameters come later.
        self.fixed = compiled.construct_params(
            {name: None for name, bind in compiled.binds.items() if bind.required}
        )
        self.binds = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }

    def args(self, params: dict[str, Any]) -> list[Any] | dict[str, Any]:
        values = {**self.fixed, **params}
        for name, process in self.binds.items():
            if process is not None and name in values:
                values[name] = process(values[name])
        if self.positional is None:
            return values
        return [values[name] for name in self.positional]


_SELECTS: dict[tuple[int, str], CompiledSelect] = {}


def driver_select(
    dialect: Dialect, statement: sa.Select[Any], params: dict[str, Any]
) -> tuple[str, list[Any] | dict[str, Any]]:
    """`statement` as the driver takes it: its SQL in the driver's parameter
    style and `params` bound as SQLAlchemy binds them. `statement` must live as
    long as the process (it is compiled once, by id)."""
    key = (id(statement), dialect.name)
    select = _SELECTS.get(key)
    if select is None or select.statement is not statement:
        select = _SELECTS[key] = CompiledSelect(statement, dialect)
    return select.sql, select.args(params)


def select_rows(
    conn: Connection, statement: sa.Select[Any], params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Every row of `statement` (see driver_select) as the driver returns it:
    plain tuples, with no result processing (the caller selects what it can
    read raw, such as text)."""
    dialect = conn.dialect
    sql, args = driver_select(dialect, statement, params)
    driver = conn.connection.driver_connection
    assert driver is not None  # an open Connection has its driver connection
    try:
        cursor = driver.cursor()
        try:
            cursor.execute(sql, args)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        finally:
            cursor.close()
    except dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy would have raised it (the callers translate those).
        raise sa.exc.DBAPIError.instance(
            sql, args, exc, dialect.loaded_dbapi.Error, dialect=dialect
        ) from exc
    return rows
