"""Inserting many rows with one prepared statement, each value converted as SQLAlchemy would.

`connection.execute(insert(table), rows)` costs ~25 us a row of five timestamps on SQLite: the
statement is compiled and every value goes through SQLAlchemy's parameter machinery. Here the
statement is built once, each column's bind processor (the UTC check of UTCDateTime, SQLite's
datetime to text) is looked up once, and the rows go to the driver's executemany inside the
caller's transaction (issue 15: a 200,000-row subscriber import).
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

_NOTHING = object()


def _processor(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    return column.type.bind_processor(dialect)


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
    defaults = [(c.key, f) for c in table.columns if c.key not in rows[0] and (f := _default(c)) is not None]
    names = keys + [key for key, _ in defaults]
    processors = [_processor(table.c[name], dialect) for name in names]
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    preparer = dialect.identifier_preparer
    sql = (
        f"INSERT INTO {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(name) for name in names)}) VALUES ({', '.join([mark] * len(names))})"
    )
    # An import stamps every row with the same `now`: each column converts a value it was just
    # given once (SQLite's datetime to text costs more than the rest of the row).
    last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(names)
    params = []
    for row in rows:
        values = [row[key] for key in keys] + [make() for _, make in defaults]
        converted = []
        for i, (process, value) in enumerate(zip(processors, values, strict=True)):
            if process is None:
                converted.append(value)
                continue
            given, result = last[i]
            if given is not value:
                result = process(value)
                last[i] = (value, result)
            converted.append(result)
        params.append(tuple(converted))
    connection.exec_driver_sql(sql, params)
