"""Double opt-in: web sign-up, the confirmation message, confirming, and expiring the unconfirmed.

A sign-up creates a *pending* subscriber (pending ones never receive editions) and mails a link;
the link's page confirms by POST, so a link scanner's GET confirms nothing. The answer to the
browser is the same whatever the address's state, so the form cannot tell who is subscribed.
"""

import logging
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import jinja2
from itsdangerous import BadSignature, URLSafeSerializer
from sqlmodel import Session, col, select

from digest.config import Settings
from digest.db.models import Delivery, Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.base import MessageContent, OutgoingMessage, Transport
from digest.deliver.message import new_message_id
from digest.errors import SubscriberError, TemplateError, TokenError
from digest.newsletter import Newsletter
from digest.render.email import BodyTemplate
from digest.subscribers.roster import Via, check_timezone, check_topics, normalize_email, record_event
from digest.subscribers.status import complaint_in_force, resubscribe
from digest.tokens import key_matches

log = logging.getLogger(__name__)

# A second sign-up for the same pending address within this time sends no second message: the
# form must not become a way to flood someone's inbox from many addresses.
RESEND_AFTER = timedelta(minutes=10)
CONFIRM_TEXT = "email/confirm.txt.j2"
CONFIRM_HTML = "email/confirm.html.j2"


@dataclass(frozen=True, slots=True)
class ConfirmLink:
    """What a confirmation link is for: one sign-up of one subscriber row."""

    subscriber_id: int
    email: str
    stamp: int  # the sign-up time, in whole seconds
    key: str | None  # the row's token_key; None only in links made before issue 12


class ConfirmSigner:
    """Signs confirmation tokens: (subscriber id, address, sign-up time, subscriber's token key).

    Unlike unsubscribe tokens these are bound to one sign-up: the address and its time are in
    the token, so a link outlives neither its expiry nor its row, and the key (issue 12) tells a
    row re-created under a reused id (even in the same second) from the one the link was for.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise TokenError("no secret key to sign links with")
        self._serializer = URLSafeSerializer(list(keys), salt="digest.confirm")

    def sign(self, subscriber: Subscriber) -> str:
        """A URL-safe token for this subscriber's confirmation link."""
        assert subscriber.consent_at is not None
        return str(
            self._serializer.dumps(
                [subscriber.id, subscriber.email, _stamp(subscriber.consent_at), subscriber.token_key]
            )
        )

    def verify(self, token: str) -> ConfirmLink:
        """What the link is for, or TokenError when forged, altered or malformed."""
        try:
            data = self._serializer.loads(token)
        except BadSignature as e:
            raise TokenError("this link is not valid (it may have been altered)") from e
        if not (
            isinstance(data, list)
            and len(data) in (3, 4)  # 3: a link from before token keys
            and isinstance(data[0], int)
            and isinstance(data[1], str)
            and isinstance(data[2], int)
            and (len(data) == 3 or isinstance(data[3], str))
        ):
            raise TokenError("this link is not valid (unexpected content)")
        return ConfirmLink(data[0], data[1], data[2], data[3] if len(data) == 4 else None)


def _stamp(moment: datetime) -> int:
    return int(moment.timestamp())


class RateLimiter:
    """At most `limit` events per key in a sliding `window` (in memory: one web process)."""

    def __init__(self, limit: int, window: timedelta) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque[datetime]] = {}

    def allow(self, key: str, now: datetime) -> bool:
        """Count one event for `key`; False when it is over the limit."""
        times = self._seen.setdefault(key, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        if len(self._seen) > 10_000:  # forget idle keys so memory stays bounded
            for idle in [k for k, v in self._seen.items() if not v or now - v[-1] >= self.window]:
                del self._seen[idle]
        return True


def sign_up(
    email: str,
    *,
    session: Session,
    now: datetime,
    known_topics: Sequence[str],
    topics: Sequence[str] = (),
    timezone: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Subscriber | None:
    """Record a web sign-up; the pending subscriber to send a confirmation to, or None.

    None (nothing to send) for someone already subscribed, paused, bounced or complained, and for
    a repeat within RESEND_AFTER. SubscriberError only for a malformed address or unknown topic.
    """
    address = normalize_email(email)
    chosen = check_topics(topics, known_topics)
    try:
        tz = check_timezone(timezone) if timezone else None
    except SubscriberError:
        tz = None  # the browser's guess; the newsletter's zone is a fine fallback
    row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if row is None:
        row = Subscriber(email=address, status=SubscriberStatus.PENDING, created_at=now, updated_at=now)
    elif row.status == SubscriberStatus.PENDING:
        if _sent_lately(row, now):
            return None
    elif row.status != SubscriberStatus.UNSUBSCRIBED:
        return None  # active, paused, bounced or complained: nothing to confirm
    detail = "was unsubscribed" if row.status == SubscriberStatus.UNSUBSCRIBED else None
    row.topics, row.timezone = "\n".join(chosen), tz
    return _to_pending(row, session=session, now=now, ip=ip, user_agent=user_agent, detail=detail)


@dataclass(frozen=True, slots=True)
class ComeBack:
    """What "subscribe again" did: `active` at once, or `confirm` (a link to confirm by email)."""

    status: str
    to_confirm: Subscriber | None = None  # the row to mail a confirmation link to, if any


def subscribe_again(
    row: Subscriber,
    *,
    session: Session,
    now: datetime,
    edition_id: int | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> ComeBack:
    """The reader's "subscribe again" after unsubscribing (the page's button).

    Their own unsubscribe is undone at once. A spam complaint is not undone by a click (issue 12):
    the reader goes pending, with topics and time zone kept, and gets nothing until they use the
    confirmation link (none is sent again within RESEND_AFTER).
    """
    if not complaint_in_force(row, session=session):
        via: Via = {"edition_id": edition_id, "user_agent": user_agent, "ip": ip}
        resubscribe(row, session=session, now=now, method="link", **via)
        return ComeBack("active")
    if row.status == SubscriberStatus.PENDING and _sent_lately(row, now):
        return ComeBack("confirm")
    detail = "after a complaint"
    return ComeBack(
        "confirm", _to_pending(row, session=session, now=now, ip=ip, user_agent=user_agent, detail=detail)
    )


def _sent_lately(row: Subscriber, now: datetime) -> bool:
    return row.consent_at is not None and now - row.consent_at < RESEND_AFTER


def _to_pending(
    row: Subscriber,
    *,
    session: Session,
    now: datetime,
    ip: str | None,
    user_agent: str | None,
    detail: str | None,
) -> Subscriber:
    """Record a new consent request: the row waits, pending, for its confirmation link."""
    row.status = SubscriberStatus.PENDING
    row.consent_source, row.consent_at, row.consent_ip = "web", now, ip
    row.updated_at = now
    session.add(row)
    session.flush()
    record_event(session, row, "subscribe", "web", now=now, ip=ip, user_agent=user_agent, detail=detail)
    return row


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """Where a confirmation link stands: pending (can confirm), confirmed, already, expired, gone."""

    status: str
    subscriber: Subscriber | None = None


def check_link(link: ConfirmLink, *, session: Session, now: datetime, max_age: timedelta) -> ConfirmResult:
    """What a confirmation link would do, without doing it (the GET page)."""
    row = session.get(Subscriber, link.subscriber_id)
    if row is None or row.email != link.email or not key_matches(row, link.key):
        return ConfirmResult("gone")
    if row.status == SubscriberStatus.ACTIVE:
        return ConfirmResult("already", row)
    if (
        row.status != SubscriberStatus.PENDING
        or row.consent_at is None
        or _stamp(row.consent_at) != link.stamp
    ):
        return ConfirmResult("gone", row)
    if now - row.consent_at > max_age:
        return ConfirmResult("expired", row)
    return ConfirmResult("pending", row)


def confirm(
    link: ConfirmLink,
    *,
    session: Session,
    now: datetime,
    max_age: timedelta,
    ip: str | None = None,
    user_agent: str | None = None,
) -> ConfirmResult:
    """Activate a pending subscriber from their confirmation link (POST only; idempotent)."""
    state = check_link(link, session=session, now=now, max_age=max_age)
    if state.status != "pending" or state.subscriber is None:
        return state
    row = state.subscriber
    row.status = SubscriberStatus.ACTIVE
    row.confirmed_at, row.confirmed_ip, row.updated_at = now, ip, now
    session.add(row)
    record_event(session, row, "confirm", "link", now=now, ip=ip, user_agent=user_agent)
    log.info("sign-up confirmed subscriber=%s", row.email)
    return ConfirmResult("confirmed", row)


def expire_pending(*, session: Session, now: datetime, max_age: timedelta) -> int:
    """Pending sign-ups older than `max_age`: deleted when they were strangers, otherwise put back
    to unsubscribed, or complained (someone who once left must stay recorded as having left)."""
    cutoff = now - max_age
    stale = session.exec(
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.PENDING)
        .where(col(Subscriber.consent_at).is_(None) | (col(Subscriber.consent_at) < cutoff))
    ).all()
    for row in stale:
        events = session.exec(select(SubscriberEvent).where(SubscriberEvent.subscriber_id == row.id)).all()
        stranger = all(e.kind == "subscribe" and e.method == "web" and not e.detail for e in events)
        has_deliveries = session.exec(select(Delivery.id).where(Delivery.subscriber_id == row.id)).first()
        if stranger and has_deliveries is None:
            for event in events:
                session.delete(event)
            session.flush()  # events first: they point at the subscriber
            session.delete(row)
            log.info("pending sign-up expired, deleted subscriber=%s", row.email)
        else:
            # A complaint still in force stays a complaint (issue 12), whatever the pending row says.
            complained = complaint_in_force(row, session=session)
            row.status = SubscriberStatus.COMPLAINED if complained else SubscriberStatus.UNSUBSCRIBED
            row.updated_at = now
            session.add(row)
            record_event(session, row, "expire", "web", now=now, detail="sign-up never confirmed")
            log.info("pending sign-up expired, back to %s subscriber=%s", row.status, row.email)
    return len(stale)


def confirmation_message(
    env: jinja2.Environment,
    settings: Settings,
    newsletter: Newsletter,
    subscriber: Subscriber,
    *,
    confirm_url: str,
) -> OutgoingMessage:
    """The confirmation email (its own small templates, not the digest's)."""
    assert subscriber.id is not None
    info = newsletter.newsletter
    context = {
        "newsletter": info,
        "confirm_url": confirm_url,
        "expiry_hours": settings.confirm_expiry_hours,
        "subscribe_url": f"{settings.base_url}/subscribe",
    }
    try:
        text = env.get_template(CONFIRM_TEXT).render(context)
        html = env.get_template(CONFIRM_HTML).render(context)
    except jinja2.TemplateError as e:
        raise TemplateError(f"confirmation email template: {e}") from e
    content = MessageContent(
        key=secrets.token_hex(8),
        from_email=info.from_email,
        from_name=info.from_name or info.title,
        subject=f"Confirm your subscription to {info.title}",
        list_id=None,  # not list mail: no List-* headers
        html=BodyTemplate(chunks=(html,), slots=(), escape=True),
        text=BodyTemplate(chunks=(text,), slots=(), escape=False),
        reply_to=info.reply_to,
        headers=(("Auto-Submitted", "auto-generated"),),  # RFC 3834: no auto-replies to this, please
    )
    return OutgoingMessage(
        delivery_id=0,
        subscriber_id=subscriber.id,
        edition_id=0,
        to_email=subscriber.email,
        to_name=subscriber.name,
        content=content,
        values={},
        message_id=new_message_id(info.sender_domain),
        unsubscribe_url=None,
    )


def send_confirmation(message: OutgoingMessage, transport_factory: Callable[[], Transport]) -> bool:
    """Hand the confirmation to the transport; a failure is logged (the reader can sign up again)."""
    transport = transport_factory()
    try:
        [result] = transport.send([message])
    finally:
        transport.close()
    if not result.ok:
        log.warning("confirmation not sent subscriber=%s error=%s", message.to_email, result.error)
    return result.ok
