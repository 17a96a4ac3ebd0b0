"""The send loop: one edition to every reader who has not had it, exactly once.

`send_edition` sends from this process over DIGEST_SEND_CONCURRENCY lanes; `send_batch` is a
worker's share of a send queued as tasks (runners/send_tasks.py). Both run `_send_rows`: the
ledger is read a page at a time, each reader's copy comes from the renderer, and `_Journal`
writes each transport call's answers (deliver/sender.py) with the bounced readers suppressed in
the same transaction.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta, tzinfo

import sqlalchemy as sa
from sqlmodel import Session, col

from digest import compose
from digest.clock import Clock
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import (
    DeliveryStatus,
    Edition,
    SubscriberStatus,
)
from digest.deliver import claims, ledger, open_sends
from digest.deliver.base import OutgoingMessage, Transport
from digest.deliver.journal import Journal, SendReport
from digest.deliver.lock import send_lock
from digest.deliver.proofs import send_seed_copies
from digest.deliver.sender import RateLimiter, batches, send_calls
from digest.deliver.transports import close_lanes, make_transport
from digest.editions import build_edition
from digest.errors import DeliveryError
from digest.newsletter import Newsletter
from digest.render.copies import Renderer, active_topic_sets, make_renderer
from digest.render.email import RenderedDigest
from digest.subscribers.status import resume_paused
from digest.threads import HORIZON_DAYS

log = logging.getLogger(__name__)

BATCH_SIZE = 500


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
    rows if asked, give every reader in the audience a delivery row, and mark the edition's send
    open (open_sends.open_send). The caller has already settled the rows a crash left in flight (how
    depends on one process or many workers), and holds the send lock."""
    row, edition = build_edition(
        newsletter, session=session, edition_date=edition_date, now=now, zone=zone, horizon_days=horizon_days
    )
    assert row.id is not None
    resume_paused(session=session, now=now)
    if resend_unknown:
        ledger.requeue_unknown(row.id, session=session, now=now)
    ledger.ensure_deliveries(row.id, session=session, now=now, audience=audience)
    open_sends.open_send(row.id, session=session, now=now)
    return row.id, edition


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
            edition_row = session.get(Edition, edition_id)
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
    keep_lanes: bool = False,
) -> Journal:
    """The send loop shared by `send_edition` and a worker's `send_batch`; closes the writer, and
    the lanes unless `keep_lanes` (a worker's next batch reuses them; see send_batch)."""
    journal = Journal(writer=writer, clock=clock, on_progress=on_progress)
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
        send_calls(batches(messages, lanes[0].max_batch), lanes=lanes, journal=journal, limiter=limiter)
    finally:
        journal.writer.close()
        if not keep_lanes:
            close_lanes(lanes)
    return journal


class EditionCache:
    """The last edition a worker sent, parsed once for all its batches rather than once a batch.

    An edition's content never changes once built (editions.build_edition); its date and build
    time, read for every batch, tell the cached one from a row of a database built anew under
    the same id.
    """

    def __init__(self) -> None:
        self._kept: tuple[int, tuple[object, ...], compose.Edition] | None = None

    def get(self, edition_id: int, *, session: Session) -> compose.Edition:
        """The edition of this id; DeliveryError when there is none."""
        stamp = session.execute(
            sa.select(col(Edition.date), col(Edition.built_at)).where(col(Edition.id) == edition_id)
        ).one_or_none()
        if stamp is None:
            raise DeliveryError(f"edition {edition_id}: not found (was the database reset?)")
        kept = self._kept
        if kept is not None and kept[:2] == (edition_id, tuple(stamp)):
            return kept[2]
        content = session.execute(
            sa.select(col(Edition.content_json)).where(col(Edition.id) == edition_id)
        ).scalar_one()
        edition = compose.Edition.from_json(content)
        self._kept = (edition_id, tuple(stamp), edition)
        return edition


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
    keep_lanes: bool = False,
    editions: EditionCache | None = None,
    claimed: int | None = None,
) -> SendReport:
    """A worker's share of a distributed send: claim a batch's free rows and send them.

    Idempotent: rows already answered, or held by a live worker, are left alone, so a task run
    twice sends nothing twice. The edition must exist (the coordinator built it).

    `keep_lanes`: the lanes stay open for the caller's next batch, even when the send raised
    (the caller closes them then: runners/celery.py's WorkerState). `editions` keeps the parsed
    edition between a worker's batches. `claimed`: how many of the batch's rows the worker holds
    already (claims.claim_last), None to claim them here; only the rows it holds are sent.
    """
    renderer = renderer or make_renderer(settings, newsletter)
    lease = timedelta(seconds=settings.claim_lease_seconds)
    with session_scope(engine) as session:
        edition = (editions or EditionCache()).get(edition_id, session=session)
        now = clock()
        claims.expire_sending(edition_id, session=session, now=now, lease=lease, batch=batch)
        if claimed is None:
            claimed = claims.claim(edition_id, batch, session=session, owner=owner, now=now, lease=lease)
    if not claimed:
        if not keep_lanes:
            close_lanes(lanes)
        return SendReport(edition_date=edition.date, story_count=edition.story_count)
    log.info("worker=%s edition=%s claimed=%d rows=%s-%s", owner, edition.date, claimed, *batch)
    mine = claims.mine(owner, batch)
    try:
        journal = _send_rows(
            engine,
            renderer,
            edition,
            edition_id=edition_id,
            writer=claims.ClaimWriter(
                engine, owner=owner, edition_id=edition_id, lease=lease, claimed_at=now
            ),
            clock=clock,
            lanes=lanes,
            limiter=RateLimiter(settings.send_rate),
            batch_size=settings.send_batch_size,
            audience=mine if audience is None else sa.and_(mine, audience),
            should_stop=None,
            keep_lanes=keep_lanes,
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
    journal: Journal,
    audience: sa.ColumnElement[bool] | None,
    should_stop: Callable[[], bool] | None,
) -> Iterator[OutgoingMessage]:
    """Every message still to send, reading the ledger in id order; skips are recorded here.

    Stops early when `should_stop` says so: the message in hand is finished and recorded first.
    """
    after_id = 0
    active = SubscriberStatus.ACTIVE.value
    while True:
        with session_scope(engine) as session:
            rows = ledger.sendable_rows(
                edition_id, session=session, after_id=after_id, size=batch_size, audience=audience
            )
            skipped: dict[str, list[int]] = {}
            messages = []
            # Each reader's copy by (topics, zone), asked of the renderer once a page: its cache
            # takes a lock and keeps the order of use, too much to do per reader (issue 15).
            copies: dict[tuple[str, str | None], RenderedDigest | None] = {}
            for row in rows:
                after_id = row.delivery_id
                if row.status != active:
                    # Unsubscribed, bounced, complained or paused since the edition was built.
                    skipped.setdefault(f"subscriber is {row.status}", []).append(row.delivery_id)
                    continue
                key = (row.topics, row.timezone)
                if key in copies:
                    rendered = copies[key]
                else:
                    chosen = frozenset(t for t in row.topics.split("\n") if t)
                    copy, rendered = renderer.digest_for(edition, chosen, row.timezone)
                    rendered = copies[key] = rendered if copy.story_count else None
                if rendered is None:
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
