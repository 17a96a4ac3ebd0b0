"""The daily job, stage by stage: sources -> topics -> compose -> render -> deliver.

This is the only module that knows the order of the stages; the CLI, the scheduler and the web
app call these functions and nothing deeper.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import compose, followups
from digest.clock import Clock
from digest.config import Newsletter, Settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import (
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
)
from digest.db.models import Edition as EditionRow
from digest.deliver import claims, ledger
from digest.deliver.base import OutgoingMessage, SendResult, Transport
from digest.deliver.lock import send_lock
from digest.deliver.message import MessageEncoder, to_bytes
from digest.deliver.proofs import NO_SEEDS, SeedReport, send_seed_copies
from digest.deliver.sender import Call, RateLimiter, batches, dispatch
from digest.deliver.transports import make_transport
from digest.editions import build_edition, edition_or_draft
from digest.errors import DeliveryError
from digest.render.copies import Renderer, active_topic_sets, make_renderer
from digest.render.email import RenderedDigest, archive_values
from digest.sources.collect import SourceResult
from digest.sources.collect import collect as collect_sources
from digest.sources.fetch import FetchOptions
from digest.subscribers.roster import get_subscriber, record_event, resume_paused, topics_of
from digest.threads import HORIZON_DAYS

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# A report lists this many failures; the rest are counted (every error is in the ledger), so a
# send that fails for all of 100,000 readers does not hold 100,000 strings.
FAILURES_KEPT = 20


def today(settings: Settings, now: datetime) -> date:
    """The edition date for `now` in the newsletter's time zone."""
    return now.astimezone(settings.zone).date()


# --- sources ------------------------------------------------------------------------------


def collect(
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock,
    settings: Settings | None = None,
    on_fetched: Callable[[str, str | None], None] | None = None,
    parse_workers: int | None = None,
) -> list[SourceResult]:
    """Fetch every source and store new articles as stories (fetch options from `settings`).

    Articles are stamped with `clock()` read once at the start (their first-seen time). With
    DIGEST_BROKER_URL set, `digest worker` processes fetch and parse one source per task and
    this process stores what they found (issue 7), waiting on `clock`; the stories come out the same.
    """
    now = clock()
    if settings is not None and settings.broker_url is not None:
        from digest import distributed  # imports Celery: only in distributed mode

        return distributed.collect(
            settings, newsletter, engine=engine, now=now, clock=clock, on_fetched=on_fetched
        )
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
    failures: tuple[str, ...] = ()  # "address: error", the first FAILURES_KEPT of failed + retry
    already: int = 0  # readers (of the audience) who had this edition before this send
    seeds: SeedReport = NO_SEEDS  # copies for DIGEST_SEED_ADDRESSES, outside the counts above

    @property
    def nothing_new(self) -> bool:
        """True when this send had nothing to do because everyone already had the edition."""
        return bool(self.already) and not (self.sent or self.failed or self.retry or self.skipped)

    @property
    def needs_attention(self) -> bool:
        """True when something failed or is unknown (the exit status tells cron)."""
        return bool(self.failed or self.retry or self.unknown)


def open_edition(
    newsletter: Newsletter,
    *,
    session: Session,
    edition_date: date,
    now: datetime,
    zone: tzinfo,
    audience: sa.ColumnElement[bool] | None,
    resend_unknown: bool,
    horizon_days: int = HORIZON_DAYS,
) -> tuple[int, compose.Edition]:
    """Ready an edition for sending: build or load it, end finished pauses, put back the unknown
    rows if asked, and give every reader in the audience a delivery row. The caller has already
    settled the rows a crash left in flight (how depends on one process or many workers)."""
    row, edition = build_edition(
        newsletter, session=session, edition_date=edition_date, now=now, zone=zone, horizon_days=horizon_days
    )
    assert row.id is not None
    resume_paused(session=session, now=now)
    if resend_unknown:
        ledger.requeue_unknown(row.id, session=session, now=now)
    ledger.ensure_deliveries(row.id, session=session, now=now, audience=audience)
    return row.id, edition


def send(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    clock: Clock,
    transport: Transport | None = None,
    zone: str | None = None,
    audience: sa.ColumnElement[bool] | None = None,
    resend_unknown: bool = False,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Send an edition here (`send_edition`), or through the workers when DIGEST_BROKER_URL is
    set (issue 7), as `collect` does for sources. `zone` with its SQL `audience` narrows the send
    to one time zone; `transport` is the first connection of a send here (default: new ones)."""
    if settings.broker_url is not None:
        from digest import distributed  # imports Celery: only in distributed mode

        report = distributed.send_edition(
            settings,
            newsletter,
            engine=engine,
            edition_date=edition_date,
            clock=clock,
            zone=zone,
            audience=audience,
            resend_unknown=resend_unknown,
            should_stop=should_stop,
        )
        seeds = send_seed_copies(
            settings,
            engine=engine,
            renderer=make_renderer(settings, newsletter),
            edition_date=edition_date,
            clock=clock,
        )
        return replace(report, seeds=seeds)
    return send_edition(
        settings,
        newsletter,
        engine=engine,
        transport=transport or make_transport(settings, clock=clock),
        edition_date=edition_date,
        clock=clock,
        resend_unknown=resend_unknown,
        batch_size=batch_size,
        audience=audience,
        should_stop=should_stop,
        on_progress=on_progress,
    )


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
    batch_size: int | None = None,
    lanes: Sequence[Transport] = (),
    limiter: RateLimiter | None = None,
    audience: sa.ColumnElement[bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Build (or load) the edition and send it to every active subscriber who has not had it.

    Exactly once: one ledger row per (edition, subscriber); a row is marked `sending` (committed)
    just before its transport call and gets the answer just after, so a crash leaves only the
    in-flight call's rows unknown. `lanes` are parallel connections (default: `transport` and
    as many more as DIGEST_SEND_CONCURRENCY asks). Raises TransportUnavailable, after recording
    what was done, when the server is unreachable.

    `audience` narrows who is sent to now (the scheduler sends one time zone at a time);
    `should_stop` is asked before every transport call (SIGTERM: finish the call in hand, stop);
    `on_progress` is told how many messages each finished call answered (the CLI's progress bar).
    The ledger is read `batch_size` rows at a time (default DIGEST_SEND_BATCH_SIZE), so memory
    does not grow with the number of subscribers.
    """
    renderer = renderer or make_renderer(settings, newsletter)
    lanes = list(lanes) or [transport] + [
        make_transport(settings, clock=clock) for _ in range(settings.send_concurrency - 1)
    ]
    limiter = limiter or RateLimiter(settings.send_rate)
    with send_lock(engine):
        now = clock()
        with session_scope(engine) as session:
            interrupted = ledger.mark_interrupted(session=session, now=now)
            if interrupted:
                log.warning(
                    "%d message(s) were in flight during a crash: unknown "
                    "(see digest stats; digest send --resend-unknown --date D sends them)",
                    interrupted,
                )
            edition_id, edition = open_edition(
                newsletter,
                session=session,
                edition_date=edition_date,
                now=now,
                zone=settings.zone,
                audience=audience,
                resend_unknown=resend_unknown,
                horizon_days=settings.thread_horizon_days,
            )
            already = ledger.counts(edition_id, session=session, audience=audience)[DeliveryStatus.SENT]
        # Render every distinct copy before the first claim: a template error stops the send with
        # nothing claimed (issue 4), whichever topic set would have hit it.
        with session_scope(engine) as session:
            renderer.prepare(edition, active_topic_sets(session=session))
        journal = _send_rows(
            engine,
            renderer,
            edition,
            edition_id=edition_id,
            writer=ledger.LedgerWriter(engine),
            clock=clock,
            lanes=lanes,
            limiter=limiter,
            batch_size=batch_size or settings.send_batch_size,
            audience=audience,
            should_stop=should_stop,
            on_progress=on_progress,
        )
        with session_scope(engine) as session:
            counts = ledger.counts(edition_id, session=session)
            edition_row = session.get(EditionRow, edition_id)
            if edition_row is not None and edition_row.sent_at is None:
                edition_row.sent_at = clock()
                session.add(edition_row)
    # After the readers, so the seeds never delay them; their failure never stops the send.
    seeds = send_seed_copies(
        settings, engine=engine, renderer=renderer, edition_date=edition_date, clock=clock
    )
    return journal.report(
        edition_date,
        edition.story_count,
        unknown=counts[DeliveryStatus.UNKNOWN],
        already=already,
        seeds=seeds,
    )


def _send_rows(
    engine: sa.Engine,
    renderer: Renderer,
    edition: compose.Edition,
    *,
    edition_id: int,
    writer: ledger.LedgerWriter,
    clock: Clock,
    lanes: Sequence[Transport],
    limiter: RateLimiter,
    batch_size: int,
    audience: sa.ColumnElement[bool] | None,
    should_stop: Callable[[], bool] | None,
    on_progress: Callable[[int], None] | None = None,
) -> "_Journal":
    """The send loop shared by `send_edition` and a worker's `send_batch`; closes writer and lanes."""
    journal = _Journal(writer=writer, clock=clock, on_progress=on_progress)
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
    return journal


def send_batch(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    lanes: Sequence[Transport],
    edition_id: int,
    batch: claims.Batch,
    owner: str,
    clock: Clock,
    renderer: Renderer | None = None,
    audience: sa.ColumnElement[bool] | None = None,
) -> SendReport:
    """A worker's share of a distributed send: claim a batch's free rows and send them.

    Idempotent: rows already answered, or held by a live worker, are left alone, so a task run
    twice sends nothing twice. The edition must exist (the coordinator built it).
    """
    renderer = renderer or make_renderer(settings, newsletter)
    lease = timedelta(seconds=settings.claim_lease_seconds)
    with session_scope(engine) as session:
        row = session.get(EditionRow, edition_id)
        if row is None:
            raise DeliveryError(f"edition {edition_id}: not found (was the database reset?)")
        edition = compose.Edition.from_json(row.content_json)
        now = clock()
        claims.expire_sending(edition_id, session=session, now=now, lease=lease)
        claimed = claims.claim(edition_id, batch, session=session, owner=owner, now=now, lease=lease)
    if not claimed:
        for lane in lanes:
            lane.close()
        return SendReport(edition_date=edition.date, story_count=edition.story_count)
    log.info("worker=%s edition=%s claimed=%d rows=%s-%s", owner, edition.date, claimed, *batch)
    mine = claims.mine(owner, batch)
    try:
        journal = _send_rows(
            engine,
            renderer,
            edition,
            edition_id=edition_id,
            writer=claims.ClaimWriter(engine, owner=owner, edition_id=edition_id, lease=lease),
            clock=clock,
            lanes=lanes,
            limiter=RateLimiter(settings.send_rate),
            batch_size=settings.send_batch_size,
            audience=mine if audience is None else sa.and_(mine, audience),
            should_stop=None,
        )
    finally:
        with session_scope(engine) as session:
            claims.release(edition_id, batch, session=session, owner=owner)
    return journal.report(edition.date, edition.story_count)


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
                copy, rendered = renderer.digest_for(edition, chosen, row.timezone)
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
    failures: list[str] = field(default_factory=list)  # the first FAILURES_KEPT
    on_progress: Callable[[int], None] | None = None  # told the answers of each call (issue 14)

    def report(
        self,
        edition_date: date,
        story_count: int,
        *,
        unknown: int = 0,
        already: int = 0,
        seeds: SeedReport = NO_SEEDS,
    ) -> SendReport:
        """The tally as a send's report."""
        return SendReport(
            edition_date=edition_date,
            story_count=story_count,
            sent=self.sent,
            failed=self.failed,
            retry=self.retry,
            skipped=self.skipped,
            unknown=unknown,
            failures=tuple(self.failures),
            already=already,
            seeds=seeds,
        )

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
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append(f"{message.to_email}: {result.error}")
                if result.permanent:
                    self.failed += 1
                else:
                    self.retry += 1
                if result.bounce:
                    bounced.append((message, result))
        results = [r for _, call_results in done for r in call_results]
        claim_ids = [m.delivery_id for m in claim]
        if results and self.on_progress is not None:
            self.on_progress(len(results))
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
    rendered: RenderedDigest
    message: OutgoingMessage
    built: bool  # False: a draft, the edition is not frozen yet

    def eml(self, now: datetime) -> bytes:
        """The message as the outbox would hold it."""
        return to_bytes(self.message, now=now)


def _edition_or_draft(
    settings: Settings, newsletter: Newsletter, *, session: Session, day: date, now: datetime
) -> tuple[compose.Edition, EditionRow | None]:
    return edition_or_draft(
        newsletter,
        session=session,
        edition_date=day,
        now=now,
        zone=settings.zone,
        horizon_days=settings.thread_horizon_days,
    )


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
        edition, row = _edition_or_draft(settings, newsletter, session=session, day=edition_date, now=now)
        edition_id = row.id if row is not None else None
        subscriber = (
            get_subscriber(subscriber_email, session=session) if subscriber_email else SAMPLE_SUBSCRIBER
        )
    copy, rendered = renderer.digest_for(edition, topics_of(subscriber), subscriber.timezone)
    message = renderer.message(rendered, subscriber=subscriber, delivery_id=0, edition_id=edition_id or 0)
    return Preview(edition=copy, rendered=rendered, message=message, built=row is not None)


def dry_run(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    clock: Clock,
    batch_size: int | None = None,
) -> SendReport:
    """Count what `digest send` would do now, building each message to the bytes; nothing is sent
    or saved.

    The same readers as a real send: those who already have the edition are counted as already
    sent (or unknown, after a crash) and not built; a row waiting for a reader who unsubscribed,
    bounced or paused since is counted as skipped; an active reader (or one whose pause has ended:
    the send resumes them first) with no row yet or one to send or retry gets a message, unless
    nothing is left for their topics. Readers are read `batch_size` at a time (default
    DIGEST_SEND_BATCH_SIZE) and each message is dropped once built, so it stays as small as a send.
    """
    renderer = make_renderer(settings, newsletter)
    encoder = MessageEncoder()
    size = batch_size or settings.send_batch_size
    now = clock()
    with session_scope(engine) as session:
        edition, row = _edition_or_draft(settings, newsletter, session=session, day=edition_date, now=now)
        edition_id = (row.id or 0) if row is not None else 0  # 0: no edition, so no delivery rows
        counts = ledger.counts(edition_id, session=session)
    active_now = sa.or_(
        col(Subscriber.status) == SubscriberStatus.ACTIVE,
        sa.and_(col(Subscriber.status) == SubscriberStatus.PAUSED, col(Subscriber.paused_until) <= now),
    )
    built = skipped = 0
    after_id = 0
    while True:
        with session_scope(engine) as session:
            page = session.exec(
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
                        col(Delivery.status).in_(ledger.SENDABLE),
                        sa.and_(col(Delivery.id).is_(None), active_now),
                    )
                )
                .order_by(col(Subscriber.id))
                .limit(size)
            ).all()
        if not page:
            break
        for subscriber, _ in page:
            after_id = subscriber.id or 0
            resumed = subscriber.status == SubscriberStatus.PAUSED and (
                subscriber.paused_until is not None and subscriber.paused_until <= now
            )
            if subscriber.status != SubscriberStatus.ACTIVE and not resumed:
                skipped += 1  # unsubscribed, bounced or paused after the edition was built
                continue
            copy, rendered = renderer.digest_for(edition, topics_of(subscriber), subscriber.timezone)
            if copy.story_count == 0:
                skipped += 1
                continue
            message = renderer.message(rendered, subscriber=subscriber, delivery_id=0, edition_id=edition_id)
            encoder.to_bytes(message, now=now)
            built += 1
    return SendReport(
        edition_date,
        edition.story_count,
        sent=built,
        skipped=skipped,
        unknown=counts[DeliveryStatus.UNKNOWN] + counts[DeliveryStatus.SENDING],
        already=counts[DeliveryStatus.SENT],
    )


def archive_html(
    settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, day: date, renderer: Renderer
) -> str | None:
    """A sent edition as a public web page: every topic, no personal data, no working token, and
    under each story the later follow-ups sent since (issue 16)."""
    with session_scope(engine) as session:
        sent = queries.edition_for(day, session=session)
        if sent is None or sent.sent_at is None or sent.story_count == 0:
            return None  # an edition with no stories was sent to nobody
        edition = compose.Edition.from_json(sent.content_json)
        edition = compose.with_later(edition, followups.later_refs(edition, session=session))
    return renderer.archive_for(edition).html.fill(archive_values(settings.base_url))
