"""APScheduler 3.x wiring: hourly collection and the daily edition at DIGEST_SEND_TIME."""

import logging

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest import pipeline
from digest.config import Newsletter, Settings
from digest.deliver.transports import make_transport

log = logging.getLogger(__name__)

COLLECT_EVERY_HOURS = 1
# APScheduler's default grace is 1 s: a busy or sleeping machine would skip the day's edition.
MISFIRE_GRACE_SECONDS = 6 * 3600


def daily_job(settings: Settings, newsletter: Newsletter, engine: sa.Engine) -> None:
    """Collect, then send today's edition."""
    now = pipeline.utc_now()
    pipeline.collect(newsletter, engine=engine, now=now)
    report = pipeline.send_edition(
        settings,
        newsletter,
        engine=engine,
        transport=make_transport(settings, clock=pipeline.utc_now),
        edition_date=pipeline.today(settings, now),
        clock=pipeline.utc_now,
    )
    log.info("daily run edition=%s sent=%d failed=%d", report.edition_date, report.sent, report.failed)


def collect_job(newsletter: Newsletter, engine: sa.Engine) -> None:
    """Collect every source."""
    pipeline.collect(newsletter, engine=engine, now=pipeline.utc_now())


def configure(
    scheduler: BaseScheduler, settings: Settings, newsletter: Newsletter, engine: sa.Engine
) -> None:
    """Add the two jobs to a scheduler."""
    common = {"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS}
    scheduler.add_job(
        collect_job,
        IntervalTrigger(hours=COLLECT_EVERY_HOURS),
        args=(newsletter, engine),
        id="collect",
        replace_existing=True,
        **common,
    )
    scheduler.add_job(
        daily_job,
        CronTrigger(hour=settings.send_time.hour, minute=settings.send_time.minute, timezone=settings.zone),
        args=(settings, newsletter, engine),
        id="daily",
        replace_existing=True,
        **common,
    )


def start_background(settings: Settings, newsletter: Newsletter, *, engine: sa.Engine) -> BackgroundScheduler:
    """A running scheduler in a background thread (for `digest serve`)."""
    scheduler = BackgroundScheduler(timezone=settings.zone)
    configure(scheduler, settings, newsletter, engine)
    scheduler.start()
    return scheduler


def run_blocking(settings: Settings, newsletter: Newsletter, *, engine: sa.Engine) -> None:
    """Run the scheduler in the foreground until interrupted (for `digest schedule`)."""
    scheduler = BlockingScheduler(timezone=settings.zone)
    configure(scheduler, settings, newsletter, engine)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        scheduler.shutdown(wait=True)
