"""DIGEST_REQUIRE_APPROVAL (issue 14): the scheduler waits for the editor's approval until the
deadline, then skips or sends as configured; `digest status` says which edition waits. The clock
is moved by hand (SQLite and PostgreSQL)."""

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import desk
from digest.cli import app
from digest.db.models import Edition, ScheduleRun
from digest.errors import SettingsError
from digest.runners.local import LocalRunner
from digest.schedule import approval, dispatch
from tests.cli_helpers import ClockedRunner
from tests.schedule_helpers import (
    NEWSLETTER_TOML,
    Clock,
    RecordingTransport,
    add_story,
    add_subscribers,
    newsletter,
    settings,
)

DAY = date(2026, 11, 25)


def test_the_deadline_is_a_local_time_or_minutes_after_the_send_time(tmp_path: Path) -> None:
    paris = settings(
        tmp_path, "sqlite://", timezone="Europe/Paris", send_time=time(7, 0), approval_deadline="8:30"
    )
    assert approval.deadline(paris, DAY) == datetime(2026, 11, 25, 7, 30, tzinfo=UTC)  # CET is UTC+1
    later = settings(tmp_path, "sqlite://", timezone="Europe/Paris", approval_deadline="90")
    assert approval.deadline(later, DAY) == datetime(2026, 11, 25, 7, 30, tzinfo=UTC)  # 07:00 CET + 90 min
    s = settings(tmp_path, "sqlite://", approval_deadline="120")
    deadline = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert approval.decide(s, DAY, approved=False, now=deadline - timedelta(seconds=1)).action == "wait"
    assert approval.decide(s, DAY, approved=False, now=deadline).action == "skip"
    assert approval.decide(s, DAY, approved=True, now=deadline + timedelta(hours=3)).action == "send"
    sender = settings(tmp_path, "sqlite://", approval_fallback="send")
    assert approval.decide(sender, DAY, approved=False, now=deadline).action == "send"
    with pytest.raises(SettingsError, match="DIGEST_APPROVAL_DEADLINE"):
        settings(tmp_path, "sqlite://", approval_deadline="25:00")


def tick(
    engine: sa.Engine, tmp_path: Path, db_url: str, clock: Clock, transport: RecordingTransport, **more: Any
) -> list[str]:
    cfg = settings(tmp_path, db_url, require_approval=True, approval_deadline="120", **more)
    results = dispatch.dispatch(
        cfg,
        newsletter(),
        engine=engine,
        clock=clock,
        runner=LocalRunner(cfg, transport_factory=lambda: transport),
        owner="test",
    )
    return [r.status for r in results]


def runs(engine: sa.Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(ScheduleRun).order_by(col(ScheduleRun.id))).all()
        return [(r.status, r.detail) for r in rows]


def test_the_scheduler_waits_for_the_approval_and_sends_at_the_next_dispatch(
    engine: sa.Engine, tmp_path: Path, db_url: str
) -> None:
    emails = add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["UTC", None])
    clock = Clock(datetime(2026, 11, 25, 7, 0, tzinfo=UTC))
    add_story(engine, clock.now - timedelta(hours=1), 1)
    transport = RecordingTransport(clock)
    assert tick(engine, tmp_path, db_url, clock, transport) == []  # due, not approved: it waits
    clock.now += timedelta(minutes=15)
    assert tick(engine, tmp_path, db_url, clock, transport) == []
    with Session(engine) as session:
        assert session.exec(select(Edition)).all() == []  # still a draft: the desk stays open
    desk.approve(newsletter(), engine=engine, edition_date=DAY, now=clock.now, zone=UTC, horizon_days=0)
    clock.now += timedelta(minutes=15)
    assert tick(engine, tmp_path, db_url, clock, transport) == ["ok"]
    assert sorted(m.to_email for _, m in transport.sent) == sorted(emails)
    assert {t for t, _ in transport.sent} == {datetime(2026, 11, 25, 7, 30, tzinfo=UTC)}


@pytest.mark.parametrize(("fallback", "expected"), [("skip", "skipped"), ("send", "ok")])
def test_without_approval_by_the_deadline_the_edition_is_skipped_or_sent(
    engine: sa.Engine, tmp_path: Path, db_url: str, fallback: str, expected: str
) -> None:
    add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["UTC"])
    clock = Clock(datetime(2026, 11, 25, 7, 0, tzinfo=UTC))
    add_story(engine, clock.now - timedelta(hours=1), 1)
    transport = RecordingTransport(clock)
    while clock.now < datetime(2026, 11, 25, 9, 0, tzinfo=UTC):
        assert tick(engine, tmp_path, db_url, clock, transport, approval_fallback=fallback) == []
        clock.now += timedelta(minutes=15)
    assert tick(engine, tmp_path, db_url, clock, transport, approval_fallback=fallback) == [expected]
    clock.now += timedelta(minutes=15)
    assert tick(engine, tmp_path, db_url, clock, transport, approval_fallback=fallback) == []  # once
    if fallback == "skip":
        assert transport.sent == []
        assert runs(engine) == [
            ("skipped", "edition 2026-11-25 not approved by 2026-11-25 09:00 UTC: skipped"),
        ]
        # The next edition waits for its own approval, then carries what its window holds.
        add_story(engine, datetime(2026, 11, 25, 10, 0, tzinfo=UTC), 2)
        clock.now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
        assert tick(engine, tmp_path, db_url, clock, transport) == []
        desk.approve(
            newsletter(),
            engine=engine,
            edition_date=date(2026, 11, 26),
            now=clock.now,
            zone=UTC,
            horizon_days=0,
        )
        assert tick(engine, tmp_path, db_url, clock, transport) == ["ok"]
        ((_, message),) = transport.sent
        assert "Story 2" in message.text
    else:
        assert len(transport.sent) == 1


def test_status_says_which_edition_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "digest.toml").write_text(NEWSLETTER_TOML)
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "digest.toml"))
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DIGEST_REQUIRE_APPROVAL", "1")
    monkeypatch.setenv("DIGEST_APPROVAL_DEADLINE", "10:00")
    from digest.clock import FixedClock
    from digest.db.engine import open_database

    engine = open_database(f"sqlite:///{tmp_path / 'd.db'}")
    add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["UTC"])
    engine.dispose()
    runner = ClockedRunner(FixedClock(datetime(2026, 11, 25, 7, 30, tzinfo=UTC)))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert (
        "waiting: edition 2026-11-25 waits for approval (digest edition approve, or the editor's page) "
        "until 2026-11-25 10:00 UTC"
    ) in " ".join(result.output.split())
    approved = runner.invoke(app, ["edition", "approve", "--date", "2026-11-25"])
    assert approved.exit_code == 0, approved.output
    assert "waiting: edition 2026-11-25" not in runner.invoke(app, ["status"]).output
