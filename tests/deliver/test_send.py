"""send_edition: exactly once, skips, bounces, retries, crashes, lanes and the rate limit."""

from collections import Counter
from collections.abc import Sequence

import pytest
from sqlmodel import select

from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.file import FileTransport
from digest.deliver.lock import send_lock
from digest.deliver.memory import MemoryTransport
from digest.deliver.sender import RateLimiter
from digest.errors import DeliveryError, TransportUnavailable
from digest.subscribers.roster import get_subscriber
from digest.subscribers.status import unsubscribe
from tests.world import World


def statuses(world: World) -> Counter[str]:
    with session_scope(world.engine) as session:
        return Counter(str(d.status) for d in session.exec(select(Delivery)))


def test_everyone_gets_one_copy_and_a_second_send_sends_nothing(world: World) -> None:
    memory = MemoryTransport()
    report = world.send(memory)
    assert report.sent == 12
    assert not report.needs_attention
    assert sorted(m.to_email for m in memory.sent) == world.emails
    assert all(len(call) == 1 for call in memory.calls)  # one message in flight at a time
    again = MemoryTransport()
    assert world.send(again).sent == 0
    assert again.sent == []
    assert statuses(world) == {"sent": 12}


def test_messages_carry_unsubscribe_headers_and_links(world: World) -> None:
    memory = MemoryTransport()
    world.send(memory)
    m = memory.sent[0]
    assert m.unsubscribe_url.startswith("https://digest.example/unsubscribe/")
    assert m.list_unsubscribe == f"<{m.unsubscribe_url}>"
    assert m.unsubscribe_url in m.text
    assert m.unsubscribe_url in m.html
    assert "1 Example Street, Springfield" in m.text
    assert "1 Example Street, Springfield" in m.html


def test_unsubscribed_after_the_build_are_skipped_at_send_time(world: World) -> None:
    class UnsubscribeOnFirst(MemoryTransport):
        def send(self, messages: list[OutgoingMessage]) -> list[SendResult]:  # type: ignore[override]
            if not self.sent:
                with session_scope(world.engine) as session:
                    s = get_subscriber(world.emails[-1], session=session)
                    unsubscribe(s, session=session, now=world.now, method="link")
            return super().send(messages)

    memory = UnsubscribeOnFirst()
    report = world.send(memory, batch_size=1)
    assert report.sent == 11
    assert report.skipped == 1
    assert world.emails[-1] not in {m.to_email for m in memory.sent}


def test_a_bounce_is_recorded_and_suppresses_the_address(world: World) -> None:
    memory = MemoryTransport().failing(world.emails[2], "550 5.1.1 no such user")
    report = world.send(memory)
    assert (report.sent, report.failed) == (11, 1)
    assert report.needs_attention
    assert report.failures == (f"{world.emails[2]}: 550 5.1.1 no such user",)
    with session_scope(world.engine) as session:
        s = get_subscriber(world.emails[2], session=session)
        assert s.status == SubscriberStatus.BOUNCED
        event = session.exec(select(SubscriberEvent).where(SubscriberEvent.kind == "bounce")).one()
        assert (event.method, event.subscriber_id) == ("bounce", s.id)
        row = session.exec(select(Delivery).where(Delivery.subscriber_id == s.id)).one()
        assert (row.status, row.error) == (DeliveryStatus.FAILED, "550 5.1.1 no such user")


def test_transient_failures_are_recorded_and_retried_by_the_next_send(world: World) -> None:
    memory = MemoryTransport().failing(world.emails[0], "451 try later", permanent=False)
    report = world.send(memory)
    assert (report.sent, report.retry) == (11, 1)
    assert report.needs_attention
    with session_scope(world.engine) as session:
        row = session.exec(select(Delivery).where(Delivery.status == DeliveryStatus.RETRY)).one()
        assert row.error == "451 try later"
        assert row.attempts == 1
    second = MemoryTransport()
    report = world.send(second)
    assert [m.to_email for m in second.sent] == [world.emails[0]]
    assert not report.needs_attention
    assert statuses(world) == {"sent": 12}


class Crash(BaseException):
    """Stands in for kill -9 inside the transport call (the subprocess test does the real thing)."""


class CrashingTransport(MemoryTransport):
    def __init__(self, after: int, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.after = after

    def send(self, messages: list[OutgoingMessage]) -> list[SendResult]:  # type: ignore[override]
        if len(self.calls) == self.after:
            self.calls.append(list(messages))
            raise Crash
        return super().send(messages)


def test_a_crash_leaves_only_the_call_in_flight_unknown(world: World) -> None:
    crashing = CrashingTransport(after=5)
    with pytest.raises(Crash):
        world.send(crashing)
    assert statuses(world) == {"sent": 5, "sending": 1, "pending": 6}
    rest = MemoryTransport()
    report = world.send(rest)
    assert report.sent == 6
    assert report.unknown == 1
    assert report.needs_attention
    in_flight = crashing.calls[-1][0].to_email
    got = Counter(m.to_email for m in crashing.sent + rest.sent)
    assert got == Counter({e: 1 for e in world.emails if e != in_flight})
    resend = MemoryTransport()
    report = world.send(resend, resend_unknown=True)
    assert [m.to_email for m in resend.sent] == [in_flight]
    assert report.unknown == 0
    assert statuses(world) == {"sent": 12}


def test_a_batch_transport_crash_leaves_at_most_one_call_unknown(world: World) -> None:
    crashing = CrashingTransport(after=1, max_batch=5)
    with pytest.raises(Crash):
        world.send(crashing)
    assert statuses(world) == {"sent": 5, "sending": 5, "pending": 2}


def test_a_crash_inside_a_file_outbox_call_never_leaves_a_reader_two_files(world: World) -> None:
    """The file outbox writes up to 100 files per call (two commits, not two hundred): a crash
    mid-call leaves that call's rows unknown, and resending them rewrites the same files."""
    assert FileTransport.max_batch == 100

    class CrashMidCall(FileTransport):
        def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
            if any(world.settings.outbox_dir.rglob("*.eml")):
                super().send(messages[:2])  # two of this call's files are written, then the crash
                raise Crash
            return super().send(messages)

    crashing = CrashMidCall(world.settings.outbox_dir, clock=lambda: world.now)
    crashing.max_batch = 5
    with pytest.raises(Crash):
        world.send(crashing)
    assert statuses(world) == {"sent": 5, "sending": 5, "pending": 2}
    report = world.send(
        FileTransport(world.settings.outbox_dir, clock=lambda: world.now), resend_unknown=True
    )
    assert report.sent == 7 and statuses(world) == {"sent": 12}
    files = sorted(p.name for p in world.settings.outbox_dir.rglob("*.eml"))
    assert len(files) == 12 and sorted(f.split("-", 1)[1][: -len(".eml")] for f in files) == world.emails


def test_parallel_lanes_send_everyone_once(world: World) -> None:
    lanes = [MemoryTransport() for _ in range(3)]
    report = world.send(lanes[0], lanes=lanes)
    assert report.sent == 12
    got = Counter(m.to_email for lane in lanes for m in lane.sent)
    assert got == Counter(world.emails)
    assert all(lane.closed for lane in lanes)


def test_the_rate_limit_paces_calls(world: World) -> None:
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(4.0, monotonic=lambda: clock[0], sleep=sleep)
    world.send(MemoryTransport(), limiter=limiter)
    assert waits == [0.25] * 11  # 12 messages at 4 a second: 11 waits of a quarter second
    assert clock[0] == pytest.approx(2.75)


def test_an_unreachable_server_stops_the_send_and_loses_nothing(world: World) -> None:
    class Down(MemoryTransport):
        def send(self, messages: list[OutgoingMessage]) -> list[SendResult]:  # type: ignore[override]
            if len(self.sent) == 3:
                raise TransportUnavailable("SMTP 127.0.0.1:1: cannot connect")
            return super().send(messages)

    with pytest.raises(TransportUnavailable):
        world.send(Down())
    assert statuses(world) == {"sent": 3, "retry": 1, "pending": 8}
    assert world.send(MemoryTransport()).sent == 9


def test_only_one_send_at_a_time(world: World) -> None:
    with send_lock(world.engine), pytest.raises(DeliveryError, match="another `digest send` is running"):
        world.send(MemoryTransport())


def test_paused_subscribers_are_skipped_and_resume_when_the_pause_ends(world: World) -> None:
    from datetime import timedelta

    from digest.subscribers.status import pause

    with session_scope(world.engine) as session:
        s = get_subscriber(world.emails[0], session=session)
        pause(s, session=session, now=world.now, until=world.now + timedelta(hours=1))
    memory = MemoryTransport()
    world.send(memory)
    assert world.emails[0] not in {m.to_email for m in memory.sent}
    world.now += timedelta(hours=2)  # same edition date: the pause ended before it was sent
    later = MemoryTransport()
    world.send(later)
    assert world.emails[0] in {m.to_email for m in later.sent}
    with session_scope(world.engine) as session:
        kinds = [
            e.kind for e in session.exec(select(SubscriberEvent).where(SubscriberEvent.subscriber_id == s.id))
        ]
        assert kinds == ["subscribe", "pause", "resume"]
        assert session.get(Subscriber, s.id).status == SubscriberStatus.ACTIVE  # type: ignore[union-attr]


def test_the_ledger_stores_times_as_the_orm_does(world: World) -> None:
    """The send loop converts its time stamp once a step (issue 15): the stored value reads back
    as the same aware UTC time, in the same form an ORM write gives it."""
    world.send(MemoryTransport())
    with session_scope(world.engine) as session:
        rows = list(session.exec(select(Delivery)))
        assert {d.sent_at for d in rows} == {d.updated_at for d in rows} == {world.now}
        subscriber = session.exec(select(Subscriber)).first()
        assert subscriber is not None
        subscriber.updated_at = world.now  # written by the ORM
        session.add(subscriber)
        session.flush()
        conn = session.connection()
        raw = {
            conn.exec_driver_sql("SELECT sent_at FROM delivery").scalars().first(),
            conn.exec_driver_sql(f"SELECT updated_at FROM subscriber WHERE id = {subscriber.id}").scalar(),
        }
    assert len(raw) == 1
