"""What the schedule reads, never writes: the time zones readers are in, and the edition each zone
waits for next. `dispatch` acts on it; `digest status` only shows it, so this module imports no
stage that sends or renders (issue 15: status starts in a fraction of a second).
"""

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.config import Settings
from digest.db import queries
from digest.db.models import Delivery, Subscriber, SubscriberStatus
from digest.db.queries import SENDABLE, zone_audience
from digest.schedule.zones import due_at, latest_due, next_due

log = logging.getLogger(__name__)


def active_zones(*, session: Session, default_zone: str) -> dict[str, int]:
    """Time zones of active subscribers, with how many are in each."""
    rows = session.exec(
        select(Subscriber.timezone, sa.func.count())
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .group_by(Subscriber.timezone)
    ).all()
    zones: dict[str, int] = {}
    for name, count in rows:
        zone = name or default_zone
        zones[zone] = zones.get(zone, 0) + int(count)
    return zones


def known_zones(zones: dict[str, int]) -> dict[str, int]:
    """The zones zoneinfo knows; an unknown one (edited by hand in the database) is logged and left
    out, so its readers wait for a fix instead of stopping everyone else's edition."""
    known = {}
    for zone, count in zones.items():
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            log.error("unknown time zone %r of %d subscriber(s): not sent to until it is fixed", zone, count)
            continue
        known[zone] = count
    return known


def has_work(edition_id: int | None, audience: sa.ColumnElement[bool], *, session: Session) -> bool:
    """True when an active subscriber of `audience` has no row for the edition, or a sendable one."""
    active = select(Subscriber.id).where(Subscriber.status == SubscriberStatus.ACTIVE).where(audience)
    if edition_id is None:
        return session.exec(active.limit(1)).first() is not None
    has_row = sa.exists().where(
        col(Delivery.edition_id) == edition_id, col(Delivery.subscriber_id) == col(Subscriber.id)
    )
    if session.exec(active.where(~has_row).limit(1)).first() is not None:
        return True
    sendable = (
        select(Delivery.id)
        .join(Subscriber, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(col(Delivery.edition_id) == edition_id, col(Delivery.status).in_(SENDABLE))
        .where(audience)
    )
    return session.exec(sendable.limit(1)).first() is not None


def next_send(
    zone: str, *, settings: Settings, now: datetime, session: Session
) -> tuple[date, datetime, bool]:
    """The edition the scheduler will send `zone` next, when it is due, and whether it is overdue.

    What `dispatch` will do, not only the calendar: the newest edition already due if the zone's
    readers are still waiting for it and it is not stale (the next dispatch sends it), else the
    next date due that they do not all have yet (a manual `digest send` may have sent it early).
    """
    audience = zone_audience(zone, settings.timezone)
    lateness = timedelta(hours=settings.max_lateness_hours)

    def waiting(day: date) -> bool:
        edition = queries.edition_for(day, session=session)
        return has_work(edition.id if edition is not None else None, audience, session=session)

    day, due = latest_due(zone, settings.send_time, now)
    if now - due <= lateness and waiting(day):
        return day, due, True
    day, due = next_due(zone, settings.send_time, now)
    # Editions are built on their date, or ahead by hand: only a few of them can exist ahead.
    while queries.edition_for(day, session=session) is not None and not waiting(day):
        day += timedelta(days=1)
        due = due_at(zone, day, settings.send_time)
    return day, due, False
