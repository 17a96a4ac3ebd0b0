"""When each time zone is due its edition, and the runs that send it: once per reader, never stale.

Each subscriber receives edition D at DIGEST_SEND_TIME on day D in their own time zone (no time
zone means DIGEST_TIMEZONE). Edition D is built and frozen when the first zone is due, so readers
further west get the same content hours later and every story reaches every reader exactly once:
stories that arrive after the build go into D+1. The scheduler calls `dispatch` every quarter
hour (every zone offset is a multiple of 15 minutes); each call sends, per zone, only the newest
edition due, so missed runs after downtime are caught up once. An edition due longer ago than
DIGEST_MAX_LATENESS_HOURS is stale: not sent to that zone at all, and recorded as skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.clock import Clock
from digest.config import Settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, ScheduleRun, Subscriber
from digest.db.queries import SENDABLE, zone_audience
from digest.deliver import ledger
from digest.deliver.journal import SendReport
from digest.errors import DigestError
from digest.newsletter import Newsletter
from digest.schedule import approval
from digest.schedule.pending import active_zones, has_work, known_zones
from digest.schedule.runs import finish_run, record_run, start_run
from digest.schedule.zones import ZonePlan, plan

if TYPE_CHECKING:  # the runner and the pipeline load the stages: `digest status` needs neither
    from digest.runners.base import Runner

log = logging.getLogger(__name__)

# --- database: what is left to do ----------------------------------------------------------


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
        from digest import pipeline  # a send loads every stage: only when one is due

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
