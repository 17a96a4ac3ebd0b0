"""Issue 11 (point 3) through collect, topics and compose: "Bike share hits record" (Bike Daily)
and "Solar output hits record in October" (Green Power Wire) are two events, and a reader of
Energy gets the solar one even when a clusterer merged the two."""

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from digest import pipeline
from digest.clock import FixedClock
from digest.config import load_settings
from digest.db.engine import session_scope
from digest.db.models import EditionStory, Story
from digest.deliver.memory import MemoryTransport
from digest.deliver.send import send_edition
from digest.newsletter import Newsletter, load_newsletter
from digest.sources.collect import store_entries, sync_sources
from digest.sources.parse import parse_feed
from digest.stories import KnownArticle, StoryDoc
from digest.subscribers.roster import add_subscriber
from tests.feedbuilder import Item, rss, write

TOML = """[newsletter]
title = "Test"
from_email = "news@test.example"
postal_address = "1 Test Street"

[[topics]]
name = "Cities"
keywords = ["bike", "bus", "library"]

[[topics]]
name = "Energy"
keywords = ["solar", "wind"]

[[sources]]
name = "Bike Daily"
url = "feeds/bike.xml"
topic = "Cities"

[[sources]]
name = "Green Power Wire"
url = "feeds/power.xml"
topic = "Energy"

[[sources]]
name = "City Ledger"
url = "feeds/ledger.xml"
"""
BIKE = "Bike share hits record"
SOLAR = "Solar output hits record in October"
READERS = {"cities@example.com": ["Cities"], "energy@example.com": ["Energy"], "all@example.com": []}


def _setup(tmp_path: Path, engine: sa.Engine, now: datetime) -> Newsletter:
    (tmp_path / "digest.toml").write_text(TOML)
    newsletter = load_newsletter(tmp_path / "digest.toml")
    hour = now - timedelta(hours=3)
    feeds = {
        "bike": [
            Item(BIKE, "https://bike.example/1", summary="Riders made more trips than ever in October.")
        ],
        "power": [
            Item(SOLAR, "https://power.example/1", summary="Panels made more power than in any month.")
        ],
        "ledger": [  # the rest of the day's news
            Item("Council approves new library for the east side", "https://ledger.example/1"),
            Item("Museum reopens after roof repairs", "https://ledger.example/2"),
            Item("Ferry timetable changes for winter", "https://ledger.example/3"),
            Item("School meals to include more vegetables", "https://ledger.example/4"),
        ],
    }
    for name, items in feeds.items():
        write(
            tmp_path / "feeds" / f"{name}.xml",
            rss([Item(i.title, i.url, summary=i.summary, published=hour) for i in items]),
        )
    with session_scope(engine) as session:
        for email, topics in READERS.items():
            add_subscriber(
                email, session=session, now=now, known_topics=newsletter.topic_names, topics=topics
            )
    return newsletter


def _send(tmp_path: Path, newsletter: Newsletter, engine: sa.Engine, at: datetime) -> dict[str, str]:
    transport = MemoryTransport()
    send_edition(
        load_settings(var_dir=tmp_path / "var"),
        newsletter,
        engine=engine,
        transport=transport,
        edition_date=at.date(),
        clock=lambda: at,
    )
    return {m.to_email: m.text for m in transport.sent}


def test_two_record_headlines_are_two_stories_each_under_its_topic(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _setup(tmp_path, engine, now)
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now - timedelta(hours=1)))
    with Session(engine) as session:
        titles = {s.title for s in session.exec(select(Story))}
    assert {BIKE, SOLAR} <= titles
    sent = _send(tmp_path, newsletter, engine, now)
    assert SOLAR in sent["energy@example.com"] and BIKE not in sent["energy@example.com"]
    assert BIKE in sent["cities@example.com"] and SOLAR not in sent["cities@example.com"]


def _merge_everything(new: object, known: list[KnownArticle]) -> list[int]:
    """A clusterer that puts every new article into one story, as a wrong merge would."""
    assert isinstance(new, list) and all(isinstance(d, StoryDoc) for d in new)
    return [-1] * len(new)


def test_a_wrong_merge_hides_no_event_from_the_readers_of_its_topic(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _setup(tmp_path, engine, now)
    with session_scope(engine) as session:
        rows = sync_sources(newsletter, session=session)
        feeds = [
            (
                rows[name],
                parse_feed(
                    name,
                    (tmp_path / "feeds" / f"{file}.xml").read_bytes(),
                    url=f"https://{file}.example/feed",
                ),
            )
            for name, file in (("Bike Daily", "bike"), ("Green Power Wire", "power"))
        ]
        store_entries(feeds, session=session, now=now - timedelta(hours=1), clusterer=_merge_everything)
    with Session(engine) as session:
        assert [s.title for s in session.exec(select(Story))] == [BIKE]  # one story, bike's lead

    sent = _send(tmp_path, newsletter, engine, now)
    assert SOLAR in sent["energy@example.com"] and BIKE not in sent["energy@example.com"]
    assert BIKE in sent["cities@example.com"] and SOLAR not in sent["cities@example.com"]
    assert BIKE in sent["all@example.com"] and SOLAR in sent["all@example.com"]
    with Session(engine) as session:
        assert len(session.exec(select(EditionStory)).all()) == 1  # the story is carried once
    # ... and not again the next day.
    later = _send(tmp_path, newsletter, engine, now + timedelta(days=1))
    assert all(SOLAR not in text and BIKE not in text for text in later.values())
