"""Per-subscriber time zones, catch-up after downtime and stale skips, with fixed clocks."""

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStory,
    ScheduleRun,
    Subscriber,
    SubscriberStatus,
)
from digest.db.queries import zone_audience
from digest.deliver.send import send_edition
from digest.runners.local import LocalRunner
from digest.schedule import dispatch, zones
from tests.schedule_helpers import Clock, RecordingTransport, add_story, add_subscribers, newsletter, settings

ZONES = ["Asia/Tokyo", "Asia/Kolkata", "Europe/Paris", "America/Los_Angeles", None]


def tick(engine: sa.Engine, tmp_path: Path, db_url: str, clock: Clock, transport: RecordingTransport) -> list:
    cfg = settings(tmp_path, db_url)
    return dispatch.dispatch(
        cfg,
        newsletter(),
        engine=engine,
        clock=clock,
        runner=LocalRunner(cfg, transport_factory=lambda: transport),
        owner="test",
    )


# --- pure ---------------------------------------------------------------------------------


def test_due_at_is_local_send_time_through_dst() -> None:
    seven = time(7, 0)
    assert zones.due_at("Europe/Paris", date(2026, 10, 24), seven) == datetime(2026, 10, 24, 5, 0, tzinfo=UTC)
    assert zones.due_at("Europe/Paris", date(2026, 10, 25), seven) == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)
    # 02:30 does not exist in Paris on 2026-03-29: it comes an hour on, never a day late
    assert zones.due_at("Europe/Paris", date(2026, 3, 29), time(2, 30)) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


def test_latest_due_is_yesterday_before_send_time() -> None:
    seven = time(7, 0)
    before = datetime(2026, 11, 25, 21, 59, tzinfo=UTC)  # 06:59 in Tokyo on the 26th
    assert zones.latest_due("Asia/Tokyo", seven, before) == (
        date(2026, 11, 25),
        datetime(2026, 11, 24, 22, 0, tzinfo=UTC),
    )
    at = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    assert zones.latest_due("Asia/Tokyo", seven, at)[0] == date(2026, 11, 26)
    assert zones.next_due("Asia/Tokyo", seven, at) == (
        date(2026, 11, 27),
        datetime(2026, 11, 26, 22, 0, tzinfo=UTC),
    )


def test_plan_marks_stale_zones() -> None:
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    plans = {
        p.zone: p
        for p in zones.plan(["UTC", "Asia/Tokyo"], send_time=time(7, 0), now=now, lateness=timedelta(hours=6))
    }
    assert plans["UTC"].late == timedelta(hours=2)
    assert not plans["UTC"].stale
    assert plans["Asia/Tokyo"].late == timedelta(hours=11)
    assert plans["Asia/Tokyo"].stale


# --- the quarter-hourly run, over days ---------------------------------------------------


def test_each_reader_gets_every_story_once_at_their_local_send_time_across_a_dst_change(
    engine: sa.Engine, tmp_path: Path, db_url: str
) -> None:
    # Paris leaves summer time on 2026-10-25. At the start every zone's latest edition is stale,
    # so from then on every send is on time.
    start = datetime(2026, 10, 22, 13, 30, tzinfo=UTC)
    end = datetime(2026, 10, 28, 12, 0, tzinfo=UTC)
    emails = add_subscribers(engine, start, ZONES)
    add_subscribers(engine, start, ["Asia/Tokyo"], status=SubscriberStatus.PENDING)
    zone_of = dict(zip(emails, [z or "UTC" for z in ZONES], strict=True))
    clock = Clock(start)
    transport = RecordingTransport(clock)
    story = 1
    add_story(engine, start, story)
    while clock.now < end:
        if clock.now.minute == 0 and clock.now.hour % 3 == 0:
            story += 1
            add_story(engine, clock.now, story)
        tick(engine, tmp_path, db_url, clock, transport)
        clock.now += timedelta(minutes=30)  # every zone here is due on a full or half hour

    by_reader: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for sent_at, message in transport.sent:
        by_reader[message.to_email].append((sent_at, message.edition_id))
    assert set(by_reader) == set(emails)  # never the pending one
    with Session(engine) as session:
        stories_of = defaultdict(list)
        for link in session.exec(select(EditionStory)):
            stories_of[link.edition_id].append(link.story_id)
        dates = {e.id: e.date for e in session.exec(select(Edition))}
        unsent = session.exec(select(Delivery).where(col(Delivery.status) != DeliveryStatus.SENT)).all()
    # the only rows not sent: zones for which the first edition (built for Los Angeles, the first
    # zone due after the start) was already stale
    assert len(unsent) == 4
    assert {(r.status, (r.error or "")[:28]) for r in unsent} == {("skipped", "stale: edition 2026-10-22 fo")}
    for email, received in by_reader.items():
        zone = ZoneInfo(zone_of[email])
        for sent_at, edition_id in received:
            local = sent_at.astimezone(zone)
            assert (local.time(), local.date()) == (time(7, 0), dates[edition_id]), email
        got = [s for _, e in received for s in stories_of[e]]
        assert len(got) == len(set(got)), f"{email} got a story twice"
        # every edition they could have had, they had: dates are consecutive
        days = sorted(dates[e] for _, e in received)
        assert days == [days[0] + timedelta(days=i) for i in range(len(days))]
    # every reader got the editions due in their zone during the run, and together every story
    # first seen before the last edition was built
    paris = [dates[e] for _, e in by_reader[emails[2]]]
    assert paris == [date(2026, 10, d) for d in range(23, 29)]
    with Session(engine) as session:
        last_built = max(e.built_at for e in session.exec(select(Edition)))
    in_editions = {s for ids in stories_of.values() for s in ids}
    assert in_editions == set(range(1, story + 1)) - _stories_after(engine, last_built)


def _stories_after(engine: sa.Engine, moment: datetime) -> set[int]:
    from digest.db.models import Story

    with Session(engine) as session:
        return {s.id for s in session.exec(select(Story).where(Story.first_seen_at > moment)) if s.id}


def test_catch_up_once_after_downtime_and_skip_what_is_stale(
    engine: sa.Engine, tmp_path: Path, db_url: str
) -> None:
    day = date(2026, 11, 25)
    [utc, tokyo] = add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["UTC", "Asia/Tokyo"])
    clock = Clock(datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
    transport = RecordingTransport(clock)
    add_story(engine, clock.now, 1)
    tick(engine, tmp_path, db_url, clock, transport)  # the 23rd, UTC: 1 h late, sent
    # down from here until 09:00 UTC on the 25th: Tokyo missed the 24th and the 25th, UTC the 24th
    add_story(engine, datetime(2026, 11, 24, 3, 0, tzinfo=UTC), 2)
    add_story(engine, datetime(2026, 11, 25, 3, 0, tzinfo=UTC), 3)
    clock.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    results = tick(engine, tmp_path, db_url, clock, transport)
    assert {(r.plan.zone, r.plan.edition_date, r.status) for r in results} == {
        ("UTC", day, "ok"),
        ("Asia/Tokyo", day, "skipped"),
    }
    clock.now += timedelta(minutes=15)
    assert tick(engine, tmp_path, db_url, clock, transport) == []  # once, not again
    sent = [(m.to_email, m.edition_id) for _, m in transport.sent]
    with Session(engine) as session:
        editions = {e.date: e for e in session.exec(select(Edition))}
        assert sorted(editions) == [date(2026, 11, 23), day]  # the 24th was never built: coalesced
        assert sent == [(utc, editions[date(2026, 11, 23)].id), (utc, editions[day].id)]
        stories = [
            s.story_id
            for s in session.exec(select(EditionStory).where(EditionStory.edition_id == editions[day].id))
        ]
        assert sorted(stories) == [2, 3]  # nothing lost to the missed day
        tokyo_id = session.exec(select(Subscriber.id).where(Subscriber.email == tokyo)).one()
        row = session.exec(
            select(Delivery).where(
                Delivery.subscriber_id == tokyo_id, Delivery.edition_id == editions[day].id
            )
        ).one()
        assert row.status == DeliveryStatus.SKIPPED
        assert row.error is not None
        assert row.error.startswith("stale: edition 2026-11-25 for Asia/Tokyo")
        runs = session.exec(select(ScheduleRun).where(ScheduleRun.status == "skipped")).all()
        assert [r.key for r in runs] == ["2026-11-23 Asia/Tokyo", "2026-11-25 Asia/Tokyo"]
        assert "11.0 h ago (limit 6 h)" in runs[1].detail
    # Tokyo is back on time for the next edition
    clock.now = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
    results = tick(engine, tmp_path, db_url, clock, transport)
    assert [(r.plan.zone, r.plan.edition_date, r.status) for r in results] == [
        ("Asia/Tokyo", date(2026, 11, 26), "ok")
    ]


def test_a_stale_edition_never_built_is_recorded_once_and_its_stories_wait(
    engine: sa.Engine, tmp_path: Path, db_url: str
) -> None:
    add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["UTC"])
    clock = Clock(datetime(2026, 11, 24, 7, 0, tzinfo=UTC))
    transport = RecordingTransport(clock)
    add_story(engine, clock.now - timedelta(hours=1), 1)
    assert [r.status for r in tick(engine, tmp_path, db_url, clock, transport)] == ["ok"]
    add_story(engine, datetime(2026, 11, 24, 8, 0, tzinfo=UTC), 2)
    clock.now = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)  # down over the 25th's 07:00: 13 h late
    assert [r.status for r in tick(engine, tmp_path, db_url, clock, transport)] == ["skipped"]
    clock.now += timedelta(minutes=15)
    assert tick(engine, tmp_path, db_url, clock, transport) == []  # recorded once
    with Session(engine) as session:
        assert [e.date for e in session.exec(select(Edition))] == [date(2026, 11, 24)]
        runs = session.exec(select(ScheduleRun).order_by(col(ScheduleRun.id))).all()
        assert [(r.job, r.status) for r in runs] == [("send", "ok"), ("send", "skipped")]
    clock.now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    tick(engine, tmp_path, db_url, clock, transport)
    assert len(transport.sent) == 2
    with Session(engine) as session:
        in_26th = session.exec(select(EditionStory).where(EditionStory.edition_id == 2)).all()
        assert [s.story_id for s in in_26th] == [2]  # the stale day's story waited for the next edition


def test_a_manual_send_goes_to_everyone_at_once_and_the_scheduler_adds_nothing(
    engine: sa.Engine, tmp_path: Path, db_url: str
) -> None:
    emails = add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ZONES)
    clock = Clock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC))  # due nowhere west of Tokyo yet
    add_story(engine, clock.now, 1)
    transport = RecordingTransport(clock)
    report = send_edition(
        settings(tmp_path, db_url),
        newsletter(),
        engine=engine,
        transport=transport,
        edition_date=date(2026, 11, 25),
        clock=clock,
    )
    assert report.sent == len(emails)
    while clock.now < datetime(2026, 11, 26, 1, 0, tzinfo=UTC):
        clock.now += timedelta(minutes=15)
        tick(engine, tmp_path, db_url, clock, transport)
    dates = [m.edition_id for _, m in transport.sent]
    assert dates.count(1) == len(emails)  # the 25th: once each, from the manual send
    assert set(dates) <= {1, 2}  # then only the 26th (for zones already due)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_zone_audience_counts_no_time_zone_as_the_newsletters(engine: sa.Engine, zone: str) -> None:
    add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), [None, "UTC", "Asia/Tokyo"])
    with Session(engine) as session:
        found = session.exec(select(Subscriber.timezone).where(zone_audience(zone, "UTC"))).all()
    assert sorted(found, key=str) == ([None, "UTC"] if zone == "UTC" else ["Asia/Tokyo"])


def test_an_unknown_time_zone_in_the_database_stops_only_its_readers(
    engine: sa.Engine, tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    [good, _bad] = add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["UTC", "Mars/Olympus"])
    clock = Clock(datetime(2026, 11, 25, 7, 0, tzinfo=UTC))
    add_story(engine, clock.now, 1)
    transport = RecordingTransport(clock)
    tick(engine, tmp_path, db_url, clock, transport)
    assert [m.to_email for _, m in transport.sent] == [good]
    assert "unknown time zone 'Mars/Olympus' of 1 subscriber(s)" in caplog.text


def test_every_zone_falls_due_on_a_dispatch_tick() -> None:
    from zoneinfo import available_timezones

    # The scheduler ticks every 15 minutes from DIGEST_SEND_TIME's minute: that reaches every
    # zone only if every UTC offset in use is a multiple of 15 minutes (Kathmandu +5:45, Chatham
    # +12:45 and Eucla +8:45 included), in winter and in summer.
    send = time(7, 10)
    off_tick = [
        (zone, day)
        for zone in sorted(available_timezones())
        for day in (date(2026, 1, 15), date(2026, 7, 15))
        if (zones.due_at(zone, day, send).minute - send.minute) % zones.DISPATCH_EVERY_MINUTES
    ]
    assert off_tick == []
