"""Story continuity across editions (issue 16): the demo's thread over three days, talks -> deal ->
factory, sent as three editions with the clock set to each day, on SQLite and PostgreSQL."""

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import col, select

from digest.db.engine import session_scope
from digest.db.models import Story, StoryLink
from digest.deliver.base import OutgoingMessage
from digest.deliver.memory import MemoryTransport
from digest.subscribers.roster import add_subscriber
from digest.web.app import create_app
from tests.browser import chromium
from tests.world import World, make_world

TALKS = "Ford and Xiaomi in talks over an EV partnership"
DEAL = "Ford and Xiaomi sign a deal to develop electric cars together"
FACTORY = "Ford and Xiaomi will build their joint EVs at Ford's Valencia plant"
# Similar headlines of today's edition (same companies, same topic) that are not of the thread.
NOT_OF_THE_THREAD = (
    "Xiaomi's SU7 passes 130,000 sales in its first year",
    "Ford's EV unit lost $1.3 billion in the third quarter",
    "Xiaomi teases its next flagship phone with a larger battery",
)


@dataclass
class Thread:
    """The three editions sent, who got what, and the stories' ids."""

    world: World
    mail: dict[tuple[date, str], OutgoingMessage]  # (edition date, address) -> message
    ids: dict[str, int]  # title -> story id
    days: tuple[date, date, date]

    def archive(self, day: date, story: str) -> str:
        """The public archive link of a story."""
        return f"https://digest.example/archive/{day.isoformat()}#story-{self.ids[story]}"


@pytest.fixture
def thread(engine: sa.Engine, demo_dir: Path, now: datetime) -> Thread:
    import earlier_days  # examples/demo, on the path beside make_feeds (conftest)

    world = make_world(engine, demo_dir, now, 0)
    readers = {
        "ana@example.com": (),  # every topic
        "ben@example.com": ("EV industry",),
        "chen@example.com": ("Robotics", "Smartphones"),
    }
    with session_scope(engine) as session:
        for address, topics in readers.items():
            add_subscriber(
                address,
                session=session,
                now=now - timedelta(days=3),
                known_topics=world.newsletter.topic_names,
                topics=topics,
            )
    transport = MemoryTransport()
    earlier = earlier_days.send_earlier_days(
        world.settings, world.newsletter, engine=engine, now=now, transport=transport
    )
    assert [r.sent for r in earlier] == [2, 2]  # Chen's topics had nothing those days
    with session_scope(engine) as session:  # joined after the talks and the deal went out
        add_subscriber(
            "lena@example.com", session=session, now=now, known_topics=world.newsletter.topic_names
        )
    world.send(transport)
    days = (now.date() - timedelta(days=2), now.date() - timedelta(days=1), now.date())
    with session_scope(engine) as session:
        dated = {m.edition_id: d for m, d in zip(_firsts(transport.sent), days, strict=True)}
        ids = {s.title: s.id or 0 for s in session.exec(select(Story))}
    mail = {(dated[m.edition_id], m.to_email): m for m in transport.sent}
    return Thread(world, mail, ids, days)


def _firsts(sent: list[OutgoingMessage]) -> list[OutgoingMessage]:
    """The first message of each edition, in the order sent."""
    seen: dict[int, OutgoingMessage] = {}
    for m in sent:
        seen.setdefault(m.edition_id, m)
    return list(seen.values())


def _card(text: str, title: str) -> str:
    """The lines of one story's card in a text part."""
    return text.split(f"\n* {title}\n")[1].split("\n* ")[0].split("\n\n")[0]


def test_each_follow_up_shows_its_earlier_stories_newest_first(thread: Thread) -> None:
    talks_day, deal_day, today = thread.days
    deal = thread.mail[deal_day, "ana@example.com"]
    assert _card(deal.text, DEAL).count("Earlier:") == 1
    line = f"  Earlier: {TALKS} (Nov 23) <{thread.archive(talks_day, TALKS)}>"
    assert line in _card(deal.text, DEAL)
    assert f'href="{thread.archive(talks_day, TALKS)}"' in deal.html

    factory = thread.mail[today, "ana@example.com"]
    card = _card(factory.text, FACTORY)
    assert card.splitlines()[-2:] == [
        f"  Earlier: {DEAL} (Nov 24) <{thread.archive(deal_day, DEAL)}>",
        f"  Earlier: {TALKS} (Nov 23) <{thread.archive(talks_day, TALKS)}>",
    ]
    html = factory.html
    assert html.index(thread.archive(deal_day, DEAL)) < html.index(thread.archive(talks_day, TALKS))
    assert f">{DEAL}</a> (Nov 24); <a " in html
    # the first edition has nothing to link to
    assert "Earlier:" not in thread.mail[talks_day, "ana@example.com"].text


def test_a_similar_story_of_another_thread_gets_no_earlier_line(thread: Thread) -> None:
    text = thread.mail[thread.days[2], "ana@example.com"].text
    for title in NOT_OF_THE_THREAD:
        assert "Earlier:" not in _card(text, title), title
    assert text.count("Earlier:") == 2  # the factory story's two links, nothing else
    with session_scope(thread.world.engine) as session:
        links = {(x.later_story_id, x.earlier_story_id, x.rank) for x in session.exec(select(StoryLink))}
        stories = session.exec(select(Story).where(col(Story.title).in_([TALKS, DEAL, FACTORY]))).all()
    ids = thread.ids
    assert links == {
        (ids[DEAL], ids[TALKS], 0),
        (ids[FACTORY], ids[DEAL], 0),
        (ids[FACTORY], ids[TALKS], 1),
    }
    assert len(stories) == 3  # a follow-up is a story of its own, never merged into the earlier one


def test_topic_choice_holds_and_a_reader_who_joined_later_still_gets_the_links(thread: Thread) -> None:
    today = thread.days[2]
    ben, lena = thread.mail[today, "ben@example.com"], thread.mail[today, "lena@example.com"]
    expected = _card(ben.text, FACTORY)
    assert expected.count("Earlier:") == 2
    # Lena never got the editions of the talks and the deal: the links go to the public archive.
    assert (thread.days[0], "lena@example.com") not in thread.mail
    assert _card(lena.text, FACTORY) == expected
    assert "/archive/" in expected and "TOKEN" not in expected
    chen = thread.mail[today, "chen@example.com"]  # Robotics and Smartphones: not the EV thread
    assert FACTORY not in chen.text and "Earlier:" not in chen.text and "Earlier:" not in chen.html


def test_archive_pages_show_later_follow_ups(thread: Thread) -> None:
    world = thread.world
    talks_day, deal_day, today = thread.days
    app = create_app(world.settings, world.newsletter, engine=world.engine, clock=lambda: world.now)
    client = TestClient(app)
    talks_page = client.get(f"/archive/{talks_day.isoformat()}").text
    assert f'id="story-{thread.ids[TALKS]}"' in talks_page
    later = talks_page.split("Later: ")[1].split("</div>")[0]
    assert later.index(thread.archive(deal_day, DEAL)) < later.index(thread.archive(today, FACTORY))
    deal_page = client.get(f"/archive/{deal_day.isoformat()}").text
    assert deal_page.count("Later: ") == 1 and thread.archive(today, FACTORY) in deal_page
    assert "Earlier: " in deal_page  # the deal's own earlier link stays on its page
    today_page = client.get(f"/archive/{today.isoformat()}").text
    assert "Later: " not in today_page
    assert f'id="story-{thread.ids[FACTORY]}"' in today_page  # where the Earlier links of tomorrow land


def test_a_follow_up_in_a_phone_screen(thread: Thread, tmp_path: Path) -> None:
    html = thread.mail[thread.days[2], "ana@example.com"].html
    shot = tmp_path / "earlier-375.png"
    box = screenshot_earlier(html, shot, tmp_path)
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert box["left"] >= 0 and box["right"] <= 375  # the line fits a 375 px screen
    assert box["scroll"] <= 375  # and the email does not scroll sideways


def screenshot_earlier(email_html: str, shot: Path, workdir: Path, width: int = 375) -> dict[str, float]:
    """Lay the email out `width` px wide in headless Chromium, save a PNG of the story card with the
    first "Earlier:" line to `shot`, and return where that line is."""
    page_file = workdir / "email.html"
    page_file.write_text(email_html, encoding="utf-8")
    with chromium(workdir) as browser:
        page = browser.page()
        page.emulate(width, 800, scale=2)
        page.open(page_file.as_uri())
        box = page.evaluate(
            """(() => {
              const line = [...document.querySelectorAll('div.thread')]
                .find(d => d.textContent.startsWith('Earlier:'));
              const card = line.closest('.story-card').getBoundingClientRect();
              const r = line.getBoundingClientRect();
              return {left: r.left, right: r.right, top: card.top + window.scrollY,
                      bottom: r.bottom + window.scrollY, scroll: document.documentElement.scrollWidth};
            })()"""
        )
        clip = {"x": 0, "y": box["top"] - 12, "width": width, "height": box["bottom"] - box["top"] + 24}
        shot_data = browser.call(
            "Page.captureScreenshot",
            page.session,
            format="png",
            clip={**clip, "scale": 1},
            captureBeyondViewport=True,
        )["data"]
    shot.write_bytes(base64.b64decode(shot_data))
    (workdir / "earlier-375.json").write_text(json.dumps(box))
    return dict(box)
