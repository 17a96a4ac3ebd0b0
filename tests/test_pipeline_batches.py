"""A send's memory does not grow with the list: it reads subscribers and the ledger in batches.

The guard counts the rows the database driver hands back for every statement, through a cursor
subclass plugged into the engine's connections: no statement that reads subscribers or
deliveries may return more than DIGEST_SEND_BATCH_SIZE rows. Loading every subscriber (or
every ledger id) anywhere in the send fails it, on SQLite and on PostgreSQL alike, without
measuring the machine.
"""

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest import pipeline
from digest.db.models import Delivery, Subscriber
from digest.deliver.journal import FAILURES_KEPT
from digest.deliver.memory import MemoryTransport
from tests.rowcount import Fetched, counting_rows
from tests.world import make_world

BATCH = 7
READERS = 40  # more than five batches


@pytest.fixture
def fetched(engine: sa.Engine) -> Iterator[Fetched]:
    """Rows per statement on `engine` during the test."""
    with counting_rows(engine) as found:
        yield found


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
    world = make_world(engine, demo_dir, now, FAILURES_KEPT + 5)
    memory = MemoryTransport()
    for email in world.emails:
        memory.failing(email, "451 try later", permanent=False)
    report = world.send(memory)
    assert report.retry == FAILURES_KEPT + 5
    assert len(report.failures) == FAILURES_KEPT
    assert report.failures[0] == f"{world.emails[0]}: 451 try later"


def test_a_dry_run_counts_reads_in_batches_and_saves_nothing(
    engine: sa.Engine, demo_dir: Path, now: datetime, fetched: Fetched
) -> None:
    world = make_world(engine, demo_dir, now, READERS, send_batch_size=BATCH)
    fetched.statements.clear()
    report = pipeline.dry_run(
        world.settings, world.newsletter, engine=engine, edition_date=now.date(), clock=lambda: now
    )
    assert (report.sent, report.skipped) == (READERS, 0)
    reads = fetched.reading(Subscriber.__tablename__, Delivery.__tablename__)  # type: ignore[arg-type]
    assert sum(rows for _, rows in reads) >= READERS
    assert max(rows for _, rows in reads) <= BATCH
    with Session(engine) as session:
        assert session.exec(select(Delivery)).first() is None
