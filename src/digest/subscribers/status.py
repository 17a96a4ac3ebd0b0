"""Subscriber status changes: unsubscribe and subscribe again, a complaint in force, pauses and
their end, and the preferences form; every change leaves an event (subscribers/roster.py holds
the list itself and the checks of outside text)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Unpack

from sqlmodel import Session, col, select

from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError
from digest.subscribers.roster import Via, record_event


def _transition(
    subscriber: Subscriber,
    status: SubscriberStatus,
    kind: str,
    *,
    session: Session,
    now: datetime,
    method: str,
    paused_until: datetime | None = None,
    detail: str | None = None,
    **via: Unpack[Via],
) -> None:
    """Set a subscriber's status and record the change as an event (every change leaves one)."""
    subscriber.status, subscriber.paused_until, subscriber.updated_at = status, paused_until, now
    session.add(subscriber)
    record_event(
        session,
        subscriber,
        kind,
        method,
        now=now,
        detail=detail,
        **via,
    )


def unsubscribe(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    **via: Unpack[Via],
) -> bool:
    """Unsubscribe (idempotent); True when this call changed the status.

    A reader who complained stays `complained`: that is a stronger no, and turning it into a
    plain unsubscribe would let a "subscribe again" click undo it (issue 12).
    """
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED):
        return False
    _transition(
        subscriber,
        SubscriberStatus.UNSUBSCRIBED,
        "unsubscribe",
        session=session,
        now=now,
        method=method,
        paused_until=subscriber.paused_until,
        **via,
    )
    return True


def resubscribe(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    **via: Unpack[Via],
) -> bool:
    """Undo the reader's own unsubscribe (the confirmation page offers it); True when it changed.

    Never after a spam complaint that is still in force: that reader must confirm by email
    first (optin.subscribe_again), so a click on a page cannot undo a complaint.
    """
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED or complaint_in_force(subscriber, session=session):
        return False
    _transition(
        subscriber,
        SubscriberStatus.ACTIVE,
        "resubscribe",
        session=session,
        now=now,
        method=method,
        paused_until=subscriber.paused_until,
        **via,
    )
    return True


def complaint_in_force(subscriber: Subscriber, *, session: Session) -> bool:
    """Whether the reader complained (marked us as spam) and has not confirmed by email since."""
    if subscriber.status == SubscriberStatus.COMPLAINED:
        return True
    last = session.exec(
        select(SubscriberEvent.kind)
        .where(SubscriberEvent.subscriber_id == subscriber.id)
        .where(col(SubscriberEvent.kind).in_(("complaint", "confirm")))
        .order_by(col(SubscriberEvent.id).desc())  # insertion order: times can be equal
        .limit(1)
    ).first()
    return last == "complaint"


# --- pause (preferences page) ------------------------------------------------------------------

PAUSE_CHOICES_WEEKS = (1, 2, 4, 8)
RESUME_BATCH = 500  # paused subscribers reactivated per query


def pause(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    until: datetime,
    method: str = "preferences",
    **via: Unpack[Via],
) -> None:
    """Stop editions until `until`; the first send after that date resumes them."""
    if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        raise SubscriberError(f"{subscriber.email} is {subscriber.status}: nothing to pause")
    _transition(
        subscriber,
        SubscriberStatus.PAUSED,
        "pause",
        session=session,
        now=now,
        method=method,
        paused_until=until,
        detail=f"until {until.date().isoformat()}",
        **via,
    )


def resume(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    **via: Unpack[Via],
) -> bool:
    """End a pause now; True when this call changed the status."""
    if subscriber.status != SubscriberStatus.PAUSED:
        return False
    _transition(
        subscriber,
        SubscriberStatus.ACTIVE,
        "resume",
        session=session,
        now=now,
        method=method,
        **via,
    )
    return True


def resume_paused(*, session: Session, now: datetime) -> int:
    """Reactivate everyone whose pause has ended (called before each send), a batch at a time."""
    due = (
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.PAUSED, col(Subscriber.paused_until) <= now)
        .order_by(col(Subscriber.id))
        .limit(RESUME_BATCH)
    )
    resumed = 0
    while batch := session.exec(due).all():
        for subscriber in batch:
            resume(subscriber, session=session, now=now, method="schedule")
        # Flushed, the resumed rows leave the query, so the next batch is the next rows due; the
        # session's identity map holds clean rows weakly, so memory stays one batch.
        session.flush()
        resumed += len(batch)
    return resumed


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    """What the preferences form asks for: topics, a time zone, and optionally a pause or its end."""

    topics: list[str]
    timezone: str | None = None  # None: the newsletter's DIGEST_TIMEZONE
    set_timezone: bool = False  # the form carried a time zone choice
    pause_weeks: int = 0
    resume: bool = False


def apply_preferences(
    subscriber: Subscriber,
    change: PreferenceChange,
    *,
    session: Session,
    now: datetime,
    **via: Unpack[Via],
) -> None:
    """Save topics and time zone (an event when they change), then pause or resume as asked."""
    if change.pause_weeks and change.pause_weeks not in PAUSE_CHOICES_WEEKS:
        raise SubscriberError(f"a pause is one of {', '.join(map(str, PAUSE_CHOICES_WEEKS))} weeks")
    topics = "\n".join(change.topics)
    zone = change.timezone if change.set_timezone else subscriber.timezone
    if topics != subscriber.topics or zone != subscriber.timezone:
        subscriber.topics, subscriber.timezone, subscriber.updated_at = topics, zone, now
        session.add(subscriber)
        record_event(
            session,
            subscriber,
            "preferences",
            "preferences",
            now=now,
            detail=(";".join(change.topics) or "all") + (f"; time zone {zone}" if zone else ""),
            **via,
        )
    if change.resume:
        resume(
            subscriber,
            session=session,
            now=now,
            method="preferences",
            **via,
        )
    elif change.pause_weeks:
        pause(
            subscriber,
            session=session,
            now=now,
            until=now + timedelta(weeks=change.pause_weeks),
            **via,
        )
