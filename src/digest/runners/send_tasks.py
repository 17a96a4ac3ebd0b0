"""The distributed send's coordinator (issue 7): build the edition, enqueue its batches, watch.

The ledger stays the only truth. The coordinator holds the send lock (one at a time), builds the
edition and its ledger rows, renders every copy once (a template error stops it before anything
is queued), then enqueues id ranges as tasks and waits until every row is answered. Every lease
period it marks rows left `sending` by a vanished worker `unknown` and queues again the rows whose
claim ran out; when nothing moved for a whole lease (a lost broker, dead workers) it queues again
every row still to send. Tasks are idempotent, so queueing a range twice sends nothing twice.
"""

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col

from digest.clock import Clock
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Edition, Subscriber
from digest.db.queries import SENDABLE, zone_audience
from digest.deliver import claims, ledger
from digest.deliver.journal import SendReport
from digest.deliver.lock import send_lock
from digest.deliver.proofs import send_seed_copies
from digest.deliver.send import EditionCache, open_edition, send_batch
from digest.deliver.transports import KeptLanes, close_lanes
from digest.errors import DeliveryError, DigestError
from digest.newsletter import Newsletter
from digest.render.copies import Renderer, active_topic_sets, make_renderer

log = logging.getLogger(__name__)


class Enqueue(Protocol):
    """Puts one batch of an edition on the queue (Celery in production, a list in tests)."""

    def __call__(self, edition_id: int, batch: claims.Batch, zone: str | None) -> None:
        """Queue the batch; raise DeliveryError when the broker cannot take it."""
        ...


def _outstanding(
    edition_id: int, started: datetime, audience: sa.ColumnElement[bool] | None
) -> sa.ColumnElement[bool]:
    """Rows not yet answered in this run: pending, in flight, or `retry` from an earlier run."""
    return sa.and_(
        col(Delivery.edition_id) == edition_id,
        sa.or_(
            col(Delivery.status).in_((DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)),
            sa.and_(col(Delivery.status) == DeliveryStatus.RETRY.value, col(Delivery.updated_at) <= started),
        ),
        audience if audience is not None else sa.true(),
    )


def _ranges(
    session: Session, where: sa.ColumnElement[bool], size: int, *, join: bool = False
) -> list[tuple[claims.Batch, int]]:
    """The rows matching `where` as consecutive id ranges of at most `size` rows, with their row
    counts. The database numbers the rows and groups them: the coordinator holds one range per
    batch, never every id of the edition (its memory must not grow with the list, issue 7)."""
    numbered = (
        _from_ledger(
            sa.select(
                col(Delivery.id).label("id"),
                ((sa.func.row_number().over(order_by=col(Delivery.id)) - 1) // size).label("chunk"),
            ),
            join=join,
        )
        .where(where)
        .subquery()
    )
    rows = session.execute(
        sa.select(sa.func.min(numbered.c.id), sa.func.max(numbered.c.id), sa.func.count())
        .group_by(numbered.c.chunk)
        .order_by(numbered.c.chunk)
    )
    return [(claims.Batch(int(first), int(last)), int(n)) for first, last, n in rows]


def _from_ledger(query: sa.Select[Any], *, join: bool) -> sa.Select[Any]:
    """`query` over the ledger, joined to the subscribers only when `join` (the `where` names
    their columns: a zone's audience). Every ledger row has its subscriber (a foreign key;
    removing a subscriber removes their rows), so the join adds nothing else.

    The coordinator counts every poll while workers send; the join made that about three
    times dearer (EXPLAIN ANALYZE, 10,000 pending rows: 3.7 ms with it, 1.3 ms without).
    """
    query = query.select_from(Delivery)
    if join:
        query = query.join(Subscriber, col(Delivery.subscriber_id) == col(Subscriber.id))
    return query


def _count(session: Session, where: sa.ColumnElement[bool], *, join: bool = False) -> int:
    """Rows matching `where` (see `_from_ledger` for `join`)."""
    query = _from_ledger(sa.select(sa.func.count()), join=join)
    return int(session.execute(query.where(where)).scalar_one())


def _enqueue_all(
    enqueue: Enqueue, edition_id: int, ranges: Sequence[tuple[claims.Batch, int]], zone: str | None
) -> tuple[int, int]:
    """Queue every range; (queued, refused by the broker). A refusal is retried at the next sweep."""
    queued = refused = 0
    for batch, _ in ranges:
        try:
            enqueue(edition_id, batch, zone)
            queued += 1
        except DeliveryError as e:
            refused += 1
            log.warning("edition=%s rows=%s-%s not queued: %s", edition_id, *batch, e)
    return queued, refused


MIN_POLL_SECONDS = 0.05


def _next_poll(polled: tuple[datetime, int] | None, now: datetime, left: int, poll_seconds: float) -> float:
    """How long to wait before counting again: `poll_seconds`, or less when the rows left should
    be answered sooner at the rate of the last poll (issue 15: a send that ends just after a
    poll no longer waits up to a whole second for the next one to notice)."""
    if polled is None:
        return poll_seconds
    then, before = polled
    elapsed = (now - then).total_seconds()
    if before <= left or elapsed <= 0:
        return poll_seconds
    expected = left * elapsed / (before - left)  # seconds until the last row, at the recent rate
    return min(poll_seconds, max(MIN_POLL_SECONDS, expected))


def send_distributed(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    clock: Clock,
    enqueue: Enqueue,
    sleep: Callable[[float], None],
    zone: str | None = None,
    audience: sa.ColumnElement[bool] | None = None,
    resend_unknown: bool = False,
    should_stop: Callable[[], bool] | None = None,
    renderer: Renderer | None = None,
    poll_seconds: float = 1.0,
) -> SendReport:
    """Send an edition through the workers and wait until every row has its answer.

    `zone` (with its SQL `audience`) narrows the send to one time zone, as the scheduler does;
    `should_stop` ends the wait early (the queued batches still go out).
    """
    if engine.url.get_backend_name() != "postgresql":
        raise DeliveryError("distributed mode requires PostgreSQL (DIGEST_DATABASE_URL)")
    renderer = renderer or make_renderer(settings, newsletter)
    lease = timedelta(seconds=settings.claim_lease_seconds)
    size = settings.send_batch_size
    join = audience is not None  # only a zone's audience names subscriber columns
    with send_lock(engine):
        started = clock()
        with session_scope(engine) as session:
            stale = claims.expire_sending(None, session=session, now=started, lease=lease)
            if stale:
                log.warning("%d message(s) were in flight when their worker stopped: unknown", stale)
            edition_id, edition = open_edition(
                newsletter,
                session=session,
                edition_date=edition_date,
                now=started,
                zone=settings.zone,
                audience=audience,
                resend_unknown=resend_unknown,
                horizon_days=settings.thread_horizon_days,
            )
            already = ledger.counts(edition_id, session=session, audience=audience)[DeliveryStatus.SENT]
        with session_scope(engine) as session:  # a template error stops us before anything is queued
            renderer.prepare(edition, active_topic_sets(session=session))
            outstanding = _outstanding(edition_id, started, audience)
            ranges = _ranges(session, outstanding, size, join=join)
            queued, refused = _enqueue_all(enqueue, edition_id, ranges, zone)
        log.info("edition=%s queued %d batch(es), %d refused by the broker", edition_date, queued, refused)
        last_sweep, last_left = clock(), -1
        polled: tuple[datetime, int] | None = None  # the previous poll: when, and rows left then
        while True:
            with session_scope(engine) as session:
                left = _count(session, outstanding, join=join)
            if left == 0 or (should_stop is not None and should_stop()):
                break
            now = clock()
            pause, polled = _next_poll(polled, now, left, poll_seconds), (now, left)
            if now - last_sweep >= lease:
                with session_scope(engine) as session:
                    claims.expire_sending(edition_id, session=session, now=now, lease=lease)
                    free = sa.and_(
                        outstanding,
                        col(Delivery.status).in_(SENDABLE),
                        col(Delivery.claimed_at).is_not(None) if left != last_left else sa.true(),
                        sa.or_(col(Delivery.claimed_at).is_(None), col(Delivery.claimed_at) < now - lease),
                    )
                    ranges = _ranges(session, free, size, join=join)
                if ranges:
                    log.warning(
                        "edition=%s %d row(s) left %s: queued again",
                        edition_date,
                        sum(n for _, n in ranges),
                        "by stopped workers" if left != last_left else "with no progress for a lease",
                    )
                    _enqueue_all(enqueue, edition_id, ranges, zone)
                last_sweep, last_left = now, left
            sleep(pause)
        with session_scope(engine) as session:
            report = _report(session, edition_id, started, audience)
            if left == 0:
                edition_row = session.get(Edition, edition_id)
                if edition_row is not None and edition_row.sent_at is None:
                    edition_row.sent_at = clock()
                    session.add(edition_row)
    # DIGEST_SEED_ADDRESSES: their copies go from here, once the readers' batches are answered.
    seeds = send_seed_copies(
        settings,
        engine=engine,
        renderer=make_renderer(settings, newsletter),
        edition_date=edition_date,
        clock=clock,
    )
    return SendReport(
        edition_date=edition_date,
        story_count=edition.story_count,
        sent=report["sent"],
        failed=report["failed"],
        retry=report["retry"],
        skipped=report["skipped"],
        unknown=report["unknown"],
        already=already,
        seeds=seeds,
    )


def _report(
    session: Session, edition_id: int, started: datetime, audience: sa.ColumnElement[bool] | None
) -> dict[str, int]:
    """This run's outcomes (rows answered since it started) and the edition's unknown rows."""
    recent = sa.case((col(Delivery.updated_at) >= started, 1), else_=0).label("recent")
    rows = session.execute(
        _from_ledger(sa.select(col(Delivery.status), recent, sa.func.count()), join=audience is not None)
        .where(col(Delivery.edition_id) == edition_id, audience if audience is not None else sa.true())
        .group_by(col(Delivery.status), recent)
    )
    out = {"sent": 0, "failed": 0, "retry": 0, "skipped": 0, "unknown": 0}
    for status, recent, n in rows:
        if status == DeliveryStatus.UNKNOWN.value:
            out["unknown"] += int(n)
        elif recent and status in out:
            out[str(status)] += int(n)
    return out


def send_task(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    renderer: Renderer,
    lanes: KeptLanes,
    editions: EditionCache,
    edition_id: int,
    batch: claims.Batch,
    zone: str | None,
    clock: Clock,
    alone: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """A worker's send task: claim and send one batch of an edition (deliver/send.py's send_batch)
    on the lanes kept from its previous batch, kept in turn for its next one unless this one
    raised (a relay that stopped the send may have left them broken: closed, never reused).

    Then, while `alone()` says no other batch waits in this worker, it takes the edition's last
    pending rows a part of a batch at a time (claims.claim_last): the other workers' last queued
    batches, which they would send after everything else, so the workers finish together
    (issue 15: two workers held up to --concurrency batches each when the queue ran dry, and
    the send waited for the one left with more). Only for a send to every zone (a zone's rows
    need its audience), and for a third of a lease at most: a task running much longer could
    be taken by the broker for a lost one.
    """
    open_lanes = lanes.take(edition_id)
    owner, started = claims.worker_name(), clock()
    lease = timedelta(seconds=settings.claim_lease_seconds)
    counts = {"sent": 0, "failed": 0, "retry": 0, "skipped": 0}
    audience = zone_audience(zone, settings.timezone) if zone else None

    def send(rows: claims.Batch, claimed: int | None = None) -> None:
        report = send_batch(
            settings,
            newsletter,
            engine=engine,
            lanes=open_lanes,
            edition_id=edition_id,
            batch=rows,
            owner=owner,
            clock=clock,
            renderer=renderer,
            audience=audience,
            keep_lanes=True,
            editions=editions,
            claimed=claimed,
        )
        for outcome in counts:
            counts[outcome] += getattr(report, outcome)

    try:
        send(batch)
        while zone is None and alone() and clock() - started < lease / 3:
            with session_scope(engine) as session:
                taken = claims.claim_last(
                    edition_id,
                    session=session,
                    owner=owner,
                    now=clock(),
                    lease=lease,
                    size=max(1, settings.send_batch_size // STEAL_PARTS),
                )
            if taken is None:
                break
            send(*taken)
    except BaseException:
        close_lanes(open_lanes)
        raise
    lanes.keep(edition_id, open_lanes)
    return counts


STEAL_PARTS = 4  # a worker with no batch left takes the last rows a quarter of a batch at a time


class Stopping(DigestError):
    """Raised when a send task was still waiting for its turn as its worker began to stop."""


class SendTurn:
    """One send task of a worker process sends at a time; the others wait, counted."""

    def __init__(self) -> None:
        self._sending = threading.Lock()
        self._counting = threading.Lock()
        self.waiting = 0  # send tasks waiting for the turn (none: the broker had no batch left)

    @contextmanager
    def hold(self, stopping: Callable[[], bool], *, poll: float = 1.0) -> Iterator[None]:
        """Wait until no other send task of this process is sending, then hold the turn.

        One send task at a time, each with its DIGEST_SEND_CONCURRENCY lanes and its rate limit:
        N threads would otherwise open N times the connections and send at N times the rate.
        Raises Stopping when the worker begins to stop first: the task has claimed nothing yet,
        and its message goes back to the queue for another worker (the caller rejects it).
        """
        turn = self._sending.acquire(blocking=False)
        if not turn:
            with self._counting:
                self.waiting += 1
            try:
                while not turn:
                    if stopping():
                        raise Stopping("worker stopping: batch handed back before it was claimed")
                    turn = self._sending.acquire(timeout=poll)
            finally:
                with self._counting:
                    self.waiting -= 1
        try:
            yield
        finally:
            self._sending.release()

    def free(self) -> bool:
        """Take the turn if nobody holds it (then `release` it); False if a send task does."""
        return self._sending.acquire(blocking=False)

    def release(self) -> None:
        """Give back a turn taken with `free`."""
        self._sending.release()
