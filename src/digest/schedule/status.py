"""What `digest status` and /healthz show of the scheduler, read from the database by any process:
who holds the lease, the jobs' next runs, each time zone's next send, the last runs.

Apart from scheduler.py (APScheduler) and dispatch.py (the stages that send): the status of the
scheduler imports neither (issue 15: `digest status` starts in a fraction of a second).
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import sqlalchemy as sa

from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import SchedulerLease, ScheduleRun
from digest.schedule import approval
from digest.schedule.lease import current_holder
from digest.schedule.pending import active_zones, known_zones, next_send
from digest.schedule.runs import recent_runs

JOBS_TABLE = "apscheduler_jobs"  # APScheduler's job store (scheduler.py) keeps each job's next run here


@dataclass(frozen=True, slots=True)
class ZoneNext:
    """A time zone's readers and the next edition the scheduler will send them."""

    zone: str
    subscribers: int
    edition_date: date
    due_at: datetime
    overdue: bool = False  # due already and not sent yet: it goes out at the next dispatch


@dataclass(frozen=True, slots=True)
class Status:
    """What `digest status` shows: who holds the lease, next runs, and the last runs."""

    holder: SchedulerLease | None
    jobs: list[tuple[str, datetime | None]]  # job id, next run (None: paused or not scheduled)
    zones: list[ZoneNext]
    runs: list[ScheduleRun]
    # DIGEST_REQUIRE_APPROVAL (issue 14): the next editions still waiting for it, one line each
    approvals: list[str] = field(default_factory=list)


def status(settings: Settings, *, engine: sa.Engine, now: datetime, runs: int = 10) -> Status:
    """The scheduler's state as stored in the database (works from any process)."""
    table = sa.table(JOBS_TABLE, sa.column("id", sa.String), sa.column("next_run_time", sa.Float))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.id, table.c.next_run_time).order_by(table.c.id)).all()
    jobs = [(str(i), datetime.fromtimestamp(t, UTC) if t is not None else None) for i, t in rows]
    with session_scope(engine) as session:
        zones = known_zones(active_zones(session=session, default_zone=settings.timezone))
        recent = recent_runs(session=session, limit=runs)
        upcoming = [
            ZoneNext(zone, count, *next_send(zone, settings=settings, now=now, session=session))
            for zone, count in zones.items()
        ]
        approvals = [
            gate.reason
            for day in sorted({z.edition_date for z in upcoming})
            if settings.require_approval
            and not (gate := approval.verdict(settings, day, session=session, now=now)).approved
        ]
    return Status(
        holder=current_holder(engine, now),
        jobs=jobs,
        zones=sorted(upcoming, key=lambda z: (z.due_at, z.zone)),
        runs=recent,
        approvals=approvals,
    )


def health(engine: sa.Engine, *, now: datetime) -> dict[str, object]:
    """For /healthz: the database answers, who holds the scheduler lease, the last dispatch run."""
    holder = current_holder(engine, now)
    with session_scope(engine) as session:
        last = recent_runs(session=session, limit=1, job="dispatch")
    return {
        "database": "ok",
        "scheduler": {"owner": holder.owner, "lease_expires": holder.expires_at.isoformat()}
        if holder
        else None,
        "last_dispatch": (
            {"started": last[0].started_at.isoformat(), "status": last[0].status, "detail": last[0].detail}
            if last
            else None
        ),
    }
