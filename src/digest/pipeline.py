"""The daily job, stage by stage: sources -> topics -> compose -> render -> deliver.

This is the only module that knows the order of the stages; the CLI, the scheduler and the web
app call these functions and nothing deeper.
"""

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import jinja2
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import compose, render, topics
from digest.config import Newsletter, Settings, signing_keys
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import (
    Article,
    DeliveryStatus,
    EditionStory,
    Source,
    Story,
    Subscriber,
    SubscriberStatus,
)
from digest.db.models import Edition as EditionRow
from digest.deliver import ledger
from digest.deliver.base import MessageContent, OutgoingMessage, SendResult, Transport
from digest.deliver.lock import send_lock
from digest.deliver.message import new_message_id, to_bytes, unsubscribe_mailto
from digest.deliver.sender import Call, RateLimiter, batches, dispatch
from digest.deliver.transports import make_transport
from digest.sources.clean import plain_text
from digest.sources.collect import SourceResult
from digest.sources.collect import collect as collect_sources
from digest.sources.fetch import FetchOptions
from digest.subscribers import get_subscriber, record_event, resume_paused, topics_of
from digest.tokens import LinkToken, TokenSigner

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_CATCH_UP = timedelta(days=7)  # after longer downtime, older news is stale: let it go
BATCH_SIZE = 500


def utc_now() -> datetime:
    """The real clock (entry points pass it in; tests pass a fixed one)."""
    return datetime.now(UTC)


def today(settings: Settings, now: datetime) -> date:
    """The edition date for `now` in the newsletter's time zone."""
    return now.astimezone(settings.zone).date()


# --- sources ------------------------------------------------------------------------------


def collect(
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    now: datetime,
    settings: Settings | None = None,
    on_fetched: Callable[[str, str | None], None] | None = None,
    parse_workers: int | None = None,
) -> list[SourceResult]:
    """Fetch every source and store new articles as stories (fetch options from `settings`)."""
    options = FetchOptions.from_settings(settings) if settings is not None else FetchOptions()
    with session_scope(engine) as session:
        return collect_sources(
            newsletter,
            session=session,
            now=now,
            options=options,
            on_fetched=on_fetched,
            parse_workers=parse_workers,
        )


# --- topics + compose ---------------------------------------------------------------------


def _match(
    newsletter: Newsletter, records: Iterable[queries.StoryRecord]
) -> list[tuple[queries.StoryRecord, topics.TopicMatch]]:
    """Each story with its topic decision (summaries are matched as text, not as HTML)."""
    rules = topics.compile_rules(newsletter.topics)
    source_cfg = {s.name: s for s in newsletter.sources}
    matched = []
    for record in records:
        article, source = _lead(record)[0]
        cfg = source_cfg.get(source.name)
        tags: tuple[str, ...] = tuple(t for a, _ in record.articles for t in a.tags.split("\n") if t)
        match = topics.assign_topic(
            topics.StoryText(
                title=record.story.title,
                summary=plain_text(article.summary_html),
                tags=tags,
                source_topic=cfg.topic if cfg else None,
            ),
            rules,
            catch_all=newsletter.newsletter.catch_all_topic,
        )
        matched.append((record, match))
    return matched


def _lead(record: queries.StoryRecord) -> list[tuple[Article, Source]]:
    """The story's own article first; the other outlets follow in order of publication."""
    return sorted(record.articles, key=lambda pair: pair[0].url != record.story.url)


def _story_items(newsletter: Newsletter, records: Iterable[queries.StoryRecord]) -> list[compose.StoryItem]:
    source_cfg = {s.name: s for s in newsletter.sources}
    items = []
    for record, match in _match(newsletter, records):
        if match.topic is None:
            continue
        articles = _lead(record)
        article = articles[0][0]
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
                title=record.story.title,
                url=record.story.url,
                summary_html=article.summary_html,
                published=record.story.published_at,
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
    newsletter: Newsletter, *, engine: sa.Engine, edition_date: date, now: datetime
) -> list[TopicExplanation]:
    """Every story waiting for the edition of a date: its topic, why, and whether it makes the cut."""
    with session_scope(engine) as session:
        since = _window_start(newsletter, session, edition_date, now)
        records = queries.unsent_stories(session=session, since=since)
        draft = compose_draft(newsletter, session=session, edition_date=edition_date, now=now)
    carried = {s.id for t in draft.topics for s in t.stories}
    items = {i.id: i for i in _story_items(newsletter, records)}
    rows = []
    for record, match in _match(newsletter, records):
        item = items.get(record.story.id or 0)
        rows.append(
            TopicExplanation(
                title=record.story.title,
                sources=tuple(dict.fromkeys(s.name for _, s in _lead(record))),
                topic=match.topic,
                reason=match.reason,
                also_matched=match.also_matched,
                in_edition=record.story.id in carried,
                score=compose.score(item, now=now) if item else 0.0,
            )
        )
    order = {name: i for i, name in enumerate(newsletter.topic_names)}
    return sorted(rows, key=lambda r: (order.get(r.topic or "", len(order)), not r.in_edition, -r.score))


def _window_start(newsletter: Newsletter, session: Session, edition_date: date, now: datetime) -> datetime:
    """First-seen time from which uncarried stories are candidates for an edition built `now`.

    Not the previous edition's build time: a collect that started before that build and committed
    after it has stories first seen earlier that the previous edition never saw, and stories over
    the previous edition's caps wait for this one. So the window reaches back as far as the previous
    edition's own did; stories it carried are excluded by EditionStory, never by time.
    """
    lookback = timedelta(hours=newsletter.newsletter.lookback_hours)
    previous = queries.latest_edition_before(edition_date, session=session)
    start = min(previous.built_at - lookback, now - lookback) if previous else now - lookback
    return max(start, now - MAX_CATCH_UP)  # after long downtime, older news is stale: let it go


def compose_draft(
    newsletter: Newsletter, *, session: Session, edition_date: date, now: datetime
) -> compose.Edition:
    """What the edition of `edition_date` would contain if it were built now (nothing is saved)."""
    records = queries.unsent_stories(
        session=session, since=_window_start(newsletter, session, edition_date, now)
    )
    info = newsletter.newsletter
    return compose.compose_edition(
        edition_date=edition_date,
        title=info.title,
        stories=_story_items(newsletter, records),
        topic_order=newsletter.topic_names,
        now=now,
        max_per_topic=info.max_stories_per_topic,
        max_total=info.max_stories,
    )


def edition_or_draft(
    newsletter: Newsletter, *, session: Session, edition_date: date, now: datetime
) -> tuple[compose.Edition, EditionRow | None]:
    """The frozen edition of a date if built, else a draft of it (the row is None then)."""
    row = queries.edition_for(edition_date, session=session)
    if row is not None:
        return compose.Edition.from_json(row.content_json), row
    return compose_draft(newsletter, session=session, edition_date=edition_date, now=now), None


def build_edition(
    newsletter: Newsletter, *, session: Session, edition_date: date, now: datetime
) -> tuple[EditionRow, compose.Edition]:
    """The edition of a date: built and frozen on first call, the same content ever after."""
    row = queries.edition_for(edition_date, session=session)
    if row is not None:
        return row, compose.Edition.from_json(row.content_json)
    edition = compose_draft(newsletter, session=session, edition_date=edition_date, now=now)
    row = EditionRow(
        date=edition_date,
        subject=render.subject_for(newsletter.newsletter, edition),
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
    for section in edition.topics:
        for position, item in enumerate(section.stories):
            session.add(
                EditionStory(edition_id=row.id, story_id=item.id, topic=section.name, position=position)
            )
            story = stories[item.id]
            story.topic, story.topic_reason = item.topic, item.reason
            session.add(story)
    log.info("edition built date=%s stories=%d", edition_date, edition.story_count)
    return row, edition


# --- render -------------------------------------------------------------------------------


class Reader(Protocol):
    """Who a message is for: a Subscriber row, or a ledger.PendingRow in the send loop."""

    @property
    def id(self) -> int | None:
        """The subscriber's id."""
        ...

    @property
    def email(self) -> str:
        """The address."""
        ...

    @property
    def name(self) -> str:
        """The name for the greeting ("" for none)."""
        ...


@dataclass
class Renderer:
    """Renders each distinct (edition, topic set) once and fills it per reader."""

    settings: Settings
    newsletter: Newsletter
    env: jinja2.Environment
    signer: TokenSigner
    _cache: dict[tuple[date, frozenset[str]], tuple[compose.Edition, render.RenderedDigest]] = field(
        default_factory=dict
    )
    _contents: dict[int, tuple[render.RenderedDigest, MessageContent]] = field(default_factory=dict)

    def digest_for(
        self, edition: compose.Edition, chosen: frozenset[str]
    ) -> tuple[compose.Edition, render.RenderedDigest]:
        """The subscriber's copy of the edition, rendered (cached per topic set)."""
        copy = compose.for_subscriber(edition, chosen)
        key = (edition.date, copy.topic_names)
        hit = self._cache.get(key)
        if hit is None:
            rendered = render.render_digest(
                self.env,
                self.newsletter.newsletter,
                copy,
                archive_url=self.archive_url(edition.date),
            )
            render.check_slots(rendered)
            hit = self._cache[key] = (copy, rendered)
        return hit

    def prepare(self, edition: compose.Edition, topic_sets: Iterable[frozenset[str]]) -> int:
        """Render the full edition and every given topic set's copy now; the number of copies."""
        for chosen in [frozenset(), *topic_sets]:
            self.digest_for(edition, chosen)
        return sum(1 for day, _ in self._cache if day == edition.date)

    def archive_url(self, day: date) -> str:
        """Public web copy of an edition."""
        return f"{self.settings.base_url}/archive/{day.isoformat()}"

    def links(self, subscriber_id: int, edition_id: int | None) -> tuple[str, str]:
        """(unsubscribe URL, preferences URL) for one reader and edition."""
        token = self.signer.sign(LinkToken(subscriber_id, edition_id))
        base = self.settings.base_url
        return f"{base}/unsubscribe/{token}", f"{base}/preferences/{token}"

    def content_for(self, rendered: render.RenderedDigest) -> MessageContent:
        """The shared part of every message of one rendered digest (made once, reused)."""
        hit = self._contents.get(id(rendered))
        if hit is None or hit[0] is not rendered:
            info = self.newsletter.newsletter
            content = MessageContent(
                key=secrets.token_hex(8),
                from_email=info.from_email,
                from_name=info.from_name or info.title,
                subject=rendered.subject,
                list_id=f"{info.title} <{_list_id(info.title, info.sender_domain)}>",
                html=rendered.html,
                text=rendered.text,
                reply_to=info.reply_to,
            )
            hit = self._contents[id(rendered)] = (rendered, content)
        return hit[1]

    def message(
        self,
        rendered: render.RenderedDigest,
        *,
        subscriber: Reader,
        delivery_id: int,
        edition_id: int,
    ) -> OutgoingMessage:
        """One reader's message: shared content, the reader's slot values and unsubscribe links."""
        assert subscriber.id is not None
        unsubscribe_url, preferences_url = self.links(subscriber.id, edition_id)
        mailbox = self.settings.unsubscribe_mailto
        return OutgoingMessage(
            delivery_id=delivery_id,
            subscriber_id=subscriber.id,
            edition_id=edition_id,
            to_email=subscriber.email,
            to_name=subscriber.name,
            content=self.content_for(rendered),
            values=render.personal_values(
                email=subscriber.email,
                name=subscriber.name,
                unsubscribe_url=unsubscribe_url,
                preferences_url=preferences_url,
            ),
            message_id=new_message_id(self.newsletter.newsletter.sender_domain),
            unsubscribe_url=unsubscribe_url,
            unsubscribe_mailto=(
                unsubscribe_mailto(mailbox, unsubscribe_url.rsplit("/", 1)[1]) if mailbox else None
            ),
        )


def _list_id(title: str, domain: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-") or "digest"
    return f"{slug}.{domain}"


def make_renderer(settings: Settings, newsletter: Newsletter) -> Renderer:
    """A renderer with the configured templates and link signer."""
    env = render.make_environment(settings.templates_dir)
    if settings.templates_dir is not None:
        # mjml-python drops unknown tags and attributes silently: say so for the user's templates.
        for problem in render.check_environment(env):
            log.warning("template check: %s", problem)
    return Renderer(
        settings=settings,
        newsletter=newsletter,
        env=env,
        signer=TokenSigner(signing_keys(settings)),
    )


def active_topic_sets(*, session: Session) -> set[frozenset[str]]:
    """The distinct topic choices of active subscribers (one rendered copy each)."""
    rows = session.exec(
        select(Subscriber.topics).where(Subscriber.status == SubscriberStatus.ACTIVE).distinct()
    )
    return {frozenset(t for t in topics.split("\n") if t) for topics in rows}


# --- deliver ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendReport:
    """What one `send` did for one edition."""

    edition_date: date
    story_count: int
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    unknown: int = 0
    failures: tuple[str, ...] = ()

    @property
    def needs_attention(self) -> bool:
        """True when something failed or is unknown (the exit status tells cron)."""
        return bool(self.failed or self.retry or self.unknown)


def send_edition(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    transport: Transport,
    edition_date: date,
    clock: Clock,
    renderer: Renderer | None = None,
    resend_unknown: bool = False,
    batch_size: int = BATCH_SIZE,
    lanes: Sequence[Transport] = (),
    limiter: RateLimiter | None = None,
    audience: sa.ColumnElement[bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SendReport:
    """Build (or load) the edition and send it to every active subscriber who has not had it.

    Exactly once: one ledger row per (edition, subscriber); a row is marked `sending` (committed)
    just before its transport call and gets the answer just after, so a crash leaves only the
    in-flight call's rows unknown. `lanes` are parallel connections (default: `transport` and
    as many more as DIGEST_SEND_CONCURRENCY asks). Raises TransportUnavailable, after recording
    what was done, when the server is unreachable.

    `audience` narrows who is sent to now (the scheduler sends one time zone at a time);
    `should_stop` is asked before every transport call (SIGTERM: finish the call in hand, stop).
    """
    renderer = renderer or make_renderer(settings, newsletter)
    lanes = list(lanes) or [transport] + [
        make_transport(settings, clock=clock) for _ in range(settings.send_concurrency - 1)
    ]
    limiter = limiter or RateLimiter(settings.send_rate)
    with send_lock(engine):
        now = clock()
        with session_scope(engine) as session:
            row, edition = build_edition(newsletter, session=session, edition_date=edition_date, now=now)
            assert row.id is not None
            edition_id = row.id
            resume_paused(session=session, now=now)
            interrupted = ledger.mark_interrupted(session=session, now=now)
            if interrupted:
                log.warning(
                    "%d message(s) were in flight during a crash: unknown "
                    "(see digest stats; digest send --resend-unknown --date D sends them)",
                    interrupted,
                )
            if resend_unknown:
                ledger.requeue_unknown(edition_id, session=session, now=now)
            ledger.ensure_deliveries(edition_id, session=session, now=now, audience=audience)
        # Render every distinct copy before the first claim: a template error stops the send with
        # nothing claimed (issue 4), whichever topic set would have hit it.
        with session_scope(engine) as session:
            renderer.prepare(edition, active_topic_sets(session=session))
        journal = _Journal(writer=ledger.LedgerWriter(engine), clock=clock)
        messages = _messages(
            engine,
            renderer,
            edition,
            edition_id=edition_id,
            clock=clock,
            batch_size=batch_size,
            journal=journal,
            audience=audience,
            should_stop=should_stop,
        )
        try:
            dispatch(batches(messages, lanes[0].max_batch), lanes=lanes, journal=journal, limiter=limiter)
        finally:
            journal.writer.close()
            for lane in lanes:
                lane.close()
        with session_scope(engine) as session:
            counts = ledger.counts(edition_id, session=session)
            edition_row = session.get(EditionRow, edition_id)
            if edition_row is not None and edition_row.sent_at is None:
                edition_row.sent_at = clock()
                session.add(edition_row)
    return SendReport(
        edition_date=edition_date,
        story_count=edition.story_count,
        sent=journal.sent,
        failed=journal.failed,
        retry=journal.retry,
        skipped=journal.skipped,
        unknown=counts[DeliveryStatus.UNKNOWN],
        failures=tuple(journal.failures),
    )


def _messages(
    engine: sa.Engine,
    renderer: Renderer,
    edition: compose.Edition,
    *,
    edition_id: int,
    clock: Clock,
    batch_size: int,
    journal: "_Journal",
    audience: sa.ColumnElement[bool] | None,
    should_stop: Callable[[], bool] | None,
) -> Iterator[OutgoingMessage]:
    """Every message still to send, reading the ledger in id order; skips are recorded here.

    Stops early when `should_stop` says so: the message in hand is finished and recorded first.
    """
    after_id = 0
    topic_sets: dict[str, frozenset[str]] = {}
    while True:
        with session_scope(engine) as session:
            rows = ledger.sendable_rows(
                edition_id, session=session, after_id=after_id, size=batch_size, audience=audience
            )
            skipped: dict[str, list[int]] = {}
            messages = []
            for row in rows:
                after_id = row.delivery_id
                if row.status != SubscriberStatus.ACTIVE:
                    # Unsubscribed, bounced, complained or paused since the edition was built.
                    skipped.setdefault(f"subscriber is {row.status}", []).append(row.delivery_id)
                    continue
                chosen = topic_sets.get(row.topics)
                if chosen is None:
                    chosen = topic_sets[row.topics] = frozenset(t for t in row.topics.split("\n") if t)
                copy, rendered = renderer.digest_for(edition, chosen)
                if copy.story_count == 0:
                    skipped.setdefault("no new stories in their topics", []).append(row.delivery_id)
                    continue
                messages.append(
                    renderer.message(
                        rendered, subscriber=row, delivery_id=row.delivery_id, edition_id=edition_id
                    )
                )
            now = clock()
            for reason, ids in skipped.items():
                ledger.skip(ids, reason, session=session, now=now)
                journal.skipped += len(ids)
        if not rows:
            return
        for message in messages:
            if should_stop is not None and should_stop():
                return
            yield message


@dataclass
class _Journal:
    """Writes the ledger around each transport call (see deliver/sender.py) and keeps the tally."""

    writer: ledger.LedgerWriter
    clock: Clock
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def step(self, done: Sequence[Call], claim: Sequence[OutgoingMessage]) -> None:
        """Record finished calls and mark the next call `sending`, in one transaction."""
        if not done and not claim:
            return
        now = self.clock()
        bounced = []
        for batch, results in done:
            by_id = {m.delivery_id: m for m in batch}
            for result in results:
                if result.ok:
                    self.sent += 1
                    continue
                message = by_id[result.delivery_id]
                self.failures.append(f"{message.to_email}: {result.error}")
                if result.permanent:
                    self.failed += 1
                else:
                    self.retry += 1
                if result.bounce:
                    bounced.append((message, result))
        results = [r for _, call_results in done for r in call_results]
        claim_ids = [m.delivery_id for m in claim]
        if not bounced:
            self.writer.write(results, claim_ids, now=now)
            return
        # Rare: the bounced readers are suppressed in the same transaction as the answers.
        with self.writer.transaction() as conn:
            self.writer.record(results, conn=conn, now=now)
            with Session(bind=conn) as session:
                for message, result in bounced:
                    _suppress_bounced(session, message, result, now=now)
                session.flush()
            self.writer.mark_sending(claim_ids, conn=conn, now=now)


def _suppress_bounced(
    session: Session, message: OutgoingMessage, result: SendResult, *, now: datetime
) -> None:
    fresh = session.get(Subscriber, message.subscriber_id)
    if fresh is not None and fresh.status == SubscriberStatus.ACTIVE:
        fresh.status, fresh.updated_at = SubscriberStatus.BOUNCED, now
        session.add(fresh)
        record_event(
            session, fresh, "bounce", "bounce", now=now, edition_id=message.edition_id, detail=result.error
        )


# --- preview ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    """Exactly what one reader would receive for a date, not sent."""

    edition: compose.Edition
    rendered: render.RenderedDigest
    message: OutgoingMessage
    built: bool  # False: a draft, the edition is not frozen yet

    def eml(self, now: datetime) -> bytes:
        """The message as the outbox would hold it."""
        return to_bytes(self.message, now=now)


SAMPLE_SUBSCRIBER = Subscriber(
    id=0,
    email="reader@example.com",
    name="Sample Reader",
    created_at=datetime(2000, 1, 1, tzinfo=UTC),
    updated_at=datetime(2000, 1, 1, tzinfo=UTC),
)


def preview(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    now: datetime,
    subscriber_email: str | None = None,
    renderer: Renderer | None = None,
) -> Preview:
    """Render a date's edition for one subscriber (or a sample reader) without sending."""
    renderer = renderer or make_renderer(settings, newsletter)
    with session_scope(engine) as session:
        edition, row = edition_or_draft(newsletter, session=session, edition_date=edition_date, now=now)
        edition_id = row.id if row is not None else None
        subscriber = (
            get_subscriber(subscriber_email, session=session) if subscriber_email else SAMPLE_SUBSCRIBER
        )
    copy, rendered = renderer.digest_for(edition, topics_of(subscriber))
    message = renderer.message(rendered, subscriber=subscriber, delivery_id=0, edition_id=edition_id or 0)
    return Preview(edition=copy, rendered=rendered, message=message, built=row is not None)


def dry_run(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    transport: Transport,
    edition_date: date,
    clock: Clock,
) -> SendReport:
    """Render every active subscriber's message into `transport`; nothing is saved."""
    renderer = make_renderer(settings, newsletter)
    now = clock()
    with session_scope(engine) as session:
        edition, _ = edition_or_draft(newsletter, session=session, edition_date=edition_date, now=now)
        subscribers = list(
            session.exec(select(Subscriber).where(Subscriber.status == SubscriberStatus.ACTIVE))
        )
    messages, skipped = [], 0
    for subscriber in subscribers:
        copy, rendered = renderer.digest_for(edition, topics_of(subscriber))
        if copy.story_count == 0:
            skipped += 1
            continue
        messages.append(renderer.message(rendered, subscriber=subscriber, delivery_id=0, edition_id=0))
    results = transport.send(messages)
    return SendReport(edition_date, edition.story_count, sent=sum(r.ok for r in results), skipped=skipped)


def archive_html(
    settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, day: date, renderer: Renderer
) -> str | None:
    """A sent edition as a public web page: every topic, no personal data, no working token."""
    with session_scope(engine) as session:
        sent = queries.edition_for(day, session=session)
    if sent is None or sent.sent_at is None or sent.story_count == 0:
        return None  # an edition with no stories was sent to nobody
    _, rendered = renderer.digest_for(compose.Edition.from_json(sent.content_json), frozenset())
    return rendered.html.fill(render.archive_values(settings.base_url))
