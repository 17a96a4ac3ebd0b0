"""A send's memory does not grow with the list: it reads subscribers and the ledger in batches.

The guard counts the rows the database driver hands back for every statement, through a cursor
subclass plugged into the engine's connections: no statement that reads subscribers or
deliveries may return more than DIGEST_SEND_BATCH_SIZE rows. Loading every subscriber (or
every ledger id) anywhere in the send fails it, on SQLite and on PostgreSQL alike, without
measuring the machine.
"""

import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from digest.db.models import Delivery, Subscriber
from digest.deliver.memory import MemoryTransport
from tests.world import make_world

BATCH = 7
READERS = 40  # more than five batches


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


@pytest.fixture
def fetched(engine: sa.Engine) -> Iterator[Fetched]:
    """Count the rows of every statement on `engine`'s connections from now on."""
    found = Fetched()
    sqlite_connection, pg_cursor = _counting_classes(found)

    def counting(dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        if dialect.name == "sqlite":
            cparams["factory"] = sqlite_connection
        else:
            cparams["cursor_factory"] = pg_cursor

    sa.event.listen(engine, "do_connect", counting)
    engine.dispose()  # pooled connections predate the counting
    yield found
    sa.event.remove(engine, "do_connect", counting)
    engine.dispose()


def test_a_send_never_reads_more_than_a_batch_of_subscribers_or_deliveries(
    engine: sa.Engine, demo_dir: Path, now: datetime, fetched: Fetched
) -> None:
    world = make_world(engine, demo_dir, now, READERS, send_batch_size=BATCH)
    fetched.statements.clear()  # the setup above is not the send
    memory = MemoryTransport()
    report = world.send(memory)
    assert report.sent == READERS
    reads = fetched.reading(Subscriber.__tablename__, Delivery.__tablename__)  # type: ignore[arg-type]
    assert reads, "no statement counted: the counting cursor is not in use"
    # The ledger was really read through the counting cursor, page by page...
    assert sum(rows for _, rows in reads) >= READERS
    # ...and never more than a batch at a time.
    assert max(rows for _, rows in reads) <= BATCH, max(reads, key=lambda r: r[1])


def test_a_report_lists_a_bounded_number_of_failures(
    engine: sa.Engine, demo_dir: Path, now: datetime
) -> None:
    from digest import pipeline

    world = make_world(engine, demo_dir, now, pipeline.FAILURES_KEPT + 5)
    memory = MemoryTransport()
    for email in world.emails:
        memory.failing(email, "451 try later", permanent=False)
    report = world.send(memory)
    assert report.retry == pipeline.FAILURES_KEPT + 5
    assert len(report.failures) == pipeline.FAILURES_KEPT
    assert report.failures[0] == f"{world.emails[0]}: 451 try later"
