"""When each time zone is due its edition, and the runs that send it: once per reader, never stale.

Each subscriber receives edition D at DIGEST_SEND_TIME on day D in their own time zone (no time
zone means DIGEST_TIMEZONE). Edition D is built and frozen when the first zone is due, so readers
further west get the same content hours later and every story reaches every reader exactly once:
stories that arrive after the build go into D+1. The scheduler calls `dispatch` every quarter
hour (every zone offset is a multiple of 15 minutes); each call sends, per zone, only the newest
edition due, so missed runs after downtime are caught up once. An edition due longer ago than
DIGEST_MAX_LATENESS_HOURS is stale: not sent to that zone at all, and recorded as skipped.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import pipeline
from digest.clock import Clock
from digest.config import Newsletter, Settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, ScheduleRun, Subscriber, SubscriberStatus
from digest.db.queries import SENDABLE, zone_audience
from digest.deliver import ledger
from digest.deliver.journal import SendReport
from digest.errors import DigestError
from digest.runners.base import Runner
from digest.schedule import approval

log = logging.getLogger(__name__)

DISPATCH_EVERY_MINUTES = 15  # IANA zone offsets are all multiples of 15 minutes


# --- pure: when is what due -----------------------------------------------------------------


def due_at(zone: str, day: date, send_time: time) -> datetime:
    """When the edition of `day` is due in `zone`, in UTC (a time in a DST gap comes an hour on)."""
    return datetime.combine(day, send_time, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def latest_due(zone: str, send_time: time, now: datetime) -> tuple[date, datetime]:
    """The newest edition date already due in `zone` at `now`, and when it fell due."""
    day = now.astimezone(ZoneInfo(zone)).date()
    due = due_at(zone, day, send_time)
    if due > now:
        day -= timedelta(days=1)
        due = due_at(zone, day, send_time)
    return day, due


def next_due(zone: str, send_time: time, now: datetime) -> tuple[date, datetime]:
    """The next edition date due in `zone` after `now`, and when."""
    day, _ = latest_due(zone, send_time, now)
    day += timedelta(days=1)
    return day, due_at(zone, day, send_time)


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """One time zone's newest due edition at some moment, and whether it is too late to send."""

    zone: str
    edition_date: date
    due_at: datetime
    late: timedelta
    stale: bool

    @property
    def key(self) -> str:
        """What a send run for this plan is about, e.g. "2026-11-25 Asia/Tokyo"."""
        return f"{self.edition_date} {self.zone}"


def plan(zones: Iterable[str], *, send_time: time, now: datetime, lateness: timedelta) -> list[ZonePlan]:
    """Per zone, the newest edition due (older missed ones are coalesced away), oldest due first."""
    plans = []
    for zone in set(zones):
        day, due = latest_due(zone, send_time, now)
        plans.append(ZonePlan(zone, day, due, now - due, now - due > lateness))
    return sorted(plans, key=lambda p: (p.due_at, p.zone))


# --- database: who is in which zone, what is left to do ------------------------------------


def active_zones(*, session: Session, default_zone: str) -> dict[str, int]:
    """Time zones of active subscribers, with how many are in each."""
    rows = session.exec(
        select(Subscriber.timezone, sa.func.count())
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .group_by(Subscriber.timezone)
    ).all()
    zones: dict[str, int] = {}
    for name, count in rows:
        zone = name or default_zone
        zones[zone] = zones.get(zone, 0) + int(count)
    return zones


def known_zones(zones: dict[str, int]) -> dict[str, int]:
    """The zones zoneinfo knows; an unknown one (edited by hand in the database) is logged and left
    out, so its readers wait for a fix instead of stopping everyone else's edition."""
    known = {}
    for zone, count in zones.items():
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            log.error("unknown time zone %r of %d subscriber(s): not sent to until it is fixed", zone, count)
            continue
        known[zone] = count
    return known


def has_work(edition_id: int | None, audience: sa.ColumnElement[bool], *, session: Session) -> bool:
    """True when an active subscriber of `audience` has no row for the edition, or a sendable one."""
    active = select(Subscriber.id).where(Subscriber.status == SubscriberStatus.ACTIVE).where(audience)
    if edition_id is None:
        return session.exec(active.limit(1)).first() is not None
    has_row = sa.exists().where(
        col(Delivery.edition_id) == edition_id, col(Delivery.subscriber_id) == col(Subscriber.id)
    )
    if session.exec(active.where(~has_row).limit(1)).first() is not None:
        return True
    sendable = (
        select(Delivery.id)
        .join(Subscriber, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(col(Delivery.edition_id) == edition_id, col(Delivery.status).in_(SENDABLE))
        .where(audience)
    )
    return session.exec(sendable.limit(1)).first() is not None


def skip_stale(
    edition_id: int, audience: sa.ColumnElement[bool], reason: str, *, session: Session, now: datetime
) -> int:
    """Record the zone's unsent rows of a stale edition as skipped (so nothing sends them later)."""
    ledger.ensure_deliveries(edition_id, session=session, now=now, audience=audience)
    in_zone = select(Subscriber.id).where(audience)
    result = session.execute(
        sa.update(Delivery)
        .where(col(Delivery.edition_id) == edition_id, col(Delivery.status).in_(SENDABLE))
        .where(col(Delivery.subscriber_id).in_(in_zone))
        .values(status=DeliveryStatus.SKIPPED.value, error=reason, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def next_send(
    zone: str, *, settings: Settings, now: datetime, session: Session
) -> tuple[date, datetime, bool]:
    """The edition the scheduler will send `zone` next, when it is due, and whether it is overdue.

    What `dispatch` will do, not only the calendar: the newest edition already due if the zone's
    readers are still waiting for it and it is not stale (the next dispatch sends it), else the
    next date due that they do not all have yet (a manual `digest send` may have sent it early).
    """
    audience = zone_audience(zone, settings.timezone)
    lateness = timedelta(hours=settings.max_lateness_hours)

    def waiting(day: date) -> bool:
        edition = queries.edition_for(day, session=session)
        return has_work(edition.id if edition is not None else None, audience, session=session)

    day, due = latest_due(zone, settings.send_time, now)
    if now - due <= lateness and waiting(day):
        return day, due, True
    day, due = next_due(zone, settings.send_time, now)
    # Editions are built on their date, or ahead by hand: only a few of them can exist ahead.
    while queries.edition_for(day, session=session) is not None and not waiting(day):
        day += timedelta(days=1)
        due = due_at(zone, day, settings.send_time)
    return day, due, False


# --- the run log ----------------------------------------------------------------------------


def start_run(
    engine: sa.Engine, *, job: str, key: str, scheduled_for: datetime, owner: str, now: datetime
) -> int:
    """Record that a run started (status `running`); returns its id."""
    with session_scope(engine) as session:
        run = ScheduleRun(
            job=job, key=key, scheduled_for=scheduled_for, started_at=now, status="running", owner=owner
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def finish_run(engine: sa.Engine, run_id: int, *, status: str, detail: str, now: datetime) -> None:
    """Record how a run ended: ok, partial, failed, skipped or interrupted."""
    with session_scope(engine) as session:
        run = session.get(ScheduleRun, run_id)
        if run is not None:
            run.status, run.detail, run.finished_at = status, detail, now
            session.add(run)


def record_run(
    engine: sa.Engine,
    *,
    job: str,
    key: str,
    scheduled_for: datetime,
    owner: str,
    now: datetime,
    status: str,
    detail: str,
) -> None:
    """Record a run that ended as soon as it began (a skip)."""
    with session_scope(engine) as session:
        session.add(
            ScheduleRun(
                job=job,
                key=key,
                scheduled_for=scheduled_for,
                started_at=now,
                finished_at=now,
                status=status,
                detail=detail,
                owner=owner,
            )
        )


def mark_abandoned_runs(engine: sa.Engine, *, now: datetime) -> int:
    """Runs left `running` by a scheduler that died: `interrupted` (called by the new lease holder)."""
    with session_scope(engine) as session:
        result = session.execute(
            sa.update(ScheduleRun)
            .where(col(ScheduleRun.status) == "running")
            .values(status="interrupted", finished_at=now, detail="the scheduler stopped during this run")
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def recent_runs(*, session: Session, limit: int = 10, job: str | None = None) -> list[ScheduleRun]:
    """Newest runs first."""
    query = select(ScheduleRun).order_by(col(ScheduleRun.started_at).desc(), col(ScheduleRun.id).desc())
    if job is not None:
        query = query.where(ScheduleRun.job == job)
    return list(session.exec(query.limit(limit)))


def prune_runs(*, session: Session, before: datetime) -> int:
    """Forget finished runs older than `before`."""
    result = session.execute(
        sa.delete(ScheduleRun).where(
            col(ScheduleRun.started_at) < before, col(ScheduleRun.status) != "running"
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- the quarter-hourly run -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZoneResult:
    """What one dispatch did for one zone."""

    plan: ZonePlan
    status: str  # ok, partial (some recipients failed), failed, skipped, interrupted
    detail: str
    report: SendReport | None = None


def dispatch(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock,
    runner: Runner,
    owner: str,
    collect: Callable[[], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[ZoneResult]:
    """Send each zone the newest edition due now, once, through `runner`; skip and record what
    is stale."""
    now = clock()
    lateness = timedelta(hours=settings.max_lateness_hours)
    with session_scope(engine) as session:
        zones = known_zones(active_zones(session=session, default_zone=settings.timezone))
    results: list[ZoneResult] = []
    collected = False
    # Zones to send first, so a stale zone sees an edition built in this same run and records
    # its readers' rows as skipped.
    for p in sorted(
        plan(zones, send_time=settings.send_time, now=now, lateness=lateness), key=lambda p: p.stale
    ):
        if should_stop is not None and should_stop():
            break
        audience = zone_audience(p.zone, settings.timezone)
        with session_scope(engine) as session:
            edition = queries.edition_for(p.edition_date, session=session)
            edition_id = edition.id if edition is not None else None
            if not has_work(edition_id, audience, session=session):
                continue
        if p.stale:
            skip = _skip_zone(engine, p, edition_id, audience, settings=settings, owner=owner, now=now)
            if skip is not None:
                results.append(skip)
            continue
        if settings.require_approval:  # issue 14: wait for the editor, until the deadline
            with session_scope(engine) as session:
                gate = approval.verdict(settings, p.edition_date, session=session, now=now)
            if gate.action == "wait":
                log.info("%s: %s", p.key, gate.reason)
                continue
            if gate.action == "skip":
                skip = _skip_zone(
                    engine,
                    p,
                    edition_id,
                    audience,
                    settings=settings,
                    owner=owner,
                    now=now,
                    reason=gate.reason,
                )
                if skip is not None:
                    results.append(skip)
                continue
        if edition_id is None and collect is not None and not collected:
            collect()  # fresh stories just before the edition is frozen
            collected = True
        results.append(
            _send_zone(
                settings,
                newsletter,
                p,
                engine=engine,
                clock=clock,
                runner=runner,
                owner=owner,
                should_stop=should_stop,
            )
        )
    return results


def _skip_zone(
    engine: sa.Engine,
    p: ZonePlan,
    edition_id: int | None,
    audience: sa.ColumnElement[bool],
    *,
    settings: Settings,
    owner: str,
    now: datetime,
    reason: str | None = None,
) -> ZoneResult | None:
    reason = reason or (
        f"stale: edition {p.edition_date} for {p.zone} was due at {p.due_at:%Y-%m-%d %H:%M} UTC, "
        f"{p.late.total_seconds() / 3600:.1f} h ago (limit {settings.max_lateness_hours:g} h)"
    )
    with session_scope(engine) as session:
        skipped = skip_stale(edition_id, audience, reason, session=session, now=now) if edition_id else 0
        recorded = session.exec(
            select(ScheduleRun.id).where(ScheduleRun.key == p.key, ScheduleRun.status == "skipped")
        ).first()
    if recorded is None:
        log.warning("%s", reason)
        record_run(
            engine,
            job="send",
            key=p.key,
            scheduled_for=p.due_at,
            owner=owner,
            now=now,
            status="skipped",
            detail=reason,
        )
    elif not skipped:
        return None  # already recorded, nothing new
    return ZoneResult(p, "skipped", reason)


def _send_zone(
    settings: Settings,
    newsletter: Newsletter,
    p: ZonePlan,
    *,
    engine: sa.Engine,
    clock: Clock,
    runner: Runner,
    owner: str,
    should_stop: Callable[[], bool] | None,
) -> ZoneResult:
    run_id = start_run(engine, job="send", key=p.key, scheduled_for=p.due_at, owner=owner, now=clock())
    try:
        report = pipeline.send(
            settings,
            newsletter,
            engine=engine,
            edition_date=p.edition_date,
            clock=clock,
            runner=runner,
            zone=p.zone,
            should_stop=should_stop,
        )
    except DigestError as e:
        log.error("%s failed: %s", p.key, e)
        finish_run(engine, run_id, status="failed", detail=str(e), now=clock())
        return ZoneResult(p, "failed", str(e))
    except BaseException as e:  # a bug or a kill: record it, then let it propagate
        finish_run(engine, run_id, status="failed", detail=f"{type(e).__name__}: {e}", now=clock())
        raise
    detail = (
        f"{report.story_count} stories; sent {report.sent}, failed {report.failed}, "
        f"to retry {report.retry}, skipped {report.skipped}, unknown {report.unknown}"
    )
    with session_scope(engine) as session:
        edition = queries.edition_for(p.edition_date, session=session)
        assert edition is not None
        assert edition.id is not None
        left = has_work(edition.id, zone_audience(p.zone, settings.timezone), session=session)
    stopped = should_stop is not None and should_stop()
    status = "interrupted" if stopped and left else "partial" if report.needs_attention else "ok"
    if status == "interrupted":
        detail += "; stopped before the rest (they go out when the scheduler runs again)"
    log.info("%s %s: %s", p.key, status, detail)
    finish_run(engine, run_id, status=status, detail=detail, now=clock())
    return ZoneResult(p, status, detail, report)
