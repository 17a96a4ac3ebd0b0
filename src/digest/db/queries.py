"""Read queries shared by the stages; each takes the session as a keyword argument."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionDecision,
    EditionStory,
    Source,
    Story,
    Subscriber,
    SubscriberStatus,
)


@dataclass(frozen=True, slots=True)
class StoryRecord:
    """A stored story with its articles' sources, ready for topic matching and composing."""

    story: Story
    articles: tuple[tuple[Article, Source], ...]  # first published first


def unsent_stories(*, session: Session, start: datetime, end: datetime) -> list[StoryRecord]:
    """Stories no edition has carried that have an article published from `start` to `end`
    (both included), each with only those articles, first published first.

    An article's publication time is its feed's date, clamped to when digest first saw it, or
    that first-seen time when the feed gave none (sources/collect.py). Which articles of a story
    count is the caller's rule (editions.py); this reads what it asks for in two queries.
    """
    published = sa.and_(col(Article.published_at) >= start, col(Article.published_at) <= end)
    in_window = select(Article.story_id).where(published)
    in_editions = select(EditionStory.story_id)
    stories = session.exec(
        select(Story)
        .where(col(Story.id).in_(in_window))
        .where(col(Story.id).not_in(in_editions))
        .order_by(col(Story.id))
    ).all()
    ids = [s.id for s in stories]
    by_story: dict[int, list[tuple[Article, Source]]] = defaultdict(list)
    for article, source in session.exec(
        select(Article, Source)
        .join(Source, col(Article.source_id) == col(Source.id))
        .where(col(Article.story_id).in_(ids), published)
        .order_by(col(Article.published_at), col(Article.id))
    ):
        assert article.story_id is not None
        by_story[article.story_id].append((article, source))
    return [StoryRecord(s, tuple(by_story[s.id])) for s in stories if s.id in by_story]


def edition_for(day: date, *, session: Session) -> Edition | None:
    """The edition of a date, if built."""
    return session.exec(select(Edition).where(Edition.date == day)).first()


def latest_edition_before(day: date, *, session: Session) -> Edition | None:
    """The most recent edition before a date."""
    return session.exec(select(Edition).where(Edition.date < day).order_by(col(Edition.date).desc())).first()


def recent_editions(*, session: Session, limit: int = 30) -> list[Edition]:
    """Newest editions first."""
    return list(session.exec(select(Edition).order_by(col(Edition.date).desc()).limit(limit)))


def existing_edition_id(edition_id: int | None, *, session: Session) -> int | None:
    """`edition_id` if that edition still exists; None for none, 0 (a preview link) or a deleted one."""
    if not edition_id:
        return None
    return edition_id if session.get(Edition, edition_id) is not None else None


def sent_editions(*, session: Session, limit: int | None = None) -> list[Edition]:
    """Editions that were sent and carried stories, newest first (the public archive)."""
    return list(
        session.exec(
            select(Edition)
            .where(col(Edition.sent_at).is_not(None), col(Edition.story_count) > 0)
            .order_by(col(Edition.date).desc())
            .limit(limit)
        )
    )


def approval_of(day: date, *, session: Session) -> EditionDecision | None:
    """The approval of the edition of a date, if given (issue 14)."""
    return session.exec(
        select(EditionDecision)
        .where(EditionDecision.edition_date == day, EditionDecision.action == "approve")
        .order_by(col(EditionDecision.id))
    ).first()


def decisions_for(day: date, *, session: Session) -> list[EditionDecision]:
    """The editor's decisions about the edition of a date, in the order they were made (issue 14)."""
    return list(
        session.exec(
            select(EditionDecision)
            .where(EditionDecision.edition_date == day)
            .order_by(col(EditionDecision.id))
        )
    )


def zone_audience(zone: str, default_zone: str) -> sa.ColumnElement[bool]:
    """SQL condition for the subscribers of `zone` (no time zone counts as the newsletter's)."""
    column = col(Subscriber.timezone)
    if zone == default_zone:
        return sa.or_(column == zone, column.is_(None))
    return column == zone


SENDABLE = (DeliveryStatus.PENDING, DeliveryStatus.RETRY)  # ledger rows a send still has to send


def readers_to_send(
    edition_id: int, *, session: Session, now: datetime, after_id: int, size: int
) -> list[tuple[Subscriber, str | None]]:
    """A page of `size` readers after `after_id` (in id order) a send of the edition would
    consider now, with their delivery row's status: a row to send or retry, or no row yet and
    active (or paused with the pause over: the send resumes them first)."""
    active_now = sa.or_(
        col(Subscriber.status) == SubscriberStatus.ACTIVE,
        sa.and_(col(Subscriber.status) == SubscriberStatus.PAUSED, col(Subscriber.paused_until) <= now),
    )
    rows = session.exec(
        select(Subscriber, col(Delivery.status))
        .outerjoin(
            Delivery,
            sa.and_(
                col(Delivery.subscriber_id) == col(Subscriber.id),
                col(Delivery.edition_id) == edition_id,
            ),
        )
        .where(col(Subscriber.id) > after_id)
        .where(
            sa.or_(
                col(Delivery.status).in_(SENDABLE),
                sa.and_(col(Delivery.id).is_(None), active_now),
            )
        )
        .order_by(col(Subscriber.id))
        .limit(size)
    ).all()
    return [(subscriber, status) for subscriber, status in rows]
