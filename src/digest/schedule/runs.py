"""The scheduler's run log (table schedulerun): each job run and each zone's send, started,
finished or skipped, so `digest status` and a takeover know what happened."""

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.engine import session_scope
from digest.db.models import ScheduleRun

log = logging.getLogger(__name__)

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
