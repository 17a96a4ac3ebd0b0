"""Rendering inside the send: empty copies are skipped with a reason, template errors stop
everything before the first claim, and the public archive carries no personal data."""

import re
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import select

from digest import pipeline
from digest.clock import FixedClock
from digest.config import Settings, load_settings
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Subscriber
from digest.deliver.memory import MemoryTransport
from digest.deliver.send import send_edition
from digest.errors import TemplateError
from digest.newsletter import Newsletter, load_newsletter
from digest.render.email import bundled_templates_dir
from digest.subscribers.roster import add_subscriber
from digest.web.app import create_app
from tests.render.htmlscan import scan
from tests.web_helpers import serve

BASE = "https://news.example.org"


def setup(demo_dir: Path, db_url: str, tmp_path: Path, **extra: object) -> tuple[Settings, Newsletter]:
    settings = load_settings(
        config=demo_dir / "digest.toml", database_url=db_url, var_dir=tmp_path / "var", base_url=BASE, **extra
    )
    return settings, load_newsletter(settings.config)


def subscribe(engine: sa.Engine, newsletter: Newsletter, now: datetime) -> None:
    with session_scope(engine) as session:
        for email, name, topics in [
            ("ana@example.com", "Ana", []),
            ("ben@example.com", "Ben", ["EV industry"]),
            ("mo@example.com", "Mo", ["More news"]),  # the demo has no story in the catch-all
        ]:
            add_subscriber(
                email, session=session, now=now, known_topics=newsletter.topic_names, name=name, topics=topics
            )


def send(settings: Settings, newsletter: Newsletter, engine: sa.Engine, now: datetime) -> MemoryTransport:
    transport = MemoryTransport()
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    send_edition(
        settings,
        newsletter,
        engine=engine,
        transport=transport,
        edition_date=now.date(),
        clock=lambda: now,
    )
    return transport


def ledger(engine: sa.Engine) -> dict[str, tuple[str, str | None]]:
    with session_scope(engine) as session:
        rows = session.exec(select(Subscriber.email, Delivery.status, Delivery.error).join(Delivery))
        return {email: (str(status), error) for email, status, error in rows}


def test_readers_get_their_topics_and_an_empty_copy_is_not_sent(
    demo_dir: Path, db_url: str, engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    settings, newsletter = setup(demo_dir, db_url, tmp_path)
    subscribe(engine, newsletter, now)
    transport = send(settings, newsletter, engine, now)
    by_reader = {m.to_email: m for m in transport.sent}
    assert set(by_reader) == {"ana@example.com", "ben@example.com"}
    skipped = (DeliveryStatus.SKIPPED.value, "no new stories in their topics")
    assert ledger(engine)["mo@example.com"] == skipped
    headings = {email: re.findall(r"<h2[^>]*>([^<]+)</h2>", m.html) for email, m in by_reader.items()}
    assert headings == {
        "ana@example.com": ["EV industry", "Robotics", "Smartphones"],
        "ben@example.com": ["EV industry"],
    }
    assert "\nROBOTICS\n" in by_reader["ana@example.com"].text
    assert "\nROBOTICS\n" not in by_reader["ben@example.com"].text
    # The subject and the "view in browser" link are the reader's own and the archive's.
    assert f"{BASE}/archive/{now.date().isoformat()}" in scan(by_reader["ben@example.com"].html).links


def test_template_error_in_one_copy_stops_the_send_before_any_claim(
    demo_dir: Path, db_url: str, engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    # A template that breaks only for one-topic copies (Ben's), not for the full edition.
    mine = tmp_path / "mine" / "partials"
    mine.mkdir(parents=True)
    bundled = (bundled_templates_dir() / "partials" / "footer.mjml.j2").read_text()
    (mine / "footer.mjml.j2").write_text(
        "{% if edition.topics|length == 1 %}{{ no_such_variable }}{% endif %}\n" + bundled
    )
    settings, newsletter = setup(demo_dir, db_url, tmp_path, templates_dir=tmp_path / "mine")
    subscribe(engine, newsletter, now)
    with pytest.raises(TemplateError, match=r"mine/partials/footer\.mjml\.j2:1: 'no_such_variable'"):
        send(settings, newsletter, engine, now)
    states = ledger(engine)
    assert states
    assert {status for status, _ in states.values()} == {DeliveryStatus.PENDING.value}


def test_archive_shows_the_sent_edition_without_personal_data(
    demo_dir: Path, db_url: str, engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    settings, newsletter = setup(demo_dir, db_url, tmp_path)
    subscribe(engine, newsletter, now)
    day = now.date().isoformat()
    app = create_app(settings, newsletter, engine=engine, clock=lambda: now)
    with serve(app) as base, httpx.Client(base_url=base) as client:
        assert client.get(f"/archive/{day}").status_code == 404  # not sent yet
        sent = send(settings, newsletter, engine, now).sent
        index = client.get("/archive/")
        page = client.get(f"/archive/{day}")
        help_pages = [client.get(path) for path in ("/unsubscribe", "/preferences")]
    assert [p.status_code for p in help_pages] == [200, 200]
    assert "link at the bottom of any email" in help_pages[1].text
    assert index.status_code == 200
    assert f'href="/archive/{day}"' in index.text
    assert page.status_code == 200
    html = page.text
    for reader in ("ana@example.com", "ben@example.com", "Ana", "Ben"):
        assert reader not in html
    links = scan(html).links
    # A generic copy (issue 14): no greeting, no address, no one's links; how to subscribe instead.
    assert "Hi," not in html and "you subscribed with" not in html
    assert f"{BASE}/subscribe" in links
    assert not any("/unsubscribe" in link or "/preferences" in link for link in links)
    # Every story any reader got is in the archive.
    for message in sent:
        for link in scan(message.html).links:
            if not link.startswith((f"{BASE}/unsubscribe/", f"{BASE}/preferences/", f"{BASE}/archive/")):
                assert link in links
