"""Editions: stored stories -> topics -> compose, frozen once per date (the database side of the middle)."""

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import compose, followups, topics
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import (
    Article,
    Edition,
    EditionDecision,
    EditionStory,
    Source,
    Story,
)
from digest.newsletter import Newsletter
from digest.render.email import subject_for
from digest.sources.clean import plain_text
from digest.threads import HORIZON_DAYS

log = logging.getLogger(__name__)

MAX_CATCH_UP = timedelta(days=7)  # after longer downtime, older news is stale: let it go


def _match(
    newsletter: Newsletter, records: Iterable[queries.StoryRecord]
) -> list[tuple[queries.StoryRecord, topics.TopicMatch]]:
    """Each story with its topic decision (summaries are matched as text, not as HTML).

    A story whose articles go under different topics on their own comes out as several records,
    one per topic (topics.split_story): the story with the articles of its topic, then each other
    topic's articles as a story of their own (same story id, the first such article as its lead).
    """
    rules = topics.compile_rules(newsletter.topics)
    topic_of = {s.name: s.topic for s in newsletter.sources}
    matched = []
    for record in records:
        articles = _lead(record)
        texts = [
            topics.StoryText(
                title=a.title,
                summary=plain_text(a.summary_html),
                tags=tuple(t for t in a.tags.split("\n") if t),
                source_topic=topic_of.get(s.name),
            )
            for a, s in articles
        ]
        story = topics.StoryText(
            title=record.story.title,
            summary=texts[0].summary,
            tags=tuple(t for text in texts for t in text.tags),
            source_topic=texts[0].source_topic,
        )
        parts = topics.split_story(story, texts, rules, catch_all=newsletter.newsletter.catch_all_topic)
        for number, part in enumerate(parts):
            chosen = tuple(articles[i] for i in part.articles)
            if number == 0:
                matched.append((queries.StoryRecord(record.story, chosen), part.match))
                continue
            lead, _ = chosen[0]
            apart = Story(  # not stored: the story as this topic's readers see it
                id=record.story.id,
                title=lead.title,
                url=lead.url,
                published_at=lead.published_at,
                first_seen_at=record.story.first_seen_at,
            )
            reason = f"{part.match.reason}; shown apart from the story it was merged into"
            matched.append((queries.StoryRecord(apart, chosen), replace(part.match, reason=reason)))
    return matched


def _lead(record: queries.StoryRecord) -> list[tuple[Article, Source]]:
    """The story's own article first (when it is in the window); the others by publication."""
    return sorted(record.articles, key=lambda pair: pair[0].url != record.story.url)


def _story_items(
    newsletter: Newsletter, matched: Iterable[tuple[queries.StoryRecord, topics.TopicMatch]]
) -> list[compose.StoryItem]:
    # Which date of a story (a cluster of articles) counts: an edition takes a story when one of
    # its articles was published in the window, and shows only those articles (the records hold
    # no others). Not the story's earliest date: a fresh report that clustered with an archive
    # entry of the same event (a new source's backlog, collected the same hour) would be dropped
    # as old and its news lost. Not its latest: the archive entries would then ride along, and an
    # entry older than the window never enters an edition, not even as "also reported by". The
    # story is shown with its own first article if that is in the window, else its earliest one
    # that is, and that article's time.
    source_cfg = {s.name: s for s in newsletter.sources}
    items = []
    for record, match in matched:
        if match.topic is None:
            continue
        articles = _lead(record)
        article = articles[0][0]
        own = article.url == record.story.url  # else the story's first article is outside the window
        seen: set[str] = set()
        refs = []
        for a, s in articles:
            if s.name not in seen:
                seen.add(s.name)
                refs.append(compose.SourceRef(s.name, a.url))
        assert record.story.id is not None
        items.append(
            compose.StoryItem(
                id=record.story.id,
                title=record.story.title if own else article.title,
                url=article.url,
                summary_html=article.summary_html,
                published=article.published_at,
                sources=tuple(refs),
                topic=match.topic,
                reason=match.reason,
                weight=max((source_cfg[s.name].weight for s in refs if s.name in source_cfg), default=1.0),
            )
        )
    return items


@dataclass(frozen=True, slots=True)
class TopicExplanation:
    """Why one waiting story goes (or does not go) under a topic, for `digest topics`."""

    title: str
    sources: tuple[str, ...]
    topic: str | None
    reason: str
    also_matched: tuple[tuple[str, int], ...]
    in_edition: bool  # False: dropped, or over a cap (it waits for the next edition)
    score: float  # compose.score: the rank within its topic


def explain_topics(
    newsletter: Newsletter, *, engine: sa.Engine, edition_date: date, now: datetime, zone: tzinfo
) -> list[TopicExplanation]:
    """Every story waiting for the edition of a date: its topic, why, and whether it makes the cut."""
    with session_scope(engine) as session:
        window = edition_window(newsletter, session=session, edition_date=edition_date, now=now, zone=zone)
        records = queries.unsent_stories(session=session, start=window.start, end=window.end)
        decisions = editor_decisions(newsletter, queries.decisions_for(edition_date, session=session))
    # The same stories and topic decisions as the draft: read and matched once, not twice.
    matched = _match(newsletter, records)
    items = {(i.id, i.topic): i for i in _story_items(newsletter, matched)}  # a split story: one per topic
    draft = _compose(
        newsletter, list(items.values()), edition_date=edition_date, now=now, decisions=decisions
    )
    carried = {(s.id, s.topic) for t in draft.topics for s in t.stories}
    rows = []
    for record, match in matched:
        item = items.get((record.story.id or 0, match.topic or ""))
        rows.append(
            TopicExplanation(
                title=record.story.title,
                sources=tuple(dict.fromkeys(s.name for _, s in _lead(record))),
                topic=match.topic,
                reason=match.reason,
                also_matched=match.also_matched,
                in_edition=(record.story.id, match.topic) in carried,
                score=compose.score(item, now=now) if item else 0.0,
            )
        )
    order = {name: i for i, name in enumerate(newsletter.topic_names)}
    return sorted(rows, key=lambda r: (order.get(r.topic or "", len(order)), not r.in_edition, -r.score))


@dataclass(frozen=True, slots=True)
class Window:
    """The publication times an edition covers, `start` and `end` included (aware UTC)."""

    start: datetime
    end: datetime


def cutoff(edition_date: date, *, built_at: datetime, zone: tzinfo) -> datetime:
    """Where the window of the edition of `edition_date` ends if it is built at `built_at`.

    The moment it is built (nothing published later can be in it), but never after its date ends
    in the newsletter's time zone: a backdated or late edition holds its own day's news, and
    what came after waits for the next edition.
    """
    day_end = datetime.combine(edition_date + timedelta(days=1), time(0), tzinfo=zone)
    return min(built_at, day_end.astimezone(UTC))


def edition_window(
    newsletter: Newsletter, *, session: Session, edition_date: date, now: datetime, zone: tzinfo
) -> Window:
    """The window of the edition of `edition_date`, built `now` (README: "The window of an edition").

    It reaches `lookback_hours` back from the previous edition's cut-off, not from its own: an
    entry collected after that edition was frozen (an hourly collect, a feed that was down) and a
    story over its caps get one more edition. Stories it carried are excluded by EditionStory,
    never by time. The same function serves preview, send, run, the scheduler's catch-up and a
    backdated `--date`, so they agree.
    """
    lookback = timedelta(hours=newsletter.newsletter.lookback_hours)
    end = cutoff(edition_date, built_at=now, zone=zone)
    start = end - lookback
    previous = queries.latest_edition_before(edition_date, session=session)
    if previous is not None:
        start = min(start, cutoff(previous.date, built_at=previous.built_at, zone=zone) - lookback)
    return Window(max(start, end - MAX_CATCH_UP), end)  # after long downtime, older news is stale


def compose_draft(
    newsletter: Newsletter, *, session: Session, edition_date: date, now: datetime, zone: tzinfo
) -> compose.Edition:
    """What the edition of `edition_date` would contain if it were built now, with the editor's
    decisions so far (nothing is saved), without its links to earlier editions
    (`followups.link_edition` adds them)."""
    items = candidates(newsletter, session=session, edition_date=edition_date, now=now, zone=zone)
    decisions = editor_decisions(newsletter, queries.decisions_for(edition_date, session=session))
    return _compose(newsletter, items, edition_date=edition_date, now=now, decisions=decisions)


def candidates(
    newsletter: Newsletter, *, session: Session, edition_date: date, now: datetime, zone: tzinfo
) -> list[compose.StoryItem]:
    """Every story waiting for the edition of a date with its topic and reason, before the
    editor's decisions and the caps (the editor's desk lists them)."""
    window = edition_window(newsletter, session=session, edition_date=edition_date, now=now, zone=zone)
    records = queries.unsent_stories(session=session, start=window.start, end=window.end)
    return _story_items(newsletter, _match(newsletter, records))


def editor_decisions(newsletter: Newsletter, log_: Iterable[EditionDecision]) -> compose.Decisions:
    """The editor's decision log folded into what holds now: a later decision about a story
    overrides an earlier one; a move to a topic no longer configured is ignored."""
    dropped: set[int] = set()
    pinned: list[int] = []
    moved: dict[int, str] = {}
    note = ""
    for d in log_:
        story = d.story_id or 0
        if d.action == "note":
            note = d.note or ""
        elif d.action == "drop":
            dropped.add(story)
            pinned = [p for p in pinned if p != story]
        elif d.action == "pin":
            pinned = [story, *(p for p in pinned if p != story)]  # the latest pin leads
            dropped.discard(story)
        elif d.action == "move" and d.topic in newsletter.topic_names:
            moved[story] = d.topic
            dropped.discard(story)
    return compose.Decisions(frozenset(dropped), tuple(pinned), tuple(moved.items()), note)


def _compose(
    newsletter: Newsletter,
    items: Sequence[compose.StoryItem],
    *,
    edition_date: date,
    now: datetime,
    decisions: compose.Decisions = compose.NO_DECISIONS,
) -> compose.Edition:
    info = newsletter.newsletter
    return compose.compose_edition(
        edition_date=edition_date,
        title=info.title,
        stories=items,
        topic_order=newsletter.topic_names,
        now=now,
        max_per_topic=info.max_stories_per_topic,
        max_total=info.max_stories,
        decisions=decisions,
    )


def edition_or_draft(
    newsletter: Newsletter,
    *,
    session: Session,
    edition_date: date,
    now: datetime,
    zone: tzinfo,
    horizon_days: int = HORIZON_DAYS,
) -> tuple[compose.Edition, Edition | None]:
    """The frozen edition of a date if built, else a draft of it with its follow-ups' earlier
    links (the row is None then)."""
    row = queries.edition_for(edition_date, session=session)
    if row is not None:
        return compose.Edition.from_json(row.content_json), row
    draft = compose_draft(newsletter, session=session, edition_date=edition_date, now=now, zone=zone)
    draft = followups.link_edition(draft, session=session, horizon_days=horizon_days)
    return draft, None


def build_edition(
    newsletter: Newsletter,
    *,
    session: Session,
    edition_date: date,
    now: datetime,
    zone: tzinfo,
    horizon_days: int = HORIZON_DAYS,
) -> tuple[Edition, compose.Edition]:
    """The edition of a date: built and frozen on first call, the same content ever after.

    `zone` is the newsletter's time zone (DIGEST_TIMEZONE), where edition dates are counted;
    `horizon_days` (DIGEST_THREAD_HORIZON_DAYS) how far back its follow-ups look (issue 16).
    """
    row = queries.edition_for(edition_date, session=session)
    if row is not None:
        return row, compose.Edition.from_json(row.content_json)
    edition = compose_draft(newsletter, session=session, edition_date=edition_date, now=now, zone=zone)
    edition = followups.link_edition(edition, session=session, horizon_days=horizon_days)
    row = Edition(
        date=edition_date,
        subject=subject_for(newsletter.newsletter, edition),
        content_json=edition.to_json(),
        story_count=edition.story_count,
        built_at=now,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    stories = {
        s.id: s
        for s in session.exec(
            select(Story).where(col(Story.id).in_([i.id for t in edition.topics for i in t.stories]))
        )
    }
    recorded: set[int] = set()
    for section in edition.topics:
        for position, item in enumerate(section.stories):
            if item.id in recorded:
                continue  # a story split by topic (topics.split_story) is carried once, where first shown
            recorded.add(item.id)
            session.add(
                EditionStory(edition_id=row.id, story_id=item.id, topic=section.name, position=position)
            )
            story = stories[item.id]
            story.topic, story.topic_reason = item.topic, item.reason
            session.add(story)
    followups.store_links(row, edition, session=session)
    log.info("edition built date=%s stories=%d", edition_date, edition.story_count)
    return row, edition
