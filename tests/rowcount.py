"""Counting the rows a database driver hands back, per statement (SQLite and PostgreSQL).

`counting_rows(engine)` plugs a cursor subclass into the engine's new connections; a test then
asserts on `Fetched.reading(table, ...)`, e.g. that a send never reads more than a batch.
"""

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa


class Fetched:
    """Rows returned per executed statement, in order: [sql, rows] pairs."""

    def __init__(self) -> None:
        self.statements: list[list[Any]] = []

    def executed(self, sql: str) -> list[Any]:
        entry = [sql, 0]
        self.statements.append(entry)
        return entry

    def reading(self, *tables: str) -> list[tuple[str, int]]:
        """(sql, rows) of every statement naming one of `tables`."""
        named = re.compile(r"\b(" + "|".join(tables) + r")\b")
        return [(sql, rows) for sql, rows in self.statements if named.search(sql)]


def _counting_classes(fetched: Fetched) -> tuple[type, type]:
    """A sqlite3 connection class and a psycopg cursor class that report to `fetched`."""

    class SqliteCursor(sqlite3.Cursor):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.entry: list[Any] = ["", 0]

        def execute(self, sql: str, *args: Any) -> "SqliteCursor":
            self.entry = fetched.executed(sql)
            return super().execute(sql, *args)

        def fetchone(self) -> Any:
            row = super().fetchone()
            self.entry[1] += row is not None
            return row

        def fetchmany(self, *args: Any) -> list[Any]:
            rows = super().fetchmany(*args)
            self.entry[1] += len(rows)
            return rows

        def fetchall(self) -> list[Any]:
            rows = super().fetchall()
            self.entry[1] += len(rows)
            return rows

        def __next__(self) -> Any:
            row = super().__next__()
            self.entry[1] += 1
            return row

    class SqliteConnection(sqlite3.Connection):
        def cursor(self, factory: Any = SqliteCursor) -> Any:  # type: ignore[override]
            return super().cursor(factory)

    class PgCursor(psycopg.Cursor[Any]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.entry: list[Any] = ["", 0]

        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            self.entry = fetched.executed(query if isinstance(query, str) else str(query))
            return super().execute(query, *args, **kwargs)

        def fetchone(self) -> Any:
            row = super().fetchone()
            self.entry[1] += row is not None
            return row

        def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
            rows = super().fetchmany(*args, **kwargs)
            self.entry[1] += len(rows)
            return rows

        def fetchall(self) -> list[Any]:
            rows = super().fetchall()
            self.entry[1] += len(rows)
            return rows

    return SqliteConnection, PgCursor


@contextmanager
def counting_rows(engine: sa.Engine) -> Iterator[Fetched]:
    """Count the rows of every statement on `engine`'s connections while inside."""
    found = Fetched()
    sqlite_connection, pg_cursor = _counting_classes(found)

    def counting(dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        if dialect.name == "sqlite":
            cparams["factory"] = sqlite_connection
        else:
            cparams["cursor_factory"] = pg_cursor

    sa.event.listen(engine, "do_connect", counting)
    engine.dispose()  # pooled connections predate the counting
    try:
        yield found
    finally:
        sa.event.remove(engine, "do_connect", counting)
        engine.dispose()
