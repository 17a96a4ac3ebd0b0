"""Run every configured source and store what is new: one result per source, whatever happens."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import httpx
from sqlmodel import Session, select

from digest.config import Newsletter, SourceConfig
from digest.db.models import Article, Source, Story
from digest.errors import SourceError
from digest.sources.fetch import fetch
from digest.sources.model import FeedEntry
from digest.sources.parse import parse_feed
from digest.stories import StoryKey, find_same_story

log = logging.getLogger(__name__)

SourceStatus = Literal["new", "updated", "unchanged", "failed"]
STORY_WINDOW = timedelta(hours=72)  # how far back a new article may join an existing story


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What one source gave in one run."""

    name: str
    status: SourceStatus
    new: int = 0
    updated: int = 0
    error: str | None = None


def sync_sources(newsletter: Newsletter, *, session: Session) -> dict[str, Source]:
    """Make the source table match digest.toml (by name) and return the rows by name."""
    rows = {s.name: s for s in session.exec(select(Source)).all()}
    for cfg in newsletter.sources:
        location = newsletter.source_location(cfg)
        row = rows.get(cfg.name)
        if row is None:
            row = Source(name=cfg.name, url=location)
            session.add(row)
            rows[cfg.name] = row
        elif row.url != location:
            row.url, row.etag, row.last_modified = location, None, None
    session.flush()
    return rows


def collect(
    newsletter: Newsletter,
    *,
    session: Session,
    client: httpx.Client,
    now: datetime,
    on_result: Callable[[SourceResult], None] | None = None,
) -> list[SourceResult]:
    """Fetch, parse and store every source; a failing source is recorded and the rest go on."""
    rows = sync_sources(newsletter, session=session)
    results = []
    for cfg in newsletter.sources:
        result = collect_one(cfg, rows[cfg.name], session=session, client=client, now=now)
        log.info("collected source=%r status=%s new=%d", cfg.name, result.status, result.new)
        results.append(result)
        if on_result:
            on_result(result)
    return results


def collect_one(
    cfg: SourceConfig, row: Source, *, session: Session, client: httpx.Client, now: datetime
) -> SourceResult:
    """Fetch and store one source, updating its health; SourceError becomes a failed result."""
    row.last_fetched_at = now
    try:
        fetched = fetch(cfg.name, row.url, client=client, etag=row.etag, last_modified=row.last_modified)
        if fetched.not_modified:
            result = SourceResult(cfg.name, "unchanged")
        else:
            assert fetched.body is not None
            feed = parse_feed(cfg.name, fetched.body, url=fetched.url, headers=fetched.headers)
            new, updated = store_entries(feed.entries, source=row, session=session, now=now)
            status: SourceStatus = "new" if new else "updated" if updated else "unchanged"
            result = SourceResult(cfg.name, status, new=new, updated=updated)
        row.etag, row.last_modified = fetched.etag, fetched.last_modified
        row.last_success_at, row.failure_streak = now, 0
    except SourceError as e:
        log.warning("source failed source=%r error=%s", cfg.name, e)
        row.last_error, row.last_error_at = str(e), now
        row.failure_streak += 1
        result = SourceResult(cfg.name, "failed", error=str(e))
    session.add(row)
    session.flush()
    return result


def store_entries(
    entries: tuple[FeedEntry, ...], *, source: Source, session: Session, now: datetime
) -> tuple[int, int]:
    """Insert new articles (one per canonical URL) and attach each to a story; count new/updated."""
    assert source.id is not None
    urls = [e.url for e in entries]
    existing = {a.url: a for a in session.exec(select(Article).where(Article.url.in_(urls))).all()}  # type: ignore[attr-defined]
    recent = [
        StoryKey(s.id, s.title)
        for s in session.exec(select(Story).where(Story.first_seen_at >= now - STORY_WINDOW)).all()
        if s.id is not None
    ]
    new = updated = 0
    for entry in entries:
        # A date in the future is a feed's mistake (or a trick to stay on top): clamp it.
        published = min(entry.published or now, now)
        article = existing.get(entry.url)
        if article is not None:
            if (article.title, article.summary_html) != (entry.title, entry.summary_html):
                article.title, article.summary_html = entry.title, entry.summary_html
                article.updated_at = now
                session.add(article)
                updated += 1
            continue
        story_id = find_same_story(entry.title, recent)
        if story_id is None:
            story = Story(title=entry.title, url=entry.url, published_at=published, first_seen_at=now)
            session.add(story)
            session.flush()
            assert story.id is not None
            story_id = story.id
            recent.append(StoryKey(story_id, entry.title))
        article = Article(
            source_id=source.id,
            story_id=story_id,
            guid=entry.guid,
            url=entry.url,
            title=entry.title,
            summary_html=entry.summary_html,
            author=entry.author,
            tags="\n".join(entry.tags),
            published_at=published,
            first_seen_at=now,
        )
        session.add(article)
        existing[entry.url] = article
        new += 1
    session.flush()
    return new, updated
