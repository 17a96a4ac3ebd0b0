"""Unsubscribe, resubscribe and preferences over HTTP: GET changes nothing, POST acts."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from digest.clock import local_date
from digest.config import load_settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.memory import MemoryTransport
from digest.deliver.stats import edition_stats
from digest.tokens import LinkToken, TokenSigner
from digest.web.app import create_app
from tests.world import SECRET, World

SCANNER_UA = "Mozilla/5.0 (compatible; SafeLinks scanner)"
GMAIL_UA = "Google-One-Click-Unsubscribe"


@pytest.fixture
def sent(world: World) -> tuple[World, MemoryTransport]:
    """The edition sent to everyone; the messages kept in memory."""
    memory = MemoryTransport()
    world.send(memory)
    return world, memory


def client(world: World) -> TestClient:
    app = create_app(world.settings, world.newsletter, engine=world.engine, clock=lambda: world.now)
    return TestClient(app, follow_redirects=False)


def path_of(url: str) -> str:
    return url.removeprefix("https://digest.example")


def subscriber(world: World, email: str) -> Subscriber:
    with session_scope(world.engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).one()


def events(world: World, kind: str | None = None) -> list[SubscriberEvent]:
    with session_scope(world.engine) as session:
        query = select(SubscriberEvent).order_by(SubscriberEvent.id)  # type: ignore[arg-type]
        rows = list(session.exec(query))
    return [e for e in rows if kind is None or e.kind == kind]


def test_get_shows_a_form_and_changes_nothing(sent: tuple[World, MemoryTransport]) -> None:
    world, memory = sent
    m = memory.sent[0]
    before = events(world)
    response = client(world).get(path_of(m.unsubscribe_url), headers={"User-Agent": SCANNER_UA})
    assert response.status_code == 200
    assert f'action="{path_of(m.unsubscribe_url)}"' in response.text
    assert 'method="post"' in response.text
    assert subscriber(world, m.to_email).status == SubscriberStatus.ACTIVE
    assert events(world) == before


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_with_200_and_no_redirect(
    sent: tuple[World, MemoryTransport], encoding: str
) -> None:
    world, memory = sent
    m = memory.sent[1]
    http = client(world)
    if encoding == "urlencoded":
        response = http.post(
            path_of(m.unsubscribe_url),
            data={"List-Unsubscribe": "One-Click"},
            headers={"User-Agent": GMAIL_UA},
        )
    else:
        response = http.post(
            path_of(m.unsubscribe_url),
            files={"List-Unsubscribe": (None, "One-Click")},
            headers={"User-Agent": GMAIL_UA},
        )
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert subscriber(world, m.to_email).status == SubscriberStatus.UNSUBSCRIBED
    [event] = events(world, "unsubscribe")
    assert (event.method, event.user_agent, event.edition_id) == ("one-click", GMAIL_UA, m.edition_id)
    assert event.created_at == world.now


def test_the_form_button_unsubscribes_as_a_link_and_is_idempotent(
    sent: tuple[World, MemoryTransport],
) -> None:
    world, memory = sent
    m = memory.sent[2]
    http = client(world)
    first = http.post(path_of(m.unsubscribe_url), headers={"User-Agent": "Firefox"})
    second = http.post(path_of(m.unsubscribe_url), headers={"User-Agent": "Firefox"})
    assert first.status_code == second.status_code == 200
    assert "/resubscribe/" in first.text  # the confirmation offers to come back
    [event] = events(world, "unsubscribe")
    assert event.method == "link"


def test_resubscribe_from_the_confirmation_page(sent: tuple[World, MemoryTransport]) -> None:
    world, memory = sent
    m = memory.sent[3]
    http = client(world)
    http.post(path_of(m.unsubscribe_url))
    token = m.unsubscribe_url.rsplit("/", 1)[1]
    assert http.post(f"/resubscribe/{token}", headers={"User-Agent": "Firefox"}).status_code == 200
    assert subscriber(world, m.to_email).status == SubscriberStatus.ACTIVE
    [event] = events(world, "resubscribe")
    assert (event.method, event.edition_id, event.user_agent) == ("link", m.edition_id, "Firefox")


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_tampered_token_gets_400_and_changes_nothing(
    sent: tuple[World, MemoryTransport], method: str
) -> None:
    world, memory = sent
    m = memory.sent[0]
    token = m.unsubscribe_url.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    key = subscriber(world, m.to_email).token_key
    forged = TokenSigner(["someone else's key"]).sign(LinkToken(m.subscriber_id, m.edition_id, key))
    before = events(world)
    for bad in (f"{payload}x.{signature}", f"{payload}.{signature[:-2]}", forged, "nonsense"):
        http = client(world)
        if method == "get":
            response = http.get(f"/unsubscribe/{bad}")
        else:
            response = http.post(f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 400, bad
    assert subscriber(world, m.to_email).status == SubscriberStatus.ACTIVE
    assert events(world) == before


def test_links_signed_with_a_rotated_out_key_still_work(world: World) -> None:
    first = subscriber(world, world.emails[0])
    assert first.id is not None
    old = TokenSigner([SECRET]).sign(LinkToken(first.id, None, first.token_key))
    rotated = load_settings(
        **{
            **world.settings.model_dump(),
            "secret_key": "a-brand-new-key-9876543210-zyxwvuts",
            "old_secret_keys": SECRET,
        }
    )
    app = create_app(rotated, world.newsletter, engine=world.engine, clock=lambda: world.now)
    assert TestClient(app).get(f"/unsubscribe/{old}").status_code == 200
    without_old = load_settings(
        **{**world.settings.model_dump(), "secret_key": "a-brand-new-key-9876543210-zyxwvuts"}
    )
    app = create_app(without_old, world.newsletter, engine=world.engine, clock=lambda: world.now)
    assert TestClient(app).get(f"/unsubscribe/{old}").status_code == 400


def test_preferences_pause_and_resume(sent: tuple[World, MemoryTransport]) -> None:
    world, memory = sent
    m = memory.sent[0]
    token = m.unsubscribe_url.rsplit("/", 1)[1]
    http = client(world)
    page = http.get(f"/preferences/{token}")
    assert page.status_code == 200
    assert 'name="pause_weeks"' in page.text
    response = http.post(
        f"/preferences/{token}",
        data={"topic": ["Robotics"], "pause_weeks": "2"},
        headers={"User-Agent": "Safari"},
    )
    assert response.status_code == 200
    assert "Paused until December 9, 2026" in response.text
    row = subscriber(world, m.to_email)
    assert row.status == SubscriberStatus.PAUSED
    assert row.paused_until == world.now + timedelta(weeks=2)
    assert row.topics == "Robotics"
    assert [(e.kind, e.method, e.user_agent) for e in events(world)[-2:]] == [
        ("preferences", "preferences", "Safari"),
        ("pause", "preferences", "Safari"),
    ]
    http.post(f"/preferences/{token}", data={"topic": ["Robotics"], "resume": "1"})
    assert subscriber(world, m.to_email).status == SubscriberStatus.ACTIVE
    assert events(world)[-1].kind == "resume"


def test_a_bad_pause_is_refused(sent: tuple[World, MemoryTransport]) -> None:
    world, memory = sent
    token = memory.sent[0].unsubscribe_url.rsplit("/", 1)[1]
    response = client(world).post(f"/preferences/{token}", data={"pause_weeks": "52"})
    assert response.status_code == 400
    assert subscriber(world, memory.sent[0].to_email).status == SubscriberStatus.ACTIVE


def test_stats_count_unsubscribes_by_method_and_the_rate(sent: tuple[World, MemoryTransport]) -> None:
    world, memory = sent
    http = client(world)
    http.post(path_of(memory.sent[0].unsubscribe_url), data={"List-Unsubscribe": "One-Click"})
    http.post(path_of(memory.sent[1].unsubscribe_url), data={"List-Unsubscribe": "One-Click"})
    http.post(path_of(memory.sent[2].unsubscribe_url))
    http.get(path_of(memory.sent[3].unsubscribe_url))  # a scanner: not counted
    with session_scope(world.engine) as session:
        edition = queries.edition_for(world.now.date(), session=session)
        assert edition is not None
        stats = edition_stats(edition, session=session)
    assert (stats.recipients, stats.sent, stats.unknown) == (12, 12, 0)
    assert stats.unsubscribes == {"one-click": 2, "link": 1}
    assert stats.unsubscribe_rate == pytest.approx(3 / 12)
    assert local_date(world.settings.zone, world.now) == world.now.date()
