"""Follow-ups (issue 16): an edition's stories linked to the earlier editions they continue.

The database side of threads.py, as editions.py is of compose.py. Links are computed once per
edition, when it is frozen (`link_edition`, then `store_links`), and travel inside the frozen
content: every reader's copy is rendered from it, so a reader costs nothing more. A follow-up
stays a story of its own; it is never merged into the story it continues (clustering,
stories.py, decides what is one event).
"""

import logging
from dataclasses import replace
from datetime import timedelta

from sqlmodel import Session

from digest import compose, threads
from digest.db import links as stored
from digest.db.models import Edition, StoryLink
from digest.sources.clean import plain_text

log = logging.getLogger(__name__)

MAX_LATER = 5  # "Later:" links under one story of an archive page, the newest kept


def _thread_stories(edition: compose.Edition) -> list[threads.ThreadStory]:
    """Each story of an edition once (a story split by topic counts where first shown)."""
    seen: set[int] = set()
    found = []
    for section in edition.topics:
        for item in section.stories:
            if item.id in seen:
                continue
            seen.add(item.id)
            text = plain_text(item.summary_html, limit=threads.TEXT_CHARS)
            found.append(threads.ThreadStory(item.id, edition.date, item.title, text, section.name))
    return found


def link_edition(
    edition: compose.Edition, *, session: Session, horizon_days: int = threads.HORIZON_DAYS
) -> compose.Edition:
    """The edition with each follow-up's earlier stories (at most two, newest first) from the
    editions of the `horizon_days` before its date; nothing is written."""
    if horizon_days <= 0 or not edition.story_count:
        return edition
    first = edition.date - timedelta(days=horizon_days)
    earlier = [
        story
        for row in stored.editions_between(first, edition.date, session=session)
        for story in _thread_stories(compose.Edition.from_json(row.content_json))
    ]
    found = threads.link_earlier(_thread_stories(edition), earlier, horizon_days=horizon_days)
    if not found:
        return edition
    refs = {
        story_id: tuple(compose.ThreadRef(x.story_id, x.day, x.title, x.topic) for x in links)
        for story_id, links in found.items()
    }
    return replace(
        edition,
        topics=tuple(
            replace(t, stories=tuple(replace(s, earlier=refs.get(s.id, s.earlier)) for s in t.stories))
            for t in edition.topics
        ),
    )


def store_links(row: Edition, edition: compose.Edition, *, session: Session) -> int:
    """Record the frozen edition's links (for the "Later:" lines of the earlier archive pages)."""
    assert row.id is not None
    items = {s.id: (s, t.name) for t in reversed(edition.topics) for s in t.stories}  # first shown wins
    days = {ref.day for item, _ in items.values() for ref in item.earlier}
    if not days:
        return 0
    rows_between = stored.editions_between(min(days), max(days) + timedelta(days=1), session=session)
    edition_ids = {r.date: r.id for r in rows_between}
    links = []
    for item, topic in items.values():
        for rank, ref in enumerate(item.earlier):
            earlier_id = edition_ids.get(ref.day)
            if earlier_id is None:
                continue  # the earlier edition was deleted since the draft was made
            links.append(
                StoryLink(
                    later_story_id=item.id,
                    earlier_story_id=ref.story_id,
                    later_edition_id=row.id,
                    earlier_edition_id=earlier_id,
                    later_date=edition.date,
                    earlier_date=ref.day,
                    later_title=item.title,
                    earlier_title=ref.title,
                    later_topic=topic,
                    earlier_topic=ref.topic,
                    rank=rank,
                )
            )
    count = stored.save_links(links, session=session)
    follow_ups = len({link.later_story_id for link in links})
    log.info("edition links date=%s follow-ups=%d links=%d", edition.date, follow_ups, count)
    return count


def later_refs(edition: compose.Edition, *, session: Session) -> dict[int, tuple[compose.ThreadRef, ...]]:
    """The later follow-ups of each story of an edition, oldest first, as far as they are sent."""
    later: dict[int, list[compose.ThreadRef]] = {}
    for link in stored.later_links(edition.date, session=session):
        later.setdefault(link.earlier_story_id, []).append(
            compose.ThreadRef(link.later_story_id, link.later_date, link.later_title, link.later_topic)
        )
    return {story_id: tuple(refs[-MAX_LATER:]) for story_id, refs in later.items()}
