"""POST /webhooks/sendgrid: real ECDSA signatures, a replay window, dedupe by sg_event_id."""

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlmodel import select

from digest.config import load_settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.memory import MemoryTransport
from digest.deliver.stats import edition_stats
from digest.subscribers.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from digest.web.app import create_app
from tests.world import World


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key pair, as SendGrid makes for a signed Event Webhook."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def http(world: World, key: ec.EllipticCurvePrivateKey) -> TestClient:
    world.send(MemoryTransport())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = load_settings(
        **{**world.settings.model_dump(), "sendgrid_webhook_public_key": base64.b64encode(public).decode()}
    )
    return TestClient(create_app(settings, world.newsletter, engine=world.engine, clock=lambda: world.now))


def signed(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: str(timestamp),
        "Content-Type": "application/json",
    }


def event(world: World, kind: str, n: int, *, sg_id: str, **extra: Any) -> dict[str, Any]:
    with session_scope(world.engine) as session:
        s = session.exec(select(Subscriber).where(Subscriber.email == world.emails[n])).one()
        d = session.exec(select(Delivery).where(Delivery.subscriber_id == s.id)).one()
    return {
        "email": s.email,
        "event": kind,
        "timestamp": int(world.now.timestamp()),
        "sg_event_id": sg_id,
        "digest_edition": str(d.edition_id),
        "digest_subscriber": str(s.id),
        **extra,
    }


def status(world: World, n: int) -> SubscriberStatus:
    with session_scope(world.engine) as session:
        s = session.exec(select(Subscriber).where(Subscriber.email == world.emails[n])).one()
    return s.status


def all_events(world: World) -> list[tuple[str, str, str | None]]:
    with session_scope(world.engine) as session:
        rows = session.exec(select(SubscriberEvent).where(SubscriberEvent.external_id.is_not(None)))  # type: ignore[union-attr]
        return [(e.kind, e.method, e.external_id) for e in rows]


def test_signed_events_update_subscribers_once(
    world: World, http: TestClient, key: ec.EllipticCurvePrivateKey
) -> None:
    events = [
        event(world, "bounce", 0, sg_id="e1", type="bounce", reason="550 5.1.1 no such user"),
        event(world, "spamreport", 1, sg_id="e2"),
        event(world, "unsubscribe", 2, sg_id="e3"),
        event(world, "group_unsubscribe", 3, sg_id="e4"),
        event(world, "dropped", 4, sg_id="e5", reason="Bounced Address"),
        event(world, "open", 5, sg_id="e6"),
        event(world, "bounce", 6, sg_id="e7", type="blocked", reason="421 try later"),
    ]
    body = json.dumps(events).encode()
    ts = int(world.now.timestamp())
    response = http.post("/webhooks/sendgrid", content=body, headers=signed(key, body, ts))
    assert response.status_code == 200
    assert response.json() == {"applied": 6, "ignored": 1}
    assert [status(world, n) for n in range(7)] == [
        SubscriberStatus.BOUNCED,
        SubscriberStatus.COMPLAINED,
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
        SubscriberStatus.ACTIVE,
        SubscriberStatus.ACTIVE,  # a temporary block is recorded, not a reason to drop the reader
    ]
    assert sorted(all_events(world)) == [
        ("bounce", "bounce", "e1"),
        ("bounce", "bounce", "e5"),
        ("bounce", "bounce", "e7"),
        ("complaint", "complaint", "e2"),
        ("unsubscribe", "webhook", "e3"),
        ("unsubscribe", "webhook", "e4"),
    ]
    with session_scope(world.engine) as session:
        failed = session.exec(select(Delivery).where(Delivery.status == DeliveryStatus.FAILED)).all()
    assert len(failed) == 3  # the bounces and the drop: those messages did not arrive
    with session_scope(world.engine) as session:
        edition = queries.edition_for(world.now.date(), session=session)
        assert edition is not None
        stats = edition_stats(edition, session=session)
    assert stats.unsubscribes == {"complaint": 1, "webhook": 2}  # e2; e3 and e4
    assert (stats.sent, stats.failed) == (9, 3)
    # SendGrid retries deliveries: the same events again change nothing.
    again = http.post("/webhooks/sendgrid", content=body, headers=signed(key, body, ts + 5))
    assert again.json() == {"duplicate": 6, "ignored": 1}
    assert len(all_events(world)) == 6


def test_unsigned_badly_signed_or_replayed_requests_get_403(
    world: World, http: TestClient, key: ec.EllipticCurvePrivateKey
) -> None:
    body = json.dumps([event(world, "unsubscribe", 0, sg_id="x1")]).encode()
    ts = int(world.now.timestamp())
    other = ec.generate_private_key(ec.SECP256R1())
    tampered = body.replace(b"unsubscribe", b"spamreport")
    cases = [
        {"Content-Type": "application/json"},  # unsigned
        signed(other, body, ts),  # someone else's key
        {**signed(key, body, ts), TIMESTAMP_HEADER: str(ts + 1)},  # timestamp changed after signing
        signed(key, body, ts - 3600),  # an old request replayed
        {**signed(key, body, ts), SIGNATURE_HEADER: "not base64!"},
    ]
    for headers in cases:
        assert http.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 403
    assert http.post("/webhooks/sendgrid", content=tampered, headers=signed(key, body, ts)).status_code == 403
    assert status(world, 0) == SubscriberStatus.ACTIVE
    assert all_events(world) == []


def test_without_a_configured_key_every_request_is_refused(world: World) -> None:
    app = create_app(world.settings, world.newsletter, engine=world.engine, clock=lambda: world.now)
    response = TestClient(app).post("/webhooks/sendgrid", content=b"[]")
    assert response.status_code == 403


def test_a_signed_body_that_is_not_an_event_array_is_a_400(
    world: World, http: TestClient, key: ec.EllipticCurvePrivateKey
) -> None:
    body = b'{"not": "a list"}'
    response = http.post(
        "/webhooks/sendgrid", content=body, headers=signed(key, body, int(world.now.timestamp()))
    )
    assert response.status_code == 400
