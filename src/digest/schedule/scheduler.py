"""APScheduler 3.x wiring: a database lease, a job store in the database, and three jobs.

Jobs: `collect` (every DIGEST_COLLECT_EVERY_MINUTES), `dispatch` (every quarter hour: send each
time zone the edition due; see dispatch.py) and `expire` (hourly: unconfirmed sign-ups, old run
records). Only the holder of the lease starts APScheduler; a second scheduler waits as standby.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.clock import Clock, system_clock
from digest.config import Settings
from digest.db.engine import session_scope
from digest.errors import DigestError
from digest.newsletter import Newsletter
from digest.schedule import dispatch, zones
from digest.schedule.lease import Lease, new_owner
from digest.schedule.runs import finish_run, mark_abandoned_runs, prune_runs, start_run
from digest.schedule.status import JOBS_TABLE
from digest.subscribers import optin

if TYPE_CHECKING:  # `digest status` reads this module: the stages load only to run a job
    from digest.deliver.base import Transport

log = logging.getLogger(__name__)

JOB_FUNC = "digest.schedule.scheduler:run_job"
KEEP_RUNS = timedelta(days=30)

# Jobs persisted in the database name a function, not an object: this is how that function finds
# the scheduler running in this process (there is at most one).
_SCHEDULER: Scheduler | None = None


def run_job(name: str) -> None:
    """Entry point of every persisted job: run `name` on this process's scheduler."""
    runner = _SCHEDULER
    if runner is None:
        log.warning("job %s: no scheduler is running in this process", name)
        return
    runner.run_job(name)


def triggers(settings: Settings) -> dict[str, CronTrigger | IntervalTrigger]:
    """The trigger of each job, all in UTC (dispatch works out the local times itself)."""
    minute = settings.send_time.minute % zones.DISPATCH_EVERY_MINUTES
    return {
        "collect": IntervalTrigger(minutes=settings.collect_every_minutes, timezone=UTC),
        "dispatch": CronTrigger(minute=f"{minute}-59/{zones.DISPATCH_EVERY_MINUTES}", timezone=UTC),
        "expire": IntervalTrigger(hours=1, timezone=UTC),
    }


class Scheduler:
    """One scheduler instance: waits for the lease, runs the jobs while it holds it, stops cleanly.

    A door: `clock` is the one clock of this scheduler, read for every decision (the lease, what is
    due, first-seen times) and handed down. APScheduler itself wakes the jobs on the wall clock, so
    a Scheduler that runs APScheduler (`run`) is given the real clock; a test or a simulation that
    steps time calls `run_job` on a leading Scheduler instead.
    """

    def __init__(
        self,
        settings: Settings,
        newsletter: Newsletter,
        *,
        engine: sa.Engine,
        clock: Clock = system_clock,
        transport_factory: Callable[[], Transport] | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings, self.newsletter, self.engine, self.clock = settings, newsletter, engine, clock
        from digest.deliver.transports import make_transport
        from digest.runners.base import make_runner

        # Chosen once: where this scheduler's collects and sends run (runners/).
        self.runner = make_runner(
            settings,
            transport_factory=transport_factory or (lambda: make_transport(settings, clock=clock)),
            batch_size=settings.send_batch_size,
        )
        self.owner = owner or new_owner()
        self.lease = Lease(engine, self.owner, ttl=timedelta(seconds=settings.scheduler_lease_seconds))
        self.stop_event = threading.Event()
        self.leading = False
        self._scheduler: BackgroundScheduler | None = None

    def should_stop(self) -> bool:
        """True once asked to stop or when the lease is lost: finish the batch in hand, then stop."""
        return self.stop_event.is_set() or not self.leading

    def stop(self) -> None:
        """Ask the scheduler to stop (safe from a signal handler)."""
        self.stop_event.set()

    def run(self) -> None:
        """Hold (or wait for) the lease until stopped; while holding it, run the jobs."""
        global _SCHEDULER
        if _SCHEDULER is not None and _SCHEDULER is not self:
            raise DigestError("a scheduler is already running in this process")
        _SCHEDULER = self
        renew_every = self.settings.scheduler_lease_seconds / 3
        standby_logged = False
        try:
            while not self.stop_event.is_set():
                try:
                    held = self.lease.acquire(self.clock())
                except sa.exc.DBAPIError as e:  # database unreachable: stop acting until it is back
                    log.warning("scheduler %s: cannot renew the lease: %s", self.owner, e.orig)
                    held = False
                if held and not self.leading:
                    self._lead()
                    standby_logged = False
                elif not held and self.leading:
                    log.warning("scheduler %s: lost the lease; standing by", self.owner)
                    self._step_down()
                if not held and not standby_logged:
                    log.info("scheduler %s: standby (another scheduler holds the lease)", self.owner)
                    standby_logged = True
                self.stop_event.wait(renew_every)
        finally:
            if self.leading:
                self._step_down()
                self.lease.release()
            log.info("scheduler %s: stopped", self.owner)
            _SCHEDULER = None

    def _lead(self) -> None:
        now = self.clock()
        abandoned = mark_abandoned_runs(self.engine, now=now)
        if abandoned:
            log.warning(
                "scheduler %s: %d run(s) of a previous scheduler were interrupted", self.owner, abandoned
            )
        lateness = int(self.settings.max_lateness_hours * 3600)
        scheduler = BackgroundScheduler(
            timezone=UTC,
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine, tablename=JOBS_TABLE)},
            # One job at a time: a send and a collect never race for the same stories.
            executors={"default": ThreadPoolExecutor(max_workers=1)},
        )
        scheduler.start(paused=True)
        for job_id, trigger in triggers(self.settings).items():
            try:
                job = scheduler.get_job(job_id)
            except LookupError:
                # Stored by a digest whose JOB_FUNC had another path (digest.scheduler before
                # issue 13): it cannot be loaded; add_job below replaces it.
                log.info("scheduler %s: job %s names a function that moved; replacing it", self.owner, job_id)
                job = None
            if job is not None and str(job.trigger) == str(trigger) and job.func_ref == JOB_FUNC:
                continue  # keep its stored next run time: a run missed while down is caught up once
            scheduler.add_job(
                JOB_FUNC,
                trigger,
                args=(job_id,),
                id=job_id,
                name=job_id,
                replace_existing=True,
                coalesce=True,  # several missed runs: run once
                max_instances=1,
                # APScheduler's default grace is 1 s; a send later than the lateness is stale.
                misfire_grace_time=lateness if job_id == "dispatch" else None,
            )
        # Taking over (first start, restart, failover): look for anything due right away.
        scheduler.modify_job("dispatch", next_run_time=now)
        self.leading = True
        self._scheduler = scheduler
        scheduler.resume()
        log.info("scheduler %s: leader; jobs: %s", self.owner, ", ".join(sorted(triggers(self.settings))))

    def _step_down(self) -> None:
        self.leading = False  # a running send stops after its current batch
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    def run_job(self, name: str) -> None:
        """Run one job now if we hold the lease, and record the run."""
        if not self.leading or self.stop_event.is_set():
            return
        now = self.clock()
        run_id = start_run(self.engine, job=name, key=name, scheduled_for=now, owner=self.owner, now=now)
        try:
            detail = {"collect": self._collect, "dispatch": self._dispatch, "expire": self._expire}[name]()
        except DigestError as e:
            log.error("job %s failed: %s", name, e)
            finish_run(self.engine, run_id, status="failed", detail=str(e), now=self.clock())
            return
        except BaseException as e:  # a bug: record it, then let APScheduler log the traceback
            finish_run(
                self.engine, run_id, status="failed", detail=f"{type(e).__name__}: {e}", now=self.clock()
            )
            raise
        status = "interrupted" if self.stop_event.is_set() and name == "dispatch" else "ok"
        finish_run(self.engine, run_id, status=status, detail=detail, now=self.clock())

    def _collect(self) -> str:
        from digest import pipeline

        results = pipeline.collect(self.newsletter, engine=self.engine, clock=self.clock, runner=self.runner)
        failed = [r.name for r in results if r.status == "failed"]
        malformed = [r.name for r in results if r.status == "malformed"]
        new = sum(r.new for r in results)
        return (
            f"{len(results)} sources, {new} new"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + (f"; malformed: {', '.join(malformed)}" if malformed else "")
        )

    def _dispatch(self) -> str:
        results = dispatch.dispatch(
            self.settings,
            self.newsletter,
            engine=self.engine,
            clock=self.clock,
            runner=self.runner,
            owner=self.owner,
            collect=self._collect,
            should_stop=self.should_stop,
        )
        if not results:
            return "nothing due"
        return "; ".join(f"{r.plan.edition_date} {r.plan.zone}: {r.status}" for r in results)

    def _expire(self) -> str:
        now = self.clock()
        with session_scope(self.engine) as session:
            expired = optin.expire_pending(
                session=session, now=now, max_age=timedelta(hours=self.settings.confirm_expiry_hours)
            )
            pruned = prune_runs(session=session, before=now - KEEP_RUNS)
        return f"{expired} unconfirmed sign-up(s) expired, {pruned} old run record(s) pruned"


class SchedulerThread:
    """A Scheduler in a thread (for `digest serve`): `stop()` finishes the batch in hand and joins."""

    def __init__(self, runner: Scheduler) -> None:
        self.runner = runner
        self.thread = threading.Thread(target=runner.run, name="digest-scheduler")

    def start(self) -> SchedulerThread:
        """Start the thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait for the thread (and any send in progress) to finish."""
        self.runner.stop()
        self.thread.join()


def start_background(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock,
    also_stop: Callable[[], None] | None = None,
) -> SchedulerThread:
    """A running scheduler in a background thread (for `digest serve`); signals stop it cleanly,
    and call `also_stop` (the web server's exit)."""
    runner = Scheduler(settings, newsletter, engine=engine, clock=clock)
    stop_on_signals(runner, also_stop=also_stop)
    return SchedulerThread(runner).start()


class Stoppable(Protocol):
    """What a signal stops: a Scheduler."""

    owner: str

    def stop(self) -> None:
        """Stop after the batch in hand."""
        ...


def stop_on_signals(runner: Stoppable, *, also_stop: Callable[[], None] | None = None) -> None:
    """SIGTERM and SIGINT ask `runner` to stop after the batch in hand instead of killing it.

    Under `digest serve`, uvicorn restores this handler and re-raises the signal once the web
    server has stopped, so the scheduler then stops cleanly too. A signal that comes before
    uvicorn listens for signals itself (it does so only once it serves) reaches this handler
    alone: `also_stop` tells the web server to exit as soon as it has started, or it would serve
    on with the scheduler stopped (seen when a SIGTERM followed a start at once).
    """

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "scheduler %s: %s received, finishing the batch in hand",
            runner.owner,
            signal.Signals(signum).name,
        )
        runner.stop()
        if also_stop is not None:
            also_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_blocking(settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, clock: Clock) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C (for `digest schedule`)."""
    runner = Scheduler(settings, newsletter, engine=engine, clock=clock)
    stop_on_signals(runner)
    runner.run()
