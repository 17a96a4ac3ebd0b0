"""The distributed coordinator's memory: it queues id ranges computed by the database, never
holding every ledger id (the send itself is tested in tests/deliver/test_claims.py)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from digest import editions
from digest.db.engine import session_scope
from digest.db.models import Delivery, Subscriber
from digest.deliver import claims, ledger
from digest.deliver.memory import MemoryTransport
from digest.deliver.send import send_batch
from digest.runners import send_tasks
from tests.rowcount import counting_rows
from tests.world import make_world


def test_ranges_are_consecutive_batches_of_the_matching_ids(
    engine: sa.Engine, demo_dir: Path, now: datetime
) -> None:
    world = make_world(engine, demo_dir, now, 11)
    with session_scope(engine) as session:
        row, _ = editions.build_edition(
            world.newsletter, session=session, edition_date=now.date(), now=now, zone=world.settings.zone
        )
        ledger.ensure_deliveries(row.id or 0, session=session, now=now)
    with session_scope(engine) as session:
        ids = list(session.exec(select(Delivery.id).order_by(col(Delivery.id))))
        gaps = col(Delivery.id).not_in([ids[2], ids[3], ids[7]])  # ids with holes, as after skips
        ranges = send_tasks._ranges(session, gaps, 3)
    kept = [i for i in ids if i not in (ids[2], ids[3], ids[7])]
    assert [batch for batch, _ in ranges] == [
        claims.Batch(kept[0], kept[2]),
        claims.Batch(kept[3], kept[5]),
        claims.Batch(kept[6], kept[7]),
    ]
    assert [n for _, n in ranges] == [3, 3, 2]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_coordinator_never_reads_more_than_a_batch_of_rows(
    engine: sa.Engine, demo_dir: Path, now: datetime
) -> None:
    world = make_world(engine, demo_dir, now, 25, send_batch_size=4)
    transport = MemoryTransport()
    queued: list[claims.Batch] = []

    def enqueue(edition_id: int, batch: claims.Batch, zone: str | None) -> None:
        queued.append(batch)
        send_batch(
            world.settings,
            world.newsletter,
            engine=engine,
            lanes=[transport],
            edition_id=edition_id,
            batch=batch,
            owner="host:1",
            clock=lambda: now,
        )

    with counting_rows(engine) as fetched:
        report = send_tasks.send_distributed(
            world.settings,
            world.newsletter,
            engine=engine,
            edition_date=now.date(),
            clock=lambda: now,
            enqueue=enqueue,
            sleep=lambda _: pytest.fail("nothing should be left to wait for"),
        )
    assert report.sent == 25
    assert len(queued) == 7
    reads = fetched.reading(Subscriber.__tablename__, Delivery.__tablename__)  # type: ignore[arg-type]
    assert sum(rows for _, rows in reads) >= 25
    # Only the ranges themselves come back as more than a batch: one row per queued batch.
    larger = [(sql, rows) for sql, rows in reads if rows > 4]
    assert [rows for _, rows in larger] == [len(queued)], larger
    assert "GROUP BY" in larger[0][0]


def test_the_wait_polls_sooner_when_the_last_rows_are_due_before_the_next_poll() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert send_tasks._next_poll(None, t0, 500, 1.0) == 1.0  # no rate known yet
    assert send_tasks._next_poll((t0, 1000), t0 + timedelta(seconds=1), 600, 1.0) == 1.0  # 1.5 s to go
    assert (
        send_tasks._next_poll((t0, 1000), t0 + timedelta(seconds=1), 200, 1.0) == 0.25
    )  # 800/s: 200 in 0.25 s
    assert send_tasks._next_poll((t0, 1000), t0 + timedelta(seconds=1), 1, 1.0) == send_tasks.MIN_POLL_SECONDS
    assert send_tasks._next_poll((t0, 1000), t0 + timedelta(seconds=1), 1000, 1.0) == 1.0  # no progress
