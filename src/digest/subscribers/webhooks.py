"""Provider feedback: SendGrid's signed Event Webhook turned into subscriber changes.

SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 and sends the signature and
timestamp in two headers. We verify with `cryptography` on the exact bytes received, refuse
timestamps outside a replay window, and deduplicate events on `sg_event_id` (delivery is
at-least-once, retried for up to 24 hours).
"""

import base64
import binascii
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from sqlmodel import Session, col, select

from digest.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberEvent, SubscriberStatus
from digest.db.queries import existing_edition_id
from digest.errors import SubscriberError, WebhookError
from digest.subscribers.roster import normalize_email, record_event
from digest.tokens import key_matches

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_BODY = 5 * 1024 * 1024  # SendGrid batches events; a few MB is plenty


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key as shown by SendGrid (base64 DER), or PEM."""
    try:
        if value.lstrip().startswith("-----BEGIN"):
            key = load_pem_public_key(value.encode())
        else:
            key = load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error) as e:
        raise WebhookError(f"DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY: not a public key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookError("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY: not an elliptic-curve key")
    return key


def verify_signature(
    key: ec.EllipticCurvePublicKey,
    *,
    payload: bytes,
    signature: str | None,
    timestamp: str | None,
    now: datetime,
    max_age: int,
) -> None:
    """Raise WebhookError unless the body is signed by `key` at a time within the replay window."""
    if not signature or not timestamp:
        raise WebhookError("unsigned request")
    try:
        sent_at = int(timestamp)
        raw_signature = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error) as e:
        raise WebhookError("malformed signature or timestamp") from e
    if abs(now.timestamp() - sent_at) > max_age:
        raise WebhookError(f"timestamp {sent_at} outside the {max_age} s replay window")
    try:
        key.verify(raw_signature, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise WebhookError("bad signature") from e


MAX_DEPTH = 6  # array > event > custom field > list > ...: SendGrid's events nest 3 deep


def parse_events(payload: bytes) -> list[dict[str, Any]]:
    """The JSON array of events, or WebhookError (one short line, whatever the body holds)."""
    try:
        data = json.loads(payload)
    except RecursionError as e:  # the C parser's guard: thousands of nested brackets (issue 12)
        raise WebhookError("body is not an array of events: JSON nested too deeply") from e
    except ValueError as e:
        raise WebhookError(f"body is not JSON: {str(e)[:200]}") from e
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise WebhookError("body is not a JSON array of events")
    if _depth(data) > MAX_DEPTH:
        raise WebhookError(f"body is not an array of events: JSON nested over {MAX_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in `value` (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break  # deep enough to refuse: no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


@dataclass(frozen=True, slots=True)
class Action:
    """What an event does to a subscriber."""

    kind: str  # the SubscriberEvent kind
    method: str
    status: SubscriberStatus | None  # None: record only (e.g. a temporary block)
    fails_delivery: bool


def action_for(event: dict[str, Any]) -> Action | None:
    """The subscriber change an event asks for; None for events that change nothing (open, ...)."""
    kind = event.get("event")
    reason = str(event.get("reason", "")).lower()
    if kind == "bounce":
        # "blocked" is SendGrid's temporary bounce: record it, keep the reader.
        blocked = event.get("type") == "blocked"
        return Action("bounce", "bounce", None if blocked else SubscriberStatus.BOUNCED, True)
    if kind == "dropped":
        if "spam" in reason:
            return Action("complaint", "complaint", SubscriberStatus.COMPLAINED, True)
        if "unsubscribe" in reason:
            return Action("unsubscribe", "webhook", SubscriberStatus.UNSUBSCRIBED, True)
        return Action("bounce", "bounce", SubscriberStatus.BOUNCED, True)
    if kind == "spamreport":
        return Action("complaint", "complaint", SubscriberStatus.COMPLAINED, False)
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Action("unsubscribe", "webhook", SubscriberStatus.UNSUBSCRIBED, False)
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _subscriber(event: dict[str, Any], *, session: Session) -> Subscriber | None:
    """The subscriber an event is about: the row our custom_args name when it is still the one the
    mail went to (same address and key), else the address's row for events without our key."""
    try:
        email = normalize_email(str(event.get("email", "")))
    except SubscriberError:
        return None
    by_id = _int(event.get("digest_subscriber"))
    key = event.get("digest_key")  # absent in events of mail sent before issue 12
    if by_id is not None:
        row = session.get(Subscriber, by_id)
        if row is not None and row.email == email and (key is None or key_matches(row, str(key))):
            return row
        if key is not None:
            # Our mail to a subscriber deleted since (issue 12): not about whoever has that id or
            # that address now, who signed up afresh after it was sent.
            return None
    return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def apply_action(
    subscriber: Subscriber,
    action: Action,
    *,
    session: Session,
    now: datetime,
    edition_id: int | None,
    error: str,
    detail: str,
    user_agent: str,
    external_id: str | None = None,
) -> None:
    """Apply one piece of feedback about a reader (a webhook event, a bounce by mail): their new
    status, the edition's delivery marked failed with `error`, and the event recorded."""
    # An unsubscribe after a complaint keeps the complaint, the stronger no (issue 12).
    weaker = (subscriber.status, action.status) == (
        SubscriberStatus.COMPLAINED,
        SubscriberStatus.UNSUBSCRIBED,
    )
    if action.status is not None and subscriber.status != action.status and not weaker:
        subscriber.status, subscriber.updated_at = action.status, now
        session.add(subscriber)
    if action.fails_delivery and edition_id is not None:
        session.execute(
            sa.update(Delivery)
            .where(col(Delivery.edition_id) == edition_id, col(Delivery.subscriber_id) == subscriber.id)
            .values(status=DeliveryStatus.FAILED.value, error=error[:500], updated_at=now)
        )
    record_event(
        session,
        subscriber,
        action.kind,
        action.method,
        now=now,
        edition_id=edition_id,
        user_agent=user_agent,
        detail=detail,
        external_id=external_id,
    )


def apply_events(events: list[dict[str, Any]], *, session: Session, now: datetime) -> dict[str, int]:
    """Apply each event once; returns counts by outcome (applied, duplicate, ignored, unknown)."""
    outcome: Counter[str] = Counter()
    for event in events:
        action = action_for(event)
        if action is None:
            outcome["ignored"] += 1
            continue
        event_id = str(event.get("sg_event_id") or "") or None
        if (
            event_id is not None
            and session.exec(
                select(SubscriberEvent.id).where(SubscriberEvent.external_id == event_id)
            ).first()
        ):
            outcome["duplicate"] += 1
            continue
        subscriber = _subscriber(event, session=session)
        if subscriber is None:
            log.warning("sendgrid event for nobody we know event=%s", event.get("event"))
            outcome["unknown"] += 1
            continue
        apply_action(
            subscriber,
            action,
            session=session,
            now=now,
            edition_id=existing_edition_id(_int(event.get("digest_edition")), session=session),
            error=f"sendgrid {event.get('event')}: {event.get('reason', '')}",
            detail=f"sendgrid {event.get('event')}: {event.get('reason') or event.get('type') or ''}".strip(),
            user_agent="SendGrid Event Webhook",
            external_id=event_id,
        )
        session.flush()  # the unique external_id catches a duplicate inside one batch
        outcome["applied"] += 1
    return dict(outcome)
