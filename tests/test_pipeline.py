"""The send loop with the in-memory transport: ledger, skips, failures, crash leftovers."""

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from digest import pipeline
from digest.clock import FixedClock
from digest.config import load_settings
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.journal import SendReport
from digest.deliver.memory import MemoryTransport
from digest.deliver.send import send_edition
from digest.newsletter import load_newsletter
from digest.subscribers.roster import add_subscriber


def _setup(demo_dir: Path, engine: sa.Engine, now: datetime, *people: tuple[str, list[str]]) -> None:
    newsletter = load_newsletter(demo_dir / "digest.toml")
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    with session_scope(engine) as session:
        for email, topics in people:
            add_subscriber(
                email, session=session, now=now, known_topics=newsletter.topic_names, topics=topics
            )


def _send(
    demo_dir: Path, engine: sa.Engine, now: datetime, transport: MemoryTransport, **kw: object
) -> SendReport:
    settings = load_settings(var_dir=demo_dir / "var")
    newsletter = load_newsletter(demo_dir / "digest.toml")
    return send_edition(
        settings,
        newsletter,
        engine=engine,
        transport=transport,
        edition_date=now.date(),
        clock=lambda: now,
        **kw,  # type: ignore[arg-type]
    )


def _statuses(engine: sa.Engine) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.exec(select(Subscriber.email, Delivery.status).join(Delivery)).all()
    return {email: str(status) for email, status in rows}


def test_every_active_subscriber_gets_one_message(demo_dir: Path, engine: sa.Engine, now: datetime) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", []), ("b@example.com", ["Robotics"]))
    transport = MemoryTransport()
    report = _send(demo_dir, engine, now, transport)
    assert (report.sent, report.failed, report.skipped) == (2, 0, 0)
    assert sorted(m.to_email for m in transport.sent) == ["a@example.com", "b@example.com"]
    again = MemoryTransport()
    assert _send(demo_dir, engine, now + timedelta(minutes=5), again).sent == 0
    assert again.sent == []


def test_subscribers_who_left_after_the_build_are_skipped(
    demo_dir: Path, engine: sa.Engine, now: datetime
) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", []), ("b@example.com", []))
    with session_scope(engine) as session:
        b = session.exec(select(Subscriber).where(Subscriber.email == "b@example.com")).one()
        b.status = SubscriberStatus.UNSUBSCRIBED
        session.add(b)
    transport = MemoryTransport()
    report = _send(demo_dir, engine, now, transport)
    assert [m.to_email for m in transport.sent] == ["a@example.com"]
    assert report.skipped == 0  # unsubscribed before the send: no delivery row at all
    assert _statuses(engine) == {"a@example.com": "sent"}


def test_an_empty_digest_is_not_sent_and_the_reason_is_kept(
    demo_dir: Path, engine: sa.Engine, now: datetime
) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", ["More news"]))
    transport = MemoryTransport()
    report = _send(demo_dir, engine, now, transport)
    assert transport.sent == [] and report.skipped == 1
    with Session(engine) as session:
        row = session.exec(select(Delivery)).one()
    assert row.status == DeliveryStatus.SKIPPED
    assert row.error == "no new stories in their topics"


def test_a_permanent_failure_is_recorded_and_the_address_suppressed(
    demo_dir: Path, engine: sa.Engine, now: datetime
) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", []), ("bad@example.com", []), ("c@example.com", []))
    transport = MemoryTransport().failing("bad@example.com", "550 5.1.1 no such user")
    report = _send(demo_dir, engine, now, transport)
    assert (report.sent, report.failed) == (2, 1)
    assert report.needs_attention
    assert _statuses(engine)["bad@example.com"] == "failed"
    with Session(engine) as session:
        bad = session.exec(select(Subscriber).where(Subscriber.email == "bad@example.com")).one()
        assert bad.status == SubscriberStatus.BOUNCED
        event = session.exec(select(SubscriberEvent).where(SubscriberEvent.kind == "bounce")).one()
        assert event.subscriber_id == bad.id and "550" in (event.detail or "")


def test_a_transient_failure_is_retried_by_the_next_send(
    demo_dir: Path, engine: sa.Engine, now: datetime
) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", []), ("slow@example.com", []))
    first = _send(
        demo_dir, engine, now, MemoryTransport().failing("slow@example.com", "451 try later", permanent=False)
    )
    assert (first.sent, first.retry) == (1, 1)
    transport = MemoryTransport()
    second = _send(demo_dir, engine, now + timedelta(minutes=10), transport)
    assert [m.to_email for m in transport.sent] == ["slow@example.com"]
    assert second.sent == 1 and not second.needs_attention


def test_rows_left_sending_by_a_crash_become_unknown_and_are_not_resent(
    demo_dir: Path, engine: sa.Engine, now: datetime
) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", []), ("b@example.com", []))
    _send(demo_dir, engine, now, MemoryTransport())
    with session_scope(engine) as session:  # as if a crash hit while b's message was in flight
        row = session.exec(select(Delivery).join(Subscriber).where(Subscriber.email == "b@example.com")).one()
        row.status = DeliveryStatus.SENDING
        session.add(row)
    transport = MemoryTransport()
    report = _send(demo_dir, engine, now + timedelta(minutes=1), transport)
    assert transport.sent == [] and report.unknown == 1
    resend = MemoryTransport()
    _send(demo_dir, engine, now + timedelta(minutes=2), resend, resend_unknown=True)
    assert [m.to_email for m in resend.sent] == ["b@example.com"]


def test_new_subscribers_get_the_days_edition_later(demo_dir: Path, engine: sa.Engine, now: datetime) -> None:
    _setup(demo_dir, engine, now, ("a@example.com", []))
    _send(demo_dir, engine, now, MemoryTransport())
    _setup(demo_dir, engine, now, ("late@example.com", []))
    transport = MemoryTransport()
    _send(demo_dir, engine, now + timedelta(hours=1), transport)
    assert [m.to_email for m in transport.sent] == ["late@example.com"]
