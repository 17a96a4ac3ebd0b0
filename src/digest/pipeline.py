"""The daily job, stage by stage: sources -> topics -> compose -> render -> deliver.

The only module that knows the order of the stages, and nothing else: how a stage does its work
is the stage's business, and where collecting and sending run is a Runner's (runners/: this
process, or the Celery workers). The CLI, the scheduler and the web app call these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from digest.clock import Clock, local_date
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import Subscriber
from digest.newsletter import Newsletter
from digest.runners.base import OnFetched, Runner, make_runner
from digest.runners.local import LocalRunner

if TYPE_CHECKING:
    # `digest collect` loads the sources stage only: rendering, delivery and their libraries
    # (Jinja, MJML, SendGrid, cryptography: ~0.4 s of imports) load where a send or a preview
    # runs, inside the functions below.
    from sqlmodel import Session

    from digest import compose
    from digest.db.models import Edition
    from digest.deliver.base import OutgoingMessage
    from digest.deliver.journal import SendReport
    from digest.render.copies import Renderer
    from digest.render.email import RenderedDigest
    from digest.sources.collect import SourceResult

# --- sources ------------------------------------------------------------------------------


def collect(
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock,
    settings: Settings | None = None,
    runner: Runner | None = None,
    on_fetched: OnFetched | None = None,
    parse_workers: int | None = None,
) -> list[SourceResult]:
    """Fetch every source and store new articles as stories, stamped with `clock()` read once at
    the start (their first-seen time).

    `runner` is where it runs (default: the one `settings` ask for, whose fetch options it uses;
    without settings, this process with the default options and `parse_workers`).
    """
    if runner is None:
        runner = (
            make_runner(settings) if settings is not None else LocalRunner(None, parse_workers=parse_workers)
        )
    return runner.collect(newsletter, engine=engine, clock=clock, on_fetched=on_fetched)


# --- deliver ------------------------------------------------------------------------------


def send(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    clock: Clock,
    runner: Runner | None = None,
    zone: str | None = None,
    resend_unknown: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Send an edition to every reader who has not had it (of `zone` only, when given), through
    `runner` (default: the one `settings` ask for); `on_progress` as Runner.send says."""
    runner = runner or make_runner(settings)
    return runner.send(
        newsletter,
        engine=engine,
        edition_date=edition_date,
        clock=clock,
        zone=zone,
        resend_unknown=resend_unknown,
        should_stop=should_stop,
        on_progress=on_progress,
    )


# --- the daily job ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunReport:
    """What `run` did: each source's collect result, then the send."""

    collected: list[SourceResult]
    sent: SendReport


def run(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock,
    edition_date: date | None = None,
    runner: Runner | None = None,
    on_fetched: OnFetched | None = None,
    on_collected: Callable[[list[SourceResult], date], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunReport:
    """The daily job (`digest run`): collect every source, then send the edition of
    `edition_date` (default: today in DIGEST_TIMEZONE once collected). `on_collected` sees the
    collect's results and the edition's date before the send starts (the CLI prints them)."""
    runner = runner or make_runner(settings)
    collected = collect(newsletter, engine=engine, clock=clock, runner=runner, on_fetched=on_fetched)
    day = edition_date or local_date(settings.zone, clock())
    if on_collected is not None:
        on_collected(collected, day)
    report = send(
        settings,
        newsletter,
        engine=engine,
        edition_date=day,
        clock=clock,
        runner=runner,
        on_progress=on_progress,
    )
    return RunReport(collected, report)


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
        from digest.deliver.message import to_bytes

        return to_bytes(self.message, now=now)


def _edition_or_draft(
    settings: Settings, newsletter: Newsletter, *, session: Session, day: date, now: datetime
) -> tuple[compose.Edition, Edition | None]:
    from digest.editions import edition_or_draft

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
    from digest.render.copies import make_renderer
    from digest.subscribers.roster import get_subscriber, topics_of

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
    from digest.db import queries
    from digest.db.models import DeliveryStatus, SubscriberStatus
    from digest.deliver import ledger
    from digest.deliver.journal import SendReport
    from digest.deliver.message import MessageEncoder
    from digest.render.copies import make_renderer
    from digest.subscribers.roster import topics_of

    renderer = make_renderer(settings, newsletter)
    encoder = MessageEncoder()
    size = batch_size or settings.send_batch_size
    now = clock()
    with session_scope(engine) as session:
        edition, row = _edition_or_draft(settings, newsletter, session=session, day=edition_date, now=now)
        edition_id = (row.id or 0) if row is not None else 0  # 0: no edition, so no delivery rows
        counts = ledger.counts(edition_id, session=session)
    built = skipped = 0
    after_id = 0
    while True:
        with session_scope(engine) as session:
            page = queries.readers_to_send(edition_id, session=session, now=now, after_id=after_id, size=size)
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
