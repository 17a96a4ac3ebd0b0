"""Story links (issue 16): which story of a later edition continues which of an earlier one.

Queries take the session as a keyword argument; the caller owns the transaction.
"""

from collections.abc import Iterable
from datetime import date

from sqlmodel import Session, col, select

from digest.db.models import Edition, StoryLink


def editions_between(first: date, before: date, *, session: Session) -> list[Edition]:
    """Editions dated from `first` up to (not including) `before`, oldest first."""
    return list(
        session.exec(
            select(Edition)
            .where(col(Edition.date) >= first, col(Edition.date) < before)
            .order_by(col(Edition.date))
        )
    )


def save_links(links: Iterable[StoryLink], *, session: Session) -> int:
    """Store an edition's links (once: the edition is frozen once); how many were stored."""
    count = 0
    for link in links:
        session.add(link)
        count += 1
    return count


def links_from(edition_id: int, *, session: Session) -> list[StoryLink]:
    """The links an edition's stories make to earlier editions, by story and rank."""
    return list(
        session.exec(
            select(StoryLink)
            .where(StoryLink.later_edition_id == edition_id)
            .order_by(col(StoryLink.later_story_id), col(StoryLink.rank))
        )
    )


def later_links(day: date, *, session: Session) -> list[StoryLink]:
    """The links later editions, sent and public, make to the stories of the edition of `day`,
    oldest follow-up first."""
    return list(
        session.exec(
            select(StoryLink)
            .join(Edition, col(Edition.id) == col(StoryLink.later_edition_id))
            .where(StoryLink.earlier_date == day, col(Edition.sent_at).is_not(None))
            .order_by(col(StoryLink.later_date), col(StoryLink.later_story_id))
        )
    )
