"""Across editions: a story is never sent twice to a subscriber, and none that appears is lost."""

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from digest import pipeline
from digest.clock import FixedClock
from digest.config import load_settings
from digest.db.engine import session_scope
from digest.deliver.memory import MemoryTransport
from digest.deliver.send import send_edition
from digest.newsletter import Newsletter, load_newsletter
from digest.subscribers.roster import add_subscriber
from tests.feedbuilder import Item, newsletter_toml, rss, write

TOPICS = '[[topics]]\nname = "Tech"\nkeywords = ["robot", "chip", "phone"]\n'


def _newsletter(tmp_path: Path, extra: str = "") -> Newsletter:
    path = tmp_path / "digest.toml"
    path.write_text(
        newsletter_toml({"Wire": "feeds/wire.xml", "Post": "feeds/post.xml"}, topics=TOPICS, extra=extra)
    )
    return load_newsletter(path)


def _feed(tmp_path: Path, name: str, *items: Item) -> None:
    write(tmp_path / "feeds" / f"{name}.xml", rss(list(items)))


def _send(tmp_path: Path, newsletter: Newsletter, engine: sa.Engine, at: datetime) -> list[str]:
    """Send the edition of `at`'s date; the story titles the subscriber received."""
    transport = MemoryTransport()
    send_edition(
        load_settings(var_dir=tmp_path / "var"),
        newsletter,
        engine=engine,
        transport=transport,
        edition_date=at.date(),
        clock=lambda: at,
    )
    assert len(transport.sent) <= 1
    if not transport.sent:
        return []
    text = transport.sent[0].text
    return [line[2:] for line in text.splitlines() if line.startswith("* Story ")]


def _reader(newsletter: Newsletter, engine: sa.Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        add_subscriber("reader@example.com", session=session, now=now, known_topics=newsletter.topic_names)


def _titles(lines: list[str]) -> set[str]:
    return {line.split(":")[0] for line in lines}


def _story(n: int, when: datetime, *, url: str | None = None, guid: str | None = None) -> Item:
    return Item(
        title=f"Story {n}: robot maker number {n} opens plant {n * 7}",
        url=url or f"https://wire.example/{n}",
        guid=guid or f"wire-{n}",
        summary=f"Plant {n * 7} of robot maker {n} opens.",
        published=when,
    )


def test_a_carried_story_is_not_sent_again_even_when_another_outlet_reports_it(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path)
    _reader(newsletter, engine, now)
    _feed(tmp_path, "wire", _story(1, now - timedelta(hours=2)))
    _feed(tmp_path, "post")
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now - timedelta(hours=1)))
    assert _titles(_send(tmp_path, newsletter, engine, now)) == {"Story 1"}

    later = now + timedelta(days=1)
    # The next day the same event is reported by another outlet (new URL, new title wording),
    # the first outlet moves it to a new URL and ID, and one genuinely new story appears.
    _feed(
        tmp_path,
        "wire",
        _story(1, now - timedelta(hours=2), url="https://wire.example/moved/1", guid="new-id-1"),
        _story(2, later - timedelta(hours=3)),
    )
    _feed(
        tmp_path,
        "post",
        Item(
            title="Robot maker number 1 opens plant 7, its first",
            url="https://post.example/a",
            summary="Robot maker 1 opened plant 7.",
            published=later - timedelta(hours=4),
        ),
    )
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(later - timedelta(hours=1)))
    assert _titles(_send(tmp_path, newsletter, engine, later)) == {"Story 2"}


def test_a_story_collected_while_an_edition_was_being_built_goes_in_the_next(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path)
    _reader(newsletter, engine, now)
    _feed(tmp_path, "wire", _story(1, now - timedelta(hours=3)))
    _feed(tmp_path, "post")
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now - timedelta(hours=2)))
    _feed(tmp_path, "post", Item("Story 5: chip maker opens lab", "https://post.example/5"))
    # An hourly collect that started a minute before the edition and committed after it was built:
    # its stories' first-seen time is before the edition, but the edition did not carry them.
    assert _titles(_send(tmp_path, newsletter, engine, now)) == {"Story 1"}
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now - timedelta(minutes=1)))
    later = now + timedelta(days=1)
    assert _titles(_send(tmp_path, newsletter, engine, later)) == {"Story 5"}


def test_stories_over_the_cap_wait_for_the_next_edition(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, extra="max_stories_per_topic = 2")
    _reader(newsletter, engine, now)
    _feed(tmp_path, "wire", *(_story(n, now - timedelta(hours=n)) for n in (1, 2, 3)))
    _feed(tmp_path, "post")
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now - timedelta(hours=1)))
    assert _titles(_send(tmp_path, newsletter, engine, now)) == {"Story 1", "Story 2"}
    later = now + timedelta(days=1)
    assert _titles(_send(tmp_path, newsletter, engine, later)) == {"Story 3"}


def test_every_story_between_two_editions_is_in_the_second_exactly_once(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path)
    _reader(newsletter, engine, now)
    _feed(tmp_path, "post")
    sent: list[str] = []
    stories = []
    for day in range(3):
        edition_at = now + timedelta(days=day)
        for hour in (20, 14, 8, 2):  # hourly collects between editions, each with one new story
            at = edition_at - timedelta(hours=hour)
            stories.append(_story(len(stories) + 1, at - timedelta(minutes=30)))
            _feed(tmp_path, "wire", *stories)
            pipeline.collect(newsletter, engine=engine, clock=FixedClock(at))
        sent += _send(tmp_path, newsletter, engine, edition_at)
    titles = [line.split(":")[0] for line in sent]
    assert sorted(titles) == sorted(f"Story {n}" for n in range(1, 13))
    assert len(titles) == len(set(titles))
