"""Issue 14, growth: the landing page (/), the archive's Atom feed and its generic copy, and the
sign-up pages laid out in headless Chromium at 375 px and 1280 px."""

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import feedparser
import httpx
import pytest
import sqlalchemy as sa
from markupsafe import escape

from digest.config import Settings
from digest.newsletter import Newsletter
from digest.render.feed import FeedEntry, atom_feed
from digest.web.app import create_app
from tests.browser import Page
from tests.render.test_send import BASE, send, setup, subscribe
from tests.web.layout import lay_out
from tests.web_helpers import serve


@dataclass
class Site:
    client: httpx.Client
    base: str
    settings: Settings
    newsletter: Newsletter


@pytest.fixture
def site(demo_dir: Path, db_url: str, engine: sa.Engine, tmp_path: Path, now: datetime) -> Iterator[Site]:
    settings, newsletter = setup(demo_dir, db_url, tmp_path)
    app = create_app(settings, newsletter, engine=engine, clock=lambda: now)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield Site(client, base, settings, newsletter)


@pytest.fixture
def sent_site(site: Site, engine: sa.Engine, now: datetime) -> Site:
    subscribe(engine, site.newsletter, now)
    assert send(site.settings, site.newsletter, engine, now).sent
    return site


FEED_LINK = '<link rel="alternate" type="application/atom+xml" title="EV Brief" href="/archive/feed.xml">'


def test_the_landing_page_before_any_edition_is_the_sign_up_form(site: Site) -> None:
    page = site.client.get("/")
    assert page.status_code == 200
    info = site.newsletter.newsletter
    assert f"<h1>{info.title}</h1>" in page.text
    assert info.description and str(escape(info.description)) in page.text
    assert 'method="post" action="/subscribe"' in page.text and 'name="topic" value="Robotics"' in page.text
    assert FEED_LINK in page.text
    assert "The latest edition" not in page.text


def test_the_landing_page_shows_the_latest_edition_and_links_its_archive_copy(
    sent_site: Site, now: datetime
) -> None:
    page = sent_site.client.get("/").text
    day = now.date().isoformat()
    assert "The latest edition" in page
    assert f'href="/archive/{day}"' in page
    assert "https://autowire.example/" in page  # a headline links its article
    assert "ana@example.com" not in page


def test_a_sign_up_from_the_landing_page_form_is_the_double_opt_in(site: Site) -> None:
    answer = site.client.post("/subscribe", data={"email": "new@example.com", "website": ""})
    assert answer.status_code == 200 and "Check your inbox" in answer.text


def test_the_feed_parses_and_links_every_edition_to_its_archive_page(sent_site: Site, now: datetime) -> None:
    response = sent_site.client.get("/archive/feed.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.id == f"{BASE}/archive/"
    assert feed.feed.title == "EV Brief"
    assert any(link.rel == "self" and link.href == f"{BASE}/archive/feed.xml" for link in feed.feed.links)
    assert feed.feed.updated_parsed is not None
    day = now.date().isoformat()
    [entry] = feed.entries
    assert entry.id == entry.link == f"{BASE}/archive/{day}"
    assert entry.title and "stories:" in entry.summary
    assert "ana@example.com" not in response.text


def test_an_empty_feed_is_valid(site: Site, now: datetime) -> None:
    feed = feedparser.parse(site.client.get("/archive/feed.xml").content)
    assert not feed.bozo and feed.entries == []
    assert feed.feed.updated_parsed[:6] == now.astimezone(UTC).timetuple()[:6]


def test_feed_text_is_escaped_and_unusable_characters_dropped() -> None:
    hostile = 'Ben & <Jerry> "quoted" ]]>\x01\x1b end'
    entry = FeedEntry(
        date(2026, 1, 2), hostile, datetime(2026, 1, 2, 7, 0), "1 story: A & B (1)",
        ((hostile, "https://example.com/?a=1&b=<2>"),),
    )  # fmt: skip
    body = atom_feed(
        title=hostile, subtitle="", author="x", base_url=BASE, entries=[entry], now=datetime.now(UTC)
    )
    ET.fromstring(body)  # well-formed XML
    feed = feedparser.parse(body)
    assert not feed.bozo
    clean = 'Ben & <Jerry> "quoted" ]]> end'
    assert feed.feed.title == clean and feed.entries[0].title == clean
    assert feed.entries[0].updated == "2026-01-02T07:00:00Z"  # a naive stored time is UTC
    assert "https://example.com/?a=1&amp;b=&lt;2&gt;" in feed.entries[0].content[0].value


def test_archive_pages_announce_the_feed_and_link_to_subscribe(sent_site: Site, now: datetime) -> None:
    edition = sent_site.client.get(f"/archive/{now.date().isoformat()}").text
    head = edition.split("</head>", 1)[0]
    assert FEED_LINK in head
    assert f'href="{BASE}/subscribe"' in edition
    index = sent_site.client.get("/archive/").text
    assert FEED_LINK in index and 'href="/subscribe"' in index


@pytest.mark.parametrize("width", [375, 1280])
@pytest.mark.parametrize("path", ["/", "/subscribe"])
def test_landing_and_sign_up_pages_fit_the_screen(
    sent_site: Site, tmp_path: Path, path: str, width: int
) -> None:
    name = "landing" if path == "/" else "subscribe"
    found = lay_out(sent_site.base + path, width, tmp_path / f"{name}-{width}.png", tmp_path)
    assert found["overflowing"] == [], found["overflowing"]
    assert found["scroll"] <= width
    assert (tmp_path / f"{name}-{width}.png").stat().st_size > 1000


def test_a_long_refused_address_does_not_widen_the_sign_up_page_on_a_phone(
    sent_site: Site, tmp_path: Path
) -> None:
    # A person types a long address the server refuses; the answer quotes it back. Before issue
    # 14's fix the unbroken quote made the page 590 px wide on a 375 px screen.
    long_address = "averyveryverylongaddressthatgoesonandonandon@averyverylongdomainname-example.com.invalid"

    def type_and_send(page: Page) -> None:
        page.evaluate(f"document.querySelector('input[name=email]').value = {long_address!r}")
        page.click("button[type=submit]")

    found = lay_out(
        sent_site.base + "/subscribe", 375, tmp_path / "subscribe-error-375.png", tmp_path, type_and_send
    )
    assert found["overflowing"] == [] and found["scroll"] <= 375, found
