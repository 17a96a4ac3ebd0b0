"""The Runner contract (issue 13): the same cases against every runner, apscheduler's habit.

`local` runs on SQLite and PostgreSQL; `memory` (the queued protocol with an in-process queue)
and `celery` (a real Redis broker and a Celery worker in a thread) need PostgreSQL, as
distributed mode does. A case here says what any runner must do, never how.
"""

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select, update

from digest.clock import Clock, FixedClock
from digest.config import Settings
from digest.db.models import Article, Delivery, DeliveryStatus, Subscriber
from digest.deliver.transports import make_transport
from digest.newsletter import SourceConfig
from digest.runners.base import Runner
from digest.runners.local import LocalRunner
from digest.runners.memory import MemoryRunner
from tests.world import World, make_world

REDIS = "redis://127.0.0.1:6379/12"  # a database of its own; each test also has its own queue
EVERY_RUNNER = pytest.mark.parametrize(
    ("kind", "db_url"),
    [("local", "sqlite"), ("local", "postgresql"), ("memory", "postgresql"), ("celery", "postgresql")],
    indirect=["db_url"],
)
MakeRunner = Callable[[Settings, Clock], Runner]


def _redis_or_skip() -> None:
    import redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as e:
        if os.environ.get("DIGEST_REQUIRE_POSTGRES"):
            pytest.fail(f"DIGEST_REQUIRE_POSTGRES is set but Redis at {REDIS} is unreachable: {e}")
        pytest.skip(f"Redis at {REDIS} is unreachable")
    finally:
        client.close()


@pytest.fixture
def runner_for(kind: str) -> Iterator[MakeRunner]:
    """Makes the runner under test for a world's settings and clock (a worker too, for celery)."""
    with ExitStack() as stack:

        def make(settings: Settings, clock: Clock) -> Runner:
            if kind == "local":
                return LocalRunner(settings)
            if kind == "memory":
                return MemoryRunner(settings, transport_factory=lambda: make_transport(settings, clock=clock))
            from celery.contrib.testing.worker import start_worker

            from digest.runners import celery

            state = celery.WorkerState(settings, clock=clock)
            stack.callback(lambda: state._engine.dispose() if state._engine is not None else None)
            app = celery.make_app(settings, state=state)
            stack.enter_context(start_worker(app, pool="solo", perform_ping_check=False))
            return celery.CeleryRunner(settings)

        yield make


def _world(kind: str, engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime, count: int) -> World:
    extra: dict[str, object] = {"database_url": db_url, "transport": "file"}
    if kind == "celery":
        _redis_or_skip()
        extra |= {"broker_url": REDIS, "broker_queue": f"contract-{uuid.uuid4().hex[:12]}"}
    return make_world(engine, demo_dir, now, count, **extra)


def _sent_to(world: World) -> list[str]:
    """The recipients of the messages in the outbox, one per message."""
    return sorted(
        line.split(":", 1)[1].strip()
        for path in world.settings.outbox_dir.rglob("*.eml")
        for line in path.read_text(errors="replace").splitlines()
        if line.lower().startswith("to:")
    )


@EVERY_RUNNER
def test_a_collect_reports_every_source_in_order_and_stores_their_articles(
    kind: str, runner_for: MakeRunner, engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime
) -> None:
    world = _world(kind, engine, db_url, demo_dir, now, 0)
    with Session(engine) as session:  # make_world collected once: start from no articles
        session.execute(sa.delete(Article))
        session.commit()
    broken = SourceConfig(name="Gone", url=str(demo_dir / "feeds" / "missing.xml"))
    newsletter = world.newsletter.model_copy(update={"sources": [*world.newsletter.sources, broken]})
    runner = runner_for(world.settings, FixedClock(now))
    fetched: list[str] = []

    results = runner.collect(
        newsletter, engine=engine, clock=FixedClock(now), on_fetched=lambda name, _: fetched.append(name)
    )

    assert [r.name for r in results] == [s.name for s in newsletter.sources]
    assert [r.status for r in results][-1] == "failed"
    assert "Gone" in (results[-1].error or "")
    assert all(r.status != "failed" for r in results[:-1])
    assert sorted(fetched) == sorted(s.name for s in newsletter.sources)
    with Session(engine) as session:
        stored = session.exec(select(Article)).all()
    assert len(stored) == sum(r.new for r in results) > 0
    assert {a.first_seen_at for a in stored} == {now}  # the clock read once, at the start

    again = runner.collect(newsletter, engine=engine, clock=FixedClock(now + timedelta(hours=1)))
    assert sum(r.new for r in again) == 0
    with Session(engine) as session:
        assert len(session.exec(select(Article)).all()) == len(stored)


@EVERY_RUNNER
def test_a_send_reaches_every_reader_once_and_a_second_send_nobody(
    kind: str, runner_for: MakeRunner, engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime
) -> None:
    world = _world(kind, engine, db_url, demo_dir, now, 7)
    clock = FixedClock(now)  # one clock for the coordinator and its workers, as in production
    runner = runner_for(world.settings, clock)

    first = runner.send(world.newsletter, engine=engine, edition_date=now.date(), clock=clock)
    assert (first.sent, first.failed, first.retry, first.unknown) == (7, 0, 0, 0)
    assert _sent_to(world) == world.emails

    clock.advance(timedelta(minutes=5))  # run again later: a queued send tells its own answers
    # from earlier ones by their time
    second = runner.send(world.newsletter, engine=engine, edition_date=now.date(), clock=clock)
    assert (second.sent, second.already) == (0, 7)
    assert second.nothing_new
    assert _sent_to(world) == world.emails  # nothing sent twice
    with Session(engine) as session:
        statuses = session.exec(select(Delivery.status)).all()
    assert statuses == [DeliveryStatus.SENT] * 7


@EVERY_RUNNER
def test_a_send_for_one_zone_reaches_only_its_readers(
    kind: str, runner_for: MakeRunner, engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime
) -> None:
    world = _world(kind, engine, db_url, demo_dir, now, 5)
    tokyo = world.emails[:2]
    with Session(engine) as session:
        session.execute(
            update(Subscriber).where(col(Subscriber.email).in_(tokyo)).values(timezone="Asia/Tokyo")
        )
        session.commit()
    clock = FixedClock(now)
    runner = runner_for(world.settings, clock)

    report = runner.send(
        world.newsletter, engine=engine, edition_date=now.date(), clock=clock, zone="Asia/Tokyo"
    )
    assert report.sent == 2
    assert _sent_to(world) == tokyo

    clock.advance(timedelta(minutes=5))
    rest = runner.send(
        world.newsletter, engine=engine, edition_date=now.date(), clock=clock, zone=world.settings.timezone
    )
    assert rest.sent == 3
    assert _sent_to(world) == world.emails
