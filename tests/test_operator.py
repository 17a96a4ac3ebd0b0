"""What the operator sees is what will happen (issue 11): the dry run counts like a send, a second
send says it was already sent, `digest status` names the send that will really come next, and
story times read in each reader's own time zone."""

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from digest import pipeline
from digest.cli import app
from digest.clock import FixedClock
from digest.db.engine import session_scope
from digest.db.models import Edition, Subscriber, SubscriberStatus
from digest.deliver import ledger
from digest.deliver.memory import MemoryTransport
from tests.cli_helpers import ClockedRunner
from tests.world import World, use_in_cli

DAY = "2026-11-25"


@pytest.fixture
def env(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The world's settings as environment variables, for the CLI."""
    use_in_cli(world, monkeypatch)
    return world


def _cli(at: datetime, *args: str) -> str:
    result = ClockedRunner(FixedClock(at)).invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _add(
    world: World, email: str, status: SubscriberStatus, *, zone: str | None = None, **kw: object
) -> None:
    with session_scope(world.engine) as session:
        session.add(
            Subscriber(
                email=email,
                status=status,
                timezone=zone,
                created_at=world.now,
                updated_at=world.now,
                **kw,  # type: ignore[arg-type]
            )
        )


def test_a_dry_run_counts_what_a_send_would_do_now(env: World) -> None:
    now = env.now
    assert "would send 12, skip 0" in _cli(now, "send", "--dry-run", "--date", DAY)
    assert "sent 12" in _cli(now, "send", "--date", DAY)
    later = now + timedelta(hours=2)
    for name in ("new1", "new2", "new3"):
        _add(env, f"{name}@example.com", SubscriberStatus.ACTIVE)
    with session_scope(env.engine) as session:  # a send that stopped after giving them their rows
        edition = session.exec(select(Edition)).one()
        ledger.ensure_deliveries(edition.id or 0, session=session, now=later)
        new3 = session.exec(select(Subscriber).where(Subscriber.email == "new3@example.com")).one()
        new3.status = SubscriberStatus.UNSUBSCRIBED  # ... then one of them left
        session.add(new3)
    _add(env, "back@example.com", SubscriberStatus.PAUSED, paused_until=later - timedelta(hours=1))
    _add(env, "away@example.com", SubscriberStatus.PAUSED, paused_until=later + timedelta(days=7))
    _add(env, "bounced@example.com", SubscriberStatus.BOUNCED)
    _add(env, "gone@example.com", SubscriberStatus.UNSUBSCRIBED)

    # new1, new2 and the reader whose pause ended get it; new3's row is skipped; the rest are out
    dry = _cli(later, "send", "--dry-run", "--date", DAY)
    assert "would send 3, skip 1; already sent to 12" in dry
    real = _cli(later, "send", "--date", DAY)
    assert "sent 3, failed 0, to retry 0, skipped 1, unknown 0; already sent to 12 before" in real
    assert "would send 0, skip 0; already sent to 15" in _cli(later, "send", "--dry-run", "--date", DAY)
    again = _cli(later, "send", "--date", DAY)
    assert f"edition {DAY}: already sent to 15; nothing left to send" in again
    assert "sent 0" not in again


def _next_sends(output: str) -> dict[str, tuple[str, str]]:
    """Each time zone's (next edition, due in UTC) from the "Next sends" table of `digest status`."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if (len(cells) == 5 and "/" in cells[0]) or cells[:1] == ["UTC"]:
            found[cells[0]] = (cells[2], cells[4])
    return found


def test_status_names_the_send_that_comes_next_after_a_manual_send(env: World) -> None:
    _add(env, "tokyo@example.com", SubscriberStatus.ACTIVE, zone="Asia/Tokyo")
    _add(env, "ny@example.com", SubscriberStatus.ACTIVE, zone="America/New_York")
    early = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, 22:00 the day before in New York
    raw = ClockedRunner(FixedClock(early)).invoke(app, ["status"]).output
    assert _next_sends(raw) == {
        "UTC": (DAY, "11-25 07:00"),
        "Asia/Tokyo": (DAY, "11-24 22:00"),  # due five hours ago, not sent: the next dispatch sends it
        "America/New_York": (DAY, "11-25 12:00"),
    }
    assert "overdue: edition 2026-11-25 for Asia/Tokyo was due 11-24 22:00 UTC" in raw
    assert "sent 14" in _cli(early, "send", "--date", DAY)  # by hand, to every zone at once
    raw = ClockedRunner(FixedClock(early + timedelta(minutes=5))).invoke(app, ["status"]).output
    assert _next_sends(raw) == {
        "UTC": ("2026-11-26", "11-26 07:00"),
        "Asia/Tokyo": ("2026-11-26", "11-25 22:00"),
        "America/New_York": ("2026-11-26", "11-26 12:00"),
    }
    assert "overdue" not in raw
    # A reader who joins now has not had it: for their zone it is still the next send.
    _add(env, "late@example.com", SubscriberStatus.ACTIVE)
    raw = ClockedRunner(FixedClock(early + timedelta(minutes=10))).invoke(app, ["status"]).output
    assert _next_sends(raw)["UTC"] == (DAY, "11-25 07:00")


def test_story_times_read_in_each_readers_zone_and_each_zone_is_rendered_once(world: World) -> None:
    zones = {"p1@example.com": "Europe/Paris", "p2@example.com": "Europe/Paris"}
    zones |= {"n1@example.com": "America/New_York", "n2@example.com": "America/New_York"}
    zones |= {"k1@example.com": "Asia/Kolkata"}
    for email, zone in zones.items():
        _add(world, email, SubscriberStatus.ACTIVE, zone=zone)
    _add(world, "odd@example.com", SubscriberStatus.ACTIVE, zone="Mars/Olympus")  # edited by hand
    transport = MemoryTransport()
    assert world.send(transport).sent == 12 + 5 + 1
    by_zone: dict[str, list[str]] = defaultdict(list)
    keys: dict[str, set[str]] = defaultdict(set)
    for message in transport.sent:
        zone = zones.get(message.to_email, "UTC")  # an unknown zone reads the newsletter's
        by_zone[zone].append(message.text)
        keys[zone].add(message.content.key)
    # Two Pocket Tech stories: of 05:00 UTC, and of 23:00 UTC the day before.
    expected = {
        "UTC": ("Pocket Tech · 05:00 UTC, Nov 25", "Pocket Tech · 23:00 UTC, Nov 24"),
        "Europe/Paris": ("Pocket Tech · 06:00 CET, Nov 25", "Pocket Tech · 00:00 CET, Nov 25"),
        "America/New_York": ("Pocket Tech · 00:00 EST, Nov 25", "Pocket Tech · 18:00 EST, Nov 24"),
        "Asia/Kolkata": ("Pocket Tech · 10:30 IST, Nov 25", "Pocket Tech · 04:30 IST, Nov 25"),
    }
    for zone, labels in expected.items():
        for text in by_zone[zone]:
            for label in labels:
                assert label in text, (zone, label)
            assert len(set(re.findall(r"\d\d:\d\d (\S+), \w+ \d+", text))) == 1  # one zone per message
    # One copy per zone, shared by its readers: nothing is rendered per reader.
    assert {zone: len(k) for zone, k in keys.items()} == dict.fromkeys(expected, 1)
    assert len(set().union(*keys.values())) == 4


def test_the_preview_of_a_subscriber_shows_their_zone(world: World) -> None:
    _add(world, "tokyo@example.com", SubscriberStatus.ACTIVE, zone="Asia/Tokyo")
    shown = pipeline.preview(
        world.settings,
        world.newsletter,
        engine=world.engine,
        edition_date=world.now.date(),
        now=world.now,
        subscriber_email="tokyo@example.com",
    )
    assert "Pocket Tech · 14:00 JST, Nov 25" in shown.message.text
