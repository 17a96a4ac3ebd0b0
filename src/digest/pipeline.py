"""The daily job, stage by stage: sources -> topics -> compose -> render -> deliver.

This is the only module that knows the order of the stages; the CLI, the scheduler and the web
app call these functions and nothing deeper.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import compose
from digest.clock import Clock
from digest.config import Newsletter, Settings
from digest.db.engine import session_scope
from digest.db.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
)
from digest.deliver import ledger
from digest.deliver.base import OutgoingMessage, Transport
from digest.deliver.journal import SendReport
from digest.deliver.message import MessageEncoder, to_bytes
from digest.deliver.proofs import send_seed_copies
from digest.deliver.send import send_edition
from digest.deliver.transports import make_transport
from digest.editions import edition_or_draft
from digest.render.copies import Renderer, make_renderer
from digest.render.email import RenderedDigest
from digest.sources.collect import SourceResult
from digest.sources.collect import collect as collect_sources
from digest.sources.fetch import FetchOptions
from digest.subscribers.roster import get_subscriber, topics_of

log = logging.getLogger(__name__)


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
) -> tuple[compose.Edition, Edition | None]:
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
