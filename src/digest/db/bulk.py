"""Inserting many rows with one prepared statement (COPY on PostgreSQL), each value converted as
SQLAlchemy would.

`connection.execute(insert(table), rows)` costs ~25 us a row of five timestamps on SQLite: the
statement is compiled and every value goes through SQLAlchemy's parameter machinery. Here the
statement is built once, each column's bind processor (the UTC check of UTCDateTime, SQLite's
datetime to text) is looked up once, and the rows go to the driver inside the caller's
transaction (issue 15: a 200,000-row subscriber import). On PostgreSQL through psycopg the rows
go as one COPY: its executemany sends each row as its own statement, ~50 us of client CPU a row.
There, too, the ids of new rows come from the table's sequence with the probe for the rows already
there (`ids_and_new_ids`), so rows that point at them (an import's events) go in by id, in one
statement of one array (`insert_per_key`), without the server looking each one up again.
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

_NOTHING = object()


def _processor(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    # dialect_impl: the dialect's own type under a TypeDecorator (SQLite's DATETIME writes the
    # text the ORM writes; the generic DateTime would leave the datetime to sqlite3's adapter,
    # which writes another text, "+00:00" included).
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _default(column: sa.Column[Any]) -> Callable[[], Any] | None:
    """A column's Python-side default as a function of nothing (as SQLAlchemy's insert applies it)."""
    default = column.default
    if default is None or not isinstance(default, sa.ColumnDefault):
        return None
    if default.is_callable:
        arg = default.arg
        return lambda: arg(None)  # SQLAlchemy wraps a default of no arguments to take a context
    value = default.arg
    return lambda: value


def _converted(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """`values` through a bind processor. An import stamps every row with the same `now`: a
    value just converted is not converted again (SQLite's datetime to text costs more than the
    rest of the row)."""
    result: list[Any] = []
    last, done = _NOTHING, None
    for value in values:
        if value is not last:
            last, done = value, process(value)
        result.append(done)
    return result


def _holds_times(column: sa.Column[Any]) -> bool:
    try:
        return issubclass(column.type.python_type, datetime)
    except NotImplementedError:
        return False


def _as_text(process: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def text(value: Any) -> Any:
        value = value if process is None else process(value)
        return value.isoformat() if isinstance(value, datetime) else value

    return text


def _psycopg(connection: sa.Connection) -> bool:
    return connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg"


def insert_rows(connection: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT every row (dicts with the same keys), in the caller's transaction.

    A column the rows leave out gets its Python-side default, as `insert(table)` would give it,
    or else its server default or NULL.
    """
    if not rows:
        return
    keys = list(rows[0])
    if any(row.keys() != rows[0].keys() for row in rows):
        raise ValueError(f"{table.name}: rows to insert must have the same columns")
    dialect = connection.dialect
    copy = _psycopg(connection)
    defaults = {c.key: f for c in table.columns if c.key not in rows[0] and (f := _default(c)) is not None}
    names = keys + list(defaults)
    columns = []
    for name in names:
        make = defaults.get(name)
        values = [row[name] for row in rows] if make is None else [make() for _ in rows]
        process = _processor(table.c[name], dialect)
        if copy and _holds_times(table.c[name]):
            # COPY takes text: psycopg formats a datetime in ~1 us, and an import's rows share
            # one `now`, formatted once here (PostgreSQL reads ISO 8601 with its offset).
            process = _as_text(process)
        columns.append(values if process is None else _converted(values, process))
    params = list(zip(*columns, strict=True))
    preparer = dialect.identifier_preparer
    quoted = ", ".join(preparer.quote(name) for name in names)
    if copy:
        sql = f"COPY {preparer.format_table(table)} ({quoted}) FROM STDIN"
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(sql) as copy:
                for row_values in params:
                    copy.write_row(row_values)
        except dialect.loaded_dbapi.Error as e:  # as SQLAlchemy raises it: IntegrityError for a clash
            raise sa.exc.DBAPIError.instance(sql, None, e, dialect.loaded_dbapi.Error, dialect=dialect) from e
        finally:
            cursor.close()
        return
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {preparer.format_table(table)} ({quoted}) VALUES ({', '.join([mark] * len(names))})"
    connection.exec_driver_sql(sql, params)


def ids_by(connection: sa.Connection, column: sa.Column[Any], values: Sequence[Any]) -> dict[Any, Any]:
    """{value: primary key} of the rows of `column`'s table whose `column` is one of `values`
    (one statement; values as the driver takes them, e.g. text)."""
    if not values:
        return {}
    table = column.table
    (key,) = table.primary_key.columns
    quote = connection.dialect.identifier_preparer.quote
    name = quote(column.name)
    sql = (
        f"SELECT {name}, {quote(key.name)} FROM {connection.dialect.identifier_preparer.format_table(table)}"
    )
    if _psycopg(connection):  # one array parameter: one short statement to parse and plan
        found = connection.exec_driver_sql(f"{sql} WHERE {name} = ANY(%s)", (list(values),))
    else:
        marks = ", ".join(["?" if connection.dialect.paramstyle == "qmark" else "%s"] * len(values))
        found = connection.exec_driver_sql(f"{sql} WHERE {name} IN ({marks})", tuple(values))
    return dict(found.all())


def ids_and_new_ids(
    connection: sa.Connection, column: sa.Column[Any], values: Sequence[Any]
) -> tuple[dict[Any, Any], list[int] | None]:
    """`ids_by`, and on PostgreSQL, in the same round trip, one fresh id from the key's sequence
    for each of `values` (distinct) not found, ascending; None elsewhere (the rows are numbered
    as they are inserted)."""
    if not _psycopg(connection):
        return ids_by(connection, column, values), None
    if not values:
        return {}, []
    table = column.table
    (key,) = table.primary_key.columns
    preparer = connection.dialect.identifier_preparer
    name, key_name = preparer.quote(column.name), preparer.quote(key.name)
    sql = (
        f"WITH known AS (SELECT {name}, {key_name} FROM {preparer.format_table(table)} "
        f"WHERE {name} = ANY(%(values)s)) SELECT {name}, {key_name} FROM known UNION ALL "
        # the sequence named once (an InitPlan): pg_get_serial_sequence a row cost ~10 us each
        "SELECT NULL, nextval((SELECT pg_get_serial_sequence(%(table)s, %(key)s)::regclass)) "
        "FROM generate_series(1, %(count)s - (SELECT count(*) FROM known))"
    )
    params = {
        "values": list(values),
        "table": preparer.format_table(table),
        "key": key.name,
        "count": len(values),
    }
    known: dict[Any, Any] = {}
    fresh: list[int] = []
    for value, id_ in connection.exec_driver_sql(sql, params):
        if value is None:
            fresh.append(id_)
        else:
            known[value] = id_
    fresh.sort()
    return known, fresh


def insert_per_key(
    connection: sa.Connection, column: sa.Column[Any], keys: Sequence[Any], values: dict[str, Any]
) -> None:
    """One row of `column`'s table per key (into `column`), in order, every row with the same
    other `values`; a column left out gets its Python-side default, or else its server default
    or NULL. On PostgreSQL: one INSERT ... SELECT over the keys sent as one array."""
    if not keys:
        return
    table = column.table
    left_out = [c for c in table.columns if c.key not in values and c.key != column.key]
    defaults = [(c, c.default) for c in left_out if isinstance(c.default, sa.ColumnDefault)]
    if not _psycopg(connection) or any(d.is_callable for _, d in defaults):  # one value a row
        insert_rows(connection, table, [{column.key: k, **values} for k in keys])
        return
    given = {**values, **{c.key: d.arg for c, d in defaults}}
    dialect = connection.dialect
    preparer = dialect.identifier_preparer
    params: list[Any] = []
    selected = ["key"]
    for name, value in given.items():
        process = _processor(table.c[name], dialect)
        params.append(value if process is None else process(value))
        # typed: an untyped parameter in a SELECT list is text, which an integer column refuses
        selected.append(f"%s::{table.c[name].type.compile(dialect)}")
    names = ", ".join(preparer.quote(c.name) for c in (column, *(table.c[n] for n in given)))
    sql = (
        f"INSERT INTO {preparer.format_table(table)} ({names}) SELECT {', '.join(selected)} "
        f"FROM unnest(%s::{column.type.compile(dialect)}[]) WITH ORDINALITY AS k(key, n) ORDER BY n"
    )
    connection.exec_driver_sql(sql, (*params, list(keys)))
