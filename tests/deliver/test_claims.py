"""Claims and the coordinator in one process, on PostgreSQL, with the in-memory transport and an
eager queue that runs every task twice (a redelivered task must send nothing twice)."""

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from digest import editions
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus
from digest.deliver import claims, ledger
from digest.deliver.base import SendResult
from digest.deliver.journal import SendReport
from digest.deliver.memory import MemoryTransport
from digest.deliver.send import send_batch
from digest.errors import DeliveryError
from digest.runners import send_tasks
from tests.world import World, make_world

LEASE = timedelta(seconds=120)
pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
def world(engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime) -> World:
    w = make_world(engine, demo_dir, now, 25, send_batch_size=4)
    with session_scope(engine) as session:
        editions.build_edition(
            w.newsletter, session=session, edition_date=now.date(), now=now, zone=w.settings.zone
        )
    return w


def _edition_id(world: World) -> int:
    with session_scope(world.engine) as session:
        row = queries.edition_for(world.now.date(), session=session)
        assert row is not None
        assert row.id is not None
        return row.id


def _statuses(engine: sa.Engine) -> dict[int, str]:
    with session_scope(engine) as session:
        return {i: str(s) for i, s in session.exec(select(Delivery.id, Delivery.status))}


def _ticking(start: datetime) -> Callable[[], datetime]:
    """A fixed clock that moves one millisecond per reading (answers come after the run starts)."""
    ticks = itertools.count()
    return lambda: start + timedelta(milliseconds=next(ticks))


def _coordinate(world: World, transport: MemoryTransport, *, runs_per_task: int = 2) -> SendReport:
    tasks: list[tuple[int, claims.Batch]] = []
    clock = _ticking(world.now)

    def enqueue(edition_id: int, batch: claims.Batch, zone: str | None) -> None:
        tasks.append((edition_id, batch))
        for n in range(runs_per_task):  # eager, and redelivered
            send_batch(
                world.settings,
                world.newsletter,
                engine=world.engine,
                lanes=[transport],
                edition_id=edition_id,
                batch=batch,
                owner=f"host:{n}",
                clock=clock,
            )

    report = send_tasks.send_distributed(
        world.settings,
        world.newsletter,
        engine=world.engine,
        edition_date=world.now.date(),
        clock=clock,
        enqueue=enqueue,
        sleep=lambda _: pytest.fail("nothing should be left to wait for"),
    )
    assert len(tasks) == 7  # 25 rows in batches of 4
    return report


def test_redelivered_tasks_send_each_row_once(world: World) -> None:
    transport = (
        MemoryTransport()
        .failing("reader003@example.com")
        .failing("reader004@example.com", "451 later", permanent=False)
    )
    report = _coordinate(world, transport)
    copies = [m.to_email for m in transport.sent]
    assert sorted(copies) == sorted(
        e for e in world.emails if e not in ("reader003@example.com", "reader004@example.com")
    )
    assert (report.sent, report.failed, report.retry, report.unknown) == (23, 1, 1, 0)
    statuses = sorted(_statuses(world.engine).values())
    assert statuses.count(DeliveryStatus.SENT.value) == 23
    with session_scope(world.engine) as session:
        per_worker = claims.per_worker(_edition_id(world), session=session)
    assert sum(by.get("sent", 0) for by in per_worker.values()) == 23


def test_a_claim_is_free_again_only_after_the_lease(world: World) -> None:
    now = world.now
    edition_id = _edition_id(world)
    with session_scope(world.engine) as session:  # the coordinator's rows; then two workers compete
        ledger.ensure_deliveries(edition_id, session=session, now=now)
    batch = claims.Batch(0, 10**9)
    with session_scope(world.engine) as session:
        assert claims.claim(edition_id, batch, session=session, owner="a:1", now=now, lease=LEASE) == 25
    with session_scope(world.engine) as session:
        soon = now + LEASE - timedelta(seconds=1)
        assert claims.claim(edition_id, batch, session=session, owner="b:2", now=soon, lease=LEASE) == 0
    # a:1 marks one row sending, then goes silent.
    writer = claims.ClaimWriter(world.engine, owner="a:1", edition_id=edition_id, lease=LEASE)
    first = min(_statuses(world.engine))
    writer.write([], [first], now=now)
    later = now + LEASE + timedelta(seconds=1)
    with session_scope(world.engine) as session:
        assert claims.expire_sending(edition_id, session=session, now=later, lease=LEASE) == 1
        assert claims.claim(edition_id, batch, session=session, owner="b:2", now=later, lease=LEASE) == 24
    assert _statuses(world.engine)[first] == DeliveryStatus.UNKNOWN.value
    # a:1 wakes up: its next claim is refused, its answer for the first row is still recorded.
    with pytest.raises(claims.LeaseLost):
        writer.write([SendResult(first, True)], [first + 1], now=later)
    writer.close()
    statuses = _statuses(world.engine)
    assert statuses[first] == DeliveryStatus.SENT.value
    assert statuses[first + 1] == DeliveryStatus.PENDING.value  # b:2's to send, not marked by a:1


def test_a_workers_first_step_leaves_the_claim_it_just_made_and_renews_a_third_of_a_lease_on(
    world: World,
) -> None:
    now = world.now
    edition_id = _edition_id(world)
    with session_scope(world.engine) as session:
        ledger.ensure_deliveries(edition_id, session=session, now=now)
        claims.claim(edition_id, claims.Batch(0, 10**9), session=session, owner="a:1", now=now, lease=LEASE)
    writer = claims.ClaimWriter(world.engine, owner="a:1", edition_id=edition_id, lease=LEASE, claimed_at=now)
    first, second, third, *_ = sorted(_statuses(world.engine))

    def claimed_at(row: int) -> datetime | None:
        with session_scope(world.engine) as session:
            delivery = session.get(Delivery, row)
            assert delivery is not None
            return delivery.claimed_at

    writer.write([], [first], now=now + timedelta(seconds=1))
    assert claimed_at(third) == now  # not written again: the claim is its first renewal
    renewal = now + LEASE / 3
    writer.write([SendResult(first, True)], [second], now=renewal)
    writer.close()
    assert claimed_at(third) == renewal


def test_a_refused_enqueue_is_retried_at_the_next_sweep(world: World) -> None:
    transport = MemoryTransport()
    clock = [world.now]
    refused: list[claims.Batch] = []

    def enqueue(edition_id: int, batch: claims.Batch, zone: str | None) -> None:
        if not refused:
            refused.append(batch)
            raise DeliveryError("broker redis://127.0.0.1:6379: connection refused")
        send_batch(
            world.settings,
            world.newsletter,
            engine=world.engine,
            lanes=[transport],
            edition_id=edition_id,
            batch=batch,
            owner="host:1",
            clock=lambda: clock[0],
        )

    def sleep(_: float) -> None:
        clock[0] += timedelta(seconds=world.settings.claim_lease_seconds)

    report = send_tasks.send_distributed(
        world.settings,
        world.newsletter,
        engine=world.engine,
        edition_date=world.now.date(),
        clock=lambda: clock[0],
        enqueue=enqueue,
        sleep=sleep,
    )
    assert report.sent == 25
    assert sorted(m.to_email for m in transport.sent) == sorted(world.emails)


def test_a_workers_sweep_reads_only_its_batch_and_the_coordinators_the_whole_edition(world: World) -> None:
    # A worker sweeps before each batch; over the whole edition that grew with the square of the
    # list (the status has no index). The coordinator's sweep, once a lease, finds the rest.
    now = world.now
    edition_id = _edition_id(world)
    with session_scope(world.engine) as session:
        ledger.ensure_deliveries(edition_id, session=session, now=now)
        claims.claim(edition_id, claims.Batch(0, 10**9), session=session, owner="a:1", now=now, lease=LEASE)
    first, second, *rest = sorted(_statuses(world.engine))
    writer = claims.ClaimWriter(world.engine, owner="a:1", edition_id=edition_id, lease=LEASE)
    writer.write([], [first, rest[-1]], now=now)  # then a:1 dies with both in flight
    writer.close()
    later = now + LEASE + timedelta(seconds=1)
    with session_scope(world.engine) as session:
        swept = claims.expire_sending(
            edition_id, session=session, now=later, lease=LEASE, batch=claims.Batch(first, second)
        )
    statuses = _statuses(world.engine)
    assert (swept, statuses[first], statuses[rest[-1]]) == (1, "unknown", "sending")
    with session_scope(world.engine) as session:
        assert claims.expire_sending(edition_id, session=session, now=later, lease=LEASE) == 1
    assert _statuses(world.engine)[rest[-1]] == "unknown"
