"""Run every configured source and store what is new: one result per source, whatever happens.

Three steps: fetch every source at once (fetch.py), parse each body as it arrives, then store
everything in one transaction, grouping articles into stories (stories.py). When there are many
sources, parsing and the matrix work of clustering run in worker processes (workers.py), so the
other cores work while the network is still being waited for.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, insert
from sqlalchemy import select as sa_select  # sqlmodel's select takes at most four columns
from sqlmodel import Session, col, select

from digest.db.bulk import insert_rows
from digest.db.models import Article, Source, Story
from digest.errors import SourceError
from digest.newsletter import Newsletter
from digest.sources.clean import strip_controls
from digest.sources.fetch import FetchOptions, FetchRequest, fetch_all, make_client
from digest.sources.model import FeedEntry, Fetched, ParsedFeed
from digest.sources.network import run_with_lookups
from digest.sources.workers import Clusterer, Workers, summary_text
from digest.stories import KnownArticle, StoryDoc, cluster
from digest.stories import terms as story_terms

log = logging.getLogger(__name__)

# "malformed": the feed was not well-formed; what could be recovered was stored, and the run
# counts as a failure in the source's health (issue 11).
SourceStatus = Literal["new", "updated", "unchanged", "malformed", "failed"]
ERROR_MAX = 1_000  # characters of an error kept in the source's health
STORY_WINDOW = timedelta(hours=72)  # how far back a new article may join an existing story
PARSE_IN_PROCESSES_FROM = 8  # sources; below this, starting worker processes costs more than it saves
CHUNK = 500  # values per IN (...) list: under every backend's bound-parameter limit


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What one source gave in one run."""

    name: str
    status: SourceStatus
    new: int = 0
    updated: int = 0
    entries: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What fetching and parsing one source gave: its new validators and a feed (None when it
    answered 304 Not Modified), or the error that stopped it."""

    etag: str | None = None
    last_modified: str | None = None
    feed: ParsedFeed | None = None
    error: SourceError | None = None

    @classmethod
    def of(cls, fetched: Fetched, feed: ParsedFeed | None = None) -> "Outcome":
        """A successful fetch (and its parsed feed, unless the source had not changed)."""
        return cls(etag=fetched.etag, last_modified=fetched.last_modified, feed=feed)


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
    now: datetime,
    options: FetchOptions | None = None,
    parse_workers: int | None = None,
    on_fetched: Callable[[str, str | None], None] | None = None,
) -> list[SourceResult]:
    """Fetch, parse and store every source; a failing source is recorded and the rest go on.

    `on_fetched(name, error)` is called as each source's fetch ends (for a progress bar); the worker
    processes, if any, are started before its first call, so it may start threads.
    `parse_workers`: processes that parse feeds; None picks by the number of sources and CPUs.
    """
    options = options or FetchOptions()
    rows = sync_sources(newsletter, session=session)
    requests = [
        FetchRequest(cfg.name, rows[cfg.name].url, rows[cfg.name].etag, rows[cfg.name].last_modified)
        for cfg in newsletter.sources
    ]
    if parse_workers is None:
        cpus = os.cpu_count() or 1
        parse_workers = min(cpus, 4) if len(requests) >= PARSE_IN_PROCESSES_FROM and cpus > 1 else 0
    workers = Workers(parse_workers)
    started = time.perf_counter()
    try:
        workers.start()
        outcomes = run_with_lookups(_fetch_and_parse(requests, options, workers, on_fetched))
        fetched_at = time.perf_counter()
        results = store_outcomes(
            requests, outcomes, rows=rows, session=session, now=now, clusterer=workers.cluster
        )
    finally:
        workers.close()
    log.info(
        "collect sources=%d fetch_and_parse=%.2fs store=%.2fs workers=%d started_by=%s",
        len(requests),
        fetched_at - started,
        time.perf_counter() - fetched_at,
        parse_workers,
        workers.method,
    )
    return results


async def _fetch_and_parse(
    requests: Sequence[FetchRequest],
    options: FetchOptions,
    parser: Workers,
    on_fetched: Callable[[str, str | None], None] | None,
) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    parsing: dict[str, asyncio.Future[ParsedFeed]] = {}

    def done(request: FetchRequest, result: Fetched | SourceError) -> None:
        if isinstance(result, Fetched) and result.body is not None:
            parsing[request.name] = parser.parse(loop, request.name, result)
        if on_fetched is not None:
            on_fetched(request.name, str(result) if isinstance(result, SourceError) else None)

    async with make_client(options) as client:
        fetched = await fetch_all(requests, client=client, options=options, on_done=done)
    outcomes = []
    for request, result in zip(requests, fetched, strict=True):
        if isinstance(result, SourceError):
            outcomes.append(Outcome(error=result))
        elif result.body is None:
            outcomes.append(Outcome.of(result))
        else:
            try:
                outcomes.append(Outcome.of(result, await parsing[request.name]))
            except SourceError as e:
                outcomes.append(Outcome(error=e))
    return outcomes


def store_outcomes(
    requests: Sequence[FetchRequest],
    outcomes: Sequence[Outcome],
    *,
    rows: dict[str, Source],
    session: Session,
    now: datetime,
    clusterer: Clusterer = cluster,
) -> list[SourceResult]:
    """Record each source's health and store the new entries of those that succeeded."""
    feeds: list[tuple[Source, ParsedFeed]] = []
    for request, outcome in zip(requests, outcomes, strict=True):
        row = rows[request.name]
        row.last_fetched_at = now
        problem = _problem(outcome)
        if problem is not None:
            log.warning("source failed source=%r error=%s", request.name, problem)
            row.last_error, row.last_error_at = problem, now
            row.failure_streak += 1
            row.last_outcome = "failed" if outcome.error is not None else "malformed"
        else:
            row.etag, row.last_modified = _validator(outcome.etag), _validator(outcome.last_modified)
            row.last_success_at, row.failure_streak, row.last_outcome = now, 0, "ok"
        # A malformed feed's recovered entries are stored too; its validators are not, so the next
        # run fetches it whole and reports it again until it is fixed.
        if outcome.feed is not None:
            feeds.append((row, outcome.feed))
        session.add(row)
    session.flush()
    counts = store_entries(feeds, session=session, now=now, clusterer=clusterer)
    results = []
    for request, outcome in zip(requests, outcomes, strict=True):
        problem = _problem(outcome)
        if outcome.error is not None:
            result = SourceResult(request.name, "failed", error=problem)
        else:
            new, updated = counts.get(request.name, (0, 0))
            status: SourceStatus = "new" if new else "updated" if updated else "unchanged"
            entries = len(outcome.feed.entries) if outcome.feed else 0
            result = SourceResult(
                request.name,
                "malformed" if problem else status,
                new=new,
                updated=updated,
                entries=entries,
                error=problem,
            )
        log.info("collected source=%r status=%s new=%d", result.name, result.status, result.new)
        results.append(result)
    return results


def _problem(outcome: Outcome) -> str | None:
    """What went wrong with a source this run, as its health records it (None: nothing)."""
    if outcome.error is not None:
        text = str(outcome.error)
    elif outcome.feed is not None and outcome.feed.problem:
        text = f"malformed feed: {outcome.feed.problem}"
    else:
        return None
    # The message may quote a server (a reason phrase, a parser's complaint): stored, so bounded.
    return strip_controls(text)[:ERROR_MAX]


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified worth sending back: short, printable (else none is kept)."""
    return value if value and len(value) <= 512 and value.isprintable() else None


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


def store_entries(
    feeds: Sequence[tuple[Source, ParsedFeed]],
    *,
    session: Session,
    now: datetime,
    clusterer: Clusterer = cluster,
) -> dict[str, tuple[int, int]]:
    """Insert new articles (one per canonical URL), group them into stories; (new, updated) per source."""
    urls = list({e.url for _, feed in feeds for e in feed.entries})
    existing: dict[str, Article] = {}
    for part in _chunks(urls):
        existing.update((a.url, a) for a in session.exec(select(Article).where(col(Article.url).in_(part))))
    by_guid = _articles_by_guid(feeds, existing, session=session)
    counts: dict[str, list[int]] = {}
    fresh: list[tuple[Source, FeedEntry]] = []
    queued: set[str] = set()
    for source, feed in feeds:
        assert source.id is not None
        tally = counts.setdefault(source.name, [0, 0])
        for entry in feed.entries:
            article = existing.get(entry.url) or (
                by_guid.get((source.id, entry.guid)) if entry.guid else None
            )
            if article is None:
                if entry.url not in queued:  # the same URL twice in this run is stored once
                    queued.add(entry.url)
                    fresh.append((source, entry))
                continue
            if article.source_id != source.id:
                continue  # another feed's copy of an article we have: the first source owns it
            if (article.title, article.summary_html) != (entry.title, entry.summary_html):
                article.title, article.summary_html = entry.title, entry.summary_html
                doc = _doc(entry.title, entry.summary_html, source.name, entry.terms)
                article.story_terms = _terms_of(doc)
                article.updated_at = now
                session.add(article)
                tally[1] += 1
    _store_new(fresh, session=session, now=now, clusterer=clusterer)
    for source, _ in fresh:
        counts[source.name][0] += 1
    session.flush()
    return {name: (c[0], c[1]) for name, c in counts.items()}


def _articles_by_guid(
    feeds: Sequence[tuple[Source, ParsedFeed]], existing: dict[str, Article], *, session: Session
) -> dict[tuple[int, str], Article]:
    """Stored articles of these sources whose feed ID matches an entry with an unknown URL.

    A feed that moves its articles to new URLs but keeps their IDs must not send them again.
    """
    wanted = {(s.id, e.guid) for s, feed in feeds for e in feed.entries if e.guid and e.url not in existing}
    found: dict[tuple[int, str], Article] = {}
    for part in _chunks(sorted({guid for _, guid in wanted if guid})):  # a few queries, not one per source
        for article in session.exec(select(Article).where(col(Article.guid).in_(part))):
            key = (article.source_id, article.guid or "")
            if key in wanted:
                found[key] = article
    return found


def _doc(title: str, summary_html: str, source: str, terms: bytes | None = None) -> StoryDoc:
    # The text is read only to compute terms: not extracted again when a parse worker did it.
    text = summary_text(summary_html) if terms is None else ""
    return StoryDoc(title=title, text=text, source=source, terms=terms)


def _terms_of(doc: StoryDoc) -> bytes:
    """The doc's story-matching terms: computed ahead by a parse worker, or here."""
    return doc.terms if doc.terms is not None else story_terms(doc)


def _store_new(
    fresh: Sequence[tuple[Source, FeedEntry]], *, session: Session, now: datetime, clusterer: Clusterer
) -> None:
    if not fresh:
        return
    known = [
        KnownArticle(story_id, _doc(title, summary, source, terms))
        for story_id, title, terms, summary, source in session.execute(
            sa_select(
                col(Article.story_id),
                col(Article.title),
                col(Article.story_terms),
                # only an article stored before terms were kept (migration 0006) needs its summary
                case((col(Article.story_terms).is_(None), col(Article.summary_html)), else_=""),
                col(Source.name),
            )
            .join(Story, col(Story.id) == col(Article.story_id))
            .join(Source, col(Source.id) == col(Article.source_id))
            .where(col(Story.first_seen_at) >= now - STORY_WINDOW)
            .order_by(col(Article.id))
        )
        if story_id is not None
    ]
    docs = [_doc(e.title, e.summary_html, s.name, e.terms) for s, e in fresh]
    docs = [StoryDoc(d.title, d.text, d.source, _terms_of(d)) for d in docs]
    keys = clusterer(docs, known)
    # A date in the future is a feed's mistake (or a trick to stay on top): clamp it to now.
    published = [min(e.published or now, now) for _, e in fresh]
    first_of: dict[int, int] = {}  # new story key -> index of its first article
    for index, key in enumerate(keys):
        if key < 0:
            first_of.setdefault(key, index)
    story_ids: dict[int, int] = {}
    if first_of:
        # Bulk INSERT ... RETURNING (thousands of rows in one statement on SQLite and PostgreSQL);
        # building ORM objects one by one costs ~100 us each.
        rows = [
            {
                "title": fresh[i][1].title,
                "url": fresh[i][1].url,
                "published_at": published[i],
                "first_seen_at": now,
            }
            for i in first_of.values()
        ]
        stories = Story.__table__  # type: ignore[attr-defined]
        returned = (
            session.connection()
            .execute(insert(stories).returning(stories.c.id, sort_by_parameter_order=True), rows)
            .scalars()
        )
        story_ids = dict(zip(first_of, returned, strict=True))
    insert_rows(  # one prepared INSERT, each column's conversion looked up once (db/bulk.py)
        session.connection(),
        Article.__table__,  # type: ignore[attr-defined]
        [
            {
                "source_id": source.id,
                "story_id": story_ids[key] if key < 0 else key,
                "guid": entry.guid,
                "url": entry.url,
                "title": entry.title,
                "summary_html": entry.summary_html,
                "author": entry.author,
                "tags": "\n".join(entry.tags),
                "published_at": when,
                "first_seen_at": now,
                "story_terms": doc.terms,
            }
            for (source, entry), doc, key, when in zip(fresh, docs, keys, published, strict=True)
        ],
    )
    log.info("stored articles=%d new_stories=%d", len(fresh), len(story_ids))
