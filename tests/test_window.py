"""What goes into an edition (issue 11): stories published in its window, whenever collected.

Driven through the CLI with the clock handed in at the door; feeds are local files.
"""

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest.cli import app
from digest.clock import FixedClock
from digest.db.engine import session_scope
from digest.db.models import Article, Edition, Story
from digest.subscribers.roster import add_subscriber
from tests.cli_helpers import ClockedRunner
from tests.feedbuilder import Item, newsletter_toml, rss, write

TOPICS = '[[topics]]\nname = "News"\nkeywords = ["zzz-never"]\n'


@pytest.fixture
def site(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A newsletter folder whose CLI settings point at the test database (file outbox)."""
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "digest.toml"))
    monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DIGEST_OUTBOX_DIR", str(tmp_path / "outbox"))
    _configure(tmp_path, "wire")
    return tmp_path


def _configure(folder: Path, *names: str) -> None:
    sources = {name: f"feeds/{name}.xml" for name in names}
    text = newsletter_toml(sources, topics=TOPICS, extra='catch_all_topic = "News"\nlookback_hours = 24')
    (folder / "digest.toml").write_text(text)


def _feed(folder: Path, name: str, *items: Item) -> None:
    write(folder / "feeds" / f"{name}.xml", rss(list(items)))


def _cli(at: datetime, *args: str) -> str:
    result = ClockedRunner(FixedClock(at)).invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _previewed(at: datetime, *args: str) -> list[str]:
    """The story titles of `digest preview --format json` at `at`."""
    edition = json.loads(_cli(at, "preview", "--format", "json", *args))
    return sorted(s["title"] for t in edition["topics"] for s in t["stories"])


def _sent(engine: sa.Engine, day: str) -> list[str]:
    """The story titles the edition of `day` was frozen with."""
    with Session(engine) as session:
        row = session.exec(select(Edition).where(Edition.date == datetime.fromisoformat(day).date())).one()
    edition = json.loads(row.content_json)
    return sorted(s["title"] for t in edition["topics"] for s in t["stories"])


def _reader(engine: sa.Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        add_subscriber("reader@example.com", session=session, now=now, known_topics={"News"})


def test_a_backlog_never_goes_out_as_news(site: Path, engine: sa.Engine, now: datetime) -> None:
    _reader(engine, now)
    # Three days ago digest saw an undated entry: it counts from then, so it is old news today.
    _feed(site, "wire", Item("Undated and seen three days ago", "https://wire.example/u0"))
    _cli(now - timedelta(days=3), "collect")
    _feed(
        site,
        "wire",
        Item("Undated and seen three days ago", "https://wire.example/u0"),
        Item("Dated sixteen days ago", "https://wire.example/1", published=now - timedelta(days=16)),
        Item("Dated 200 hours ago", "https://wire.example/2", published=now - timedelta(hours=200)),
        Item("Dated 30 hours ago", "https://wire.example/3", published=now - timedelta(hours=30)),
        Item("Dated two hours ago", "https://wire.example/4", published=now - timedelta(hours=2)),
        Item("Undated and new", "https://wire.example/5"),
        Item("Dated in three days", "https://wire.example/6", published=now + timedelta(days=3)),
    )
    _cli(now, "collect")
    fresh = ["Dated in three days", "Dated two hours ago", "Undated and new"]
    assert _previewed(now) == fresh  # a future date is clamped to when digest first saw it
    assert "sent 1" in _cli(now, "send")
    assert _sent(engine, "2026-11-25") == fresh
    # Seen every day since, the old entries never become news.
    _cli(now + timedelta(days=1), "collect")
    assert _previewed(now + timedelta(days=1)) == []


def test_a_new_source_contributes_only_entries_inside_the_window(
    site: Path, engine: sa.Engine, now: datetime
) -> None:
    _reader(engine, now)
    _feed(site, "wire", Item("Wire on Tuesday", "https://wire.example/1", published=now - timedelta(hours=3)))
    assert "sent 1" in _cli(now, "run")
    later = now + timedelta(days=1)
    _feed(
        site,
        "wire",
        Item("Wire on Tuesday", "https://wire.example/1", published=now - timedelta(hours=3)),
        Item("Wire on Wednesday", "https://wire.example/2", published=later - timedelta(hours=3)),
    )
    archive = [
        Item(f"Archive entry {n}", f"https://archive.example/{n}", published=later - timedelta(days=n))
        for n in range(3, 53)
    ]
    fresh = [
        Item(
            "Archive news this morning", "https://archive.example/new1", published=later - timedelta(hours=1)
        ),
        Item("Archive news last night", "https://archive.example/new2", published=later - timedelta(hours=9)),
    ]
    _feed(site, "archive", *fresh, *archive)
    _configure(site, "wire", "archive")  # the operator adds a source with 52 entries in its feed
    assert "sent 1" in _cli(later, "run")
    assert _sent(engine, "2026-11-26") == [
        "Archive news last night",
        "Archive news this morning",
        "Wire on Wednesday",
    ]
    with Session(engine) as session:  # collected (they are known), never sent
        assert len(session.exec(select(Article)).all()) == 2 + 52


def test_a_backdated_date_holds_that_days_news_not_todays(
    site: Path, engine: sa.Engine, now: datetime
) -> None:
    _reader(engine, now)
    days = [now.replace(hour=12) - timedelta(days=n) for n in range(7, 0, -1)]  # Nov 18 .. 24, noon
    _feed(
        site,
        "wire",
        *(Item(f"Noon of {d:%b %d}", f"https://wire.example/{d:%d}", published=d) for d in days),
        Item("This morning", "https://wire.example/today", published=now - timedelta(hours=2)),
    )
    _cli(now, "collect")  # everything is first seen today
    assert _previewed(now, "--date", "2026-11-20") == ["Noon of Nov 20"]
    assert "1 stories" in _cli(now, "topics", "--date", "2026-11-20")
    assert "sent 1" in _cli(now, "send", "--date", "2026-11-20")
    assert _sent(engine, "2026-11-20") == ["Noon of Nov 20"]
    # Today's edition reaches back from that edition's cut-off (the end of Nov 20): the days in
    # between had no edition, so their news is not lost; Nov 20's is not sent twice.
    assert _previewed(now) == [
        "Noon of Nov 21",
        "Noon of Nov 22",
        "Noon of Nov 23",
        "Noon of Nov 24",
        "This morning",
    ]


def test_a_fresh_report_merged_with_an_archive_entry_goes_out_alone(
    site: Path, engine: sa.Engine, now: datetime
) -> None:
    _reader(engine, now)
    _configure(site, "archive", "wire")
    _feed(
        site,
        "archive",
        Item(
            "Voltra recalls 120,000 sedans over faulty brake sensor",
            "https://archive.example/recall",
            summary="The carmaker said a brake sensor can fail in cold weather.",
            published=now - timedelta(days=5),
        ),
    )
    _feed(
        site,
        "wire",
        Item(
            "Brake sensor flaw forces Voltra to recall 120k sedans",
            "https://wire.example/recall",
            summary="Voltra is recalling about 120,000 sedans because a brake sensor may fail.",
            published=now - timedelta(hours=1),
        ),
    )
    _cli(now, "collect")
    with Session(engine) as session:  # one event, one story, first reported by the archive entry
        [story] = session.exec(select(Story)).all()
        assert story.url == "https://archive.example/recall"
    edition = json.loads(_cli(now, "preview", "--format", "json"))
    [item] = [s for t in edition["topics"] for s in t["stories"]]
    assert (item["title"], item["url"]) == (
        "Brake sensor flaw forces Voltra to recall 120k sedans",
        "https://wire.example/recall",
    )
    assert [s["name"] for s in item["sources"]] == ["wire"]  # the 5-day-old entry is not "also reported"
    assert item["published"] == (now - timedelta(hours=1)).isoformat()
