"""Double opt-in over a real HTTP server: browser-like and scanner-like sequences, no enumeration,
honeypot, per-IP rate limit, expiry; and the confirmation through a real SMTP server."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest.config import Settings, resolve_secret_key
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus
from digest.subscribers.optin import expire_pending
from digest.subscribers.roster import add_subscriber
from digest.subscribers.status import unsubscribe
from digest.tokens import LinkToken, TokenSigner
from digest.web.app import create_app
from tests.schedule_helpers import Clock, newsletter, settings
from tests.web_helpers import Inbox, SignalingTransport, serve, smtp_server

LINK = re.compile(r"http://127\.0\.0\.1:8000(/confirm/[A-Za-z0-9_.\-]+)")
NONCE = re.compile(r"nonce-?[=\w\"-]*")


def same(response: httpx.Response) -> str:
    """The page as a comparison sees it: each answer's CSP nonce is random, the rest must match."""
    return NONCE.sub("", response.text)


@dataclass
class Site:
    client: httpx.Client
    clock: Clock
    transport: SignalingTransport
    engine: sa.Engine
    settings: Settings

    def subscribe(self, email: str, **fields: Any) -> httpx.Response:
        return self.client.post("/subscribe", data={"email": email, "website": "", **fields})

    def subscriber(self, email: str) -> Subscriber | None:
        with Session(self.engine) as session:
            return session.exec(select(Subscriber).where(Subscriber.email == email)).first()

    def link(self, index: int = 0) -> str:
        match = LINK.search(self.transport.wait(index + 1)[index].text)
        assert match is not None
        return match.group(1)


@pytest.fixture
def site(engine: sa.Engine, tmp_path: Path, db_url: str, now: datetime) -> Iterator[Site]:
    clock = Clock(now)
    transport = SignalingTransport()
    cfg = settings(tmp_path, db_url, subscribe_rate_limit=3, confirm_expiry_hours=48)
    app = create_app(
        cfg,
        newsletter(),
        engine=engine,
        clock=clock,
        transport_factory=lambda: transport,
    )
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield Site(client, clock, transport, engine, cfg)


def test_the_sign_up_page_lists_topics_with_a_honeypot(site: Site) -> None:
    page = site.client.get("/subscribe")
    assert page.status_code == 200
    assert 'name="topic" value="Robotics"' in page.text
    assert 'name="topic" value="More news"' in page.text
    assert 'name="website"' in page.text
    assert 'method="post" action="/subscribe"' in page.text


def test_browser_sequence_confirms_with_one_click(site: Site, now: datetime) -> None:
    answer = site.subscribe("Reader@Example.com", topic="Robotics", timezone="Asia/Tokyo")
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    [message] = site.transport.wait(1)
    assert message.to_email == "reader@example.com"
    assert message.subject == "Confirm your subscription to Zone Daily"
    assert message.headers["Auto-Submitted"] == "auto-generated"
    row = site.subscriber("reader@example.com")
    assert row is not None
    assert (row.status, row.topics, row.timezone) == (SubscriberStatus.PENDING, "Robotics", "Asia/Tokyo")
    assert (row.consent_source, row.consent_at, row.consent_ip) == ("web", now, "127.0.0.1")

    link = site.link()
    page = site.client.get(link)  # the person opens the link: a page with one button
    assert page.status_code == 200
    assert f'<form method="post" action="{link}" id="confirm-form">' in page.text
    assert "<script" not in page.text  # nothing submits by itself (tests/hostile/test_web.py)
    assert site.subscriber("reader@example.com").status == SubscriberStatus.PENDING  # type: ignore[union-attr]

    site.clock.now = now + timedelta(minutes=3)
    done = site.client.post(link, headers={"User-Agent": "Firefox/140"})
    assert done.status_code == 200
    assert "You are subscribed" in done.text
    row = site.subscriber("reader@example.com")
    assert row is not None
    assert row.status == SubscriberStatus.ACTIVE
    assert (row.confirmed_at, row.confirmed_ip) == (now + timedelta(minutes=3), "127.0.0.1")
    with Session(site.engine) as session:
        events = session.exec(select(SubscriberEvent).order_by(SubscriberEvent.id)).all()
    assert [(e.kind, e.method, e.user_agent) for e in events][1] == ("confirm", "link", "Firefox/140")
    again = site.client.post(link)  # a second click: still fine, nothing changes
    assert "already receives" in again.text


def test_scanner_sequence_confirms_nothing(site: Site, now: datetime) -> None:
    site.subscribe("reader@example.com")
    link = site.link()
    for method in ("GET", "HEAD", "GET"):  # Safe Links, Proofpoint and friends fetch, never post
        assert site.client.request(method, link, headers={"User-Agent": "Scanner/1.0"}).status_code == 200
    assert site.subscriber("reader@example.com").status == SubscriberStatus.PENDING  # type: ignore[union-attr]
    # unconfirmed, it expires: the link stops working and the stranger's row goes
    site.clock.now = now + timedelta(hours=49)
    assert site.client.get(link).status_code == 410
    assert site.client.post(link).status_code == 410
    with session_scope(site.engine) as session:
        assert expire_pending(session=session, now=site.clock.now, max_age=timedelta(hours=48)) == 1
    assert site.subscriber("reader@example.com") is None
    assert site.client.get(link).status_code == 400


def test_the_answer_is_the_same_whether_or_not_the_address_exists(site: Site, now: datetime) -> None:
    with session_scope(site.engine) as session:
        add_subscriber("known@example.com", session=session, now=now, known_topics=newsletter().topic_names)
    known = site.subscribe("known@example.com")
    unknown = site.subscribe("new@example.com")
    assert (known.status_code, same(known)) == (unknown.status_code, same(unknown))
    site.transport.wait(1)
    assert [m.to_email for m in site.transport.sent] == ["new@example.com"]  # nothing for the known one
    assert site.subscriber("known@example.com").status == SubscriberStatus.ACTIVE  # type: ignore[union-attr]


def test_the_honeypot_catches_bots_without_telling_them(site: Site) -> None:
    bot = site.client.post("/subscribe", data={"email": "bot@example.com", "website": "http://spam.example"})
    person = site.subscribe("person@example.com")
    assert (bot.status_code, same(bot)) == (person.status_code, same(person))
    site.transport.wait(1)
    assert site.subscriber("bot@example.com") is None
    assert [m.to_email for m in site.transport.sent] == ["person@example.com"]


def test_per_ip_rate_limit(site: Site, now: datetime) -> None:
    for i in range(3):
        assert site.subscribe(f"r{i}@example.com").status_code == 200
    blocked = site.subscribe("r3@example.com")
    assert blocked.status_code == 429
    assert site.subscriber("r3@example.com") is None
    site.clock.now = now + timedelta(hours=1)
    assert site.subscribe("r3@example.com").status_code == 200


def test_repeat_sign_ups_do_not_flood_an_inbox(site: Site, now: datetime) -> None:
    site.subscribe("reader@example.com")
    site.subscribe("reader@example.com")
    site.transport.wait(1)
    site.clock.now = now + timedelta(minutes=11)
    site.subscribe("reader@example.com")
    site.transport.wait(2)
    assert len(site.transport.sent) == 2
    # only the newest link confirms
    assert site.client.post(site.link(0)).status_code == 400
    assert site.client.post(site.link(1)).status_code == 200


def test_a_bad_address_is_refused_and_nothing_is_stored(site: Site) -> None:
    answer = site.subscribe("not-an-address", topic="Robotics")
    assert answer.status_code == 400
    assert "not-an-address" in answer.text
    assert 'value="Robotics" checked' in answer.text
    with Session(site.engine) as session:
        assert session.exec(select(Subscriber)).all() == []


def test_forged_links_are_refused(site: Site) -> None:
    site.subscribe("reader@example.com")
    link = site.link()
    assert site.client.post(link[:-2] + "xx").status_code == 400
    assert site.client.get("/confirm/nonsense").status_code == 400


def test_someone_who_left_can_come_back_and_if_unconfirmed_stays_unsubscribed(
    site: Site, now: datetime
) -> None:
    with session_scope(site.engine) as session:
        row = add_subscriber(
            "back@example.com", session=session, now=now, known_topics=newsletter().topic_names
        )
        unsubscribe(row, session=session, now=now, method="link")
    site.clock.now = now + timedelta(days=1)
    site.subscribe("back@example.com")
    site.link()
    assert site.subscriber("back@example.com").status == SubscriberStatus.PENDING  # type: ignore[union-attr]
    with session_scope(site.engine) as session:
        expire_pending(session=session, now=now + timedelta(days=4), max_age=timedelta(hours=48))
    assert site.subscriber("back@example.com").status == SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]


def test_healthz(site: Site) -> None:
    answer = site.client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "scheduler": None, "last_dispatch": None}


def test_the_confirmation_goes_through_the_configured_smtp_transport(
    engine: sa.Engine, tmp_path: Path, db_url: str, now: datetime
) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        app = create_app(
            settings(
                tmp_path,
                db_url,
                transport="smtp",
                smtp_host="127.0.0.1",
                smtp_port=port,
                secret_key="a-real-secret-for-tests-0123456789",
            ),
            newsletter(),
            engine=engine,
            clock=Clock(now),
        )
        with serve(app) as base, httpx.Client(base_url=base, timeout=10) as client:
            client.post("/subscribe", data={"email": "reader@example.com"})
            [mail] = inbox.wait(1)
            assert mail["To"] == "reader@example.com"
            assert mail["Subject"] == "Confirm your subscription to Zone Daily"
            assert mail.is_multipart()
            text = mail.get_payload()[0].get_payload(decode=True).decode()
            match = LINK.search(text)
            assert match is not None
            assert client.post(match.group(1)).status_code == 200
    with Session(engine) as session:
        row = session.exec(select(Subscriber)).one()
    assert row.status == SubscriberStatus.ACTIVE


def test_preferences_set_the_time_zone(site: Site, now: datetime) -> None:
    with session_scope(site.engine) as session:
        row = add_subscriber(
            "ana@example.com", session=session, now=now, known_topics=newsletter().topic_names
        )
        assert row.id is not None
        token = TokenSigner([resolve_secret_key(site.settings)]).sign(LinkToken(row.id, None, row.token_key))
    page = site.client.get(f"/preferences/{token}")
    assert '<option value="" selected>The newsletter\'s (UTC)</option>' in page.text.replace("&#39;", "'")
    saved = site.client.post(f"/preferences/{token}", data={"topic": "Robotics", "timezone": "Asia/Tokyo"})
    assert saved.status_code == 200
    assert '<option value="Asia/Tokyo" selected>' in saved.text
    assert (site.subscriber("ana@example.com").timezone, site.subscriber("ana@example.com").topics) == (  # type: ignore[union-attr]
        "Asia/Tokyo",
        "Robotics",
    )
    assert site.client.post(f"/preferences/{token}", data={"timezone": "Mars/Olympus"}).status_code == 400
    site.client.post(f"/preferences/{token}", data={"topic": "Robotics"})  # an older form: zone kept
    assert site.subscriber("ana@example.com").timezone == "Asia/Tokyo"  # type: ignore[union-attr]


def test_healthz_is_503_when_the_database_does_not_answer(tmp_path: Path, now: datetime) -> None:
    from digest.db.engine import make_engine

    dead = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    app = create_app(settings(tmp_path, "sqlite://"), newsletter(), engine=dead, clock=Clock(now))
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "error"
    assert "127.0.0.1" in answer.json()["database"]


def test_the_confirmation_message_is_not_spam(tmp_path: Path, now: datetime) -> None:
    from digest.deliver.message import to_bytes
    from digest.render.email import make_environment
    from digest.subscribers.optin import confirmation_message
    from tests.render.test_spam import spam_score

    reader = Subscriber(id=3, email="reader@example.com", created_at=now, updated_at=now)
    message = confirmation_message(
        make_environment(),
        settings(tmp_path, "sqlite://", base_url="https://news.example.org"),
        newsletter(),
        reader,
        confirm_url="https://news.example.org/confirm/WzMsInJlYWRlckBleGFtcGxlLmNvbSIsMTc5NTU5MDAwMF0.x",
    )
    score, rules = spam_score(to_bytes(message, now=now))
    assert score <= 1.0, rules
