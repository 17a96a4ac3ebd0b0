"""`digest status`: the scheduler, the sources that need looking at, the latest edition's progress.

A module of its own, importing only what status reads (issue 15): an operator runs it often, and
it must answer in a fraction of a second, without the stages that render or send (Jinja, MJML,
SendGrid, cryptography) or APScheduler. tests/test_cli_startup.py holds it to that.
"""

from collections import Counter
from typing import Annotated
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import typer
from rich.table import Table

from digest.cli.common import app, command_engine, current_time, friendly, out
from digest.config import Settings, load_settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.deliver.stats import edition_stats
from digest.errors import ConfigError
from digest.newsletter import load_newsletter
from digest.schedule.status import status as scheduler_status
from digest.sources.health import source_health


@app.command()
@friendly
def status(
    runs: Annotated[int, typer.Option("--runs", help="How many recent runs to show.")] = 10,
) -> None:
    """Show the scheduler (who holds the lease, next runs, each time zone's next send, last runs), the
    sources that need looking at (failing or malformed) and the latest edition's progress, per
    worker in distributed mode.

    A zone's next send is the edition the scheduler will send it next: one its readers already
    have (a manual `digest send`) is not listed again, and one due but not sent yet is overdue.

    Example: digest status --runs 20
    """
    settings = load_settings()
    engine = command_engine(settings)  # disposed when the command ends
    now = current_time()
    report = scheduler_status(settings, engine=engine, now=now, runs=runs)
    holder = report.holder
    out.print(
        f"scheduler: {holder.owner} (lease until {holder.expires_at:%Y-%m-%d %H:%M:%S} UTC)"
        if holder
        else "scheduler: not running (no one holds the lease)",
        highlight=False,
    )
    _print_sources(settings, engine)
    with session_scope(engine) as session:  # progress of the latest edition, across workers
        recent = queries.recent_editions(session=session, limit=1)
        latest = [edition_stats(e, session=session) for e in recent]
    for s in latest:
        out.print(
            f"edition {s.date}: sent {s.sent} of {s.recipients}, to send or retry {s.retry}, "
            f"failed {s.failed}, unknown {s.unknown}",
            highlight=False,
        )
        for worker, by_status in sorted(s.workers.items()):
            done = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items()))
            out.print(f"  worker {worker}: {done}", highlight=False, markup=False)
    jobs = Table("job", "next run (UTC)", title="Jobs")
    for job, when in report.jobs:
        jobs.add_row(job, f"{when:%Y-%m-%d %H:%M}" if when else "paused")
    out.print(jobs)
    zones = Table("time zone", "subscribers", "next edition", "due (local)", "due (UTC)", title="Next sends")
    for z in report.zones:
        local = z.due_at.astimezone(ZoneInfo(z.zone))
        zones.add_row(
            z.zone, str(z.subscribers), str(z.edition_date), f"{local:%m-%d %H:%M}", f"{z.due_at:%m-%d %H:%M}"
        )
    out.print(zones)
    for z in report.zones:
        if z.overdue:
            out.print(
                f"overdue: edition {z.edition_date} for {z.zone} was due {z.due_at:%m-%d %H:%M} UTC; "
                "the next dispatch sends it",
                highlight=False,
                soft_wrap=True,
            )
    for line in report.approvals:
        out.print(f"waiting: {line}", highlight=False, soft_wrap=True)
    out.print("Last runs (UTC):" if report.runs else "Last runs: none yet")
    for r in report.runs:
        what = f"{r.job} {r.key}" if r.key != r.job else r.job
        out.print(
            f"  {r.started_at:%Y-%m-%d %H:%M:%S}  {what}: {r.status} - {r.detail}  ({r.owner})",
            style="red" if r.status in ("failed", "interrupted", "partial") else None,
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _print_sources(settings: Settings, engine: sa.Engine) -> None:
    """One line for the sources of digest.toml, then one per source that needs looking at."""
    try:
        newsletter = load_newsletter(settings.config)
    except ConfigError as e:  # status still shows the rest
        out.print(f"sources: cannot read {settings.config}: {e}", highlight=False, markup=False)
        return
    with session_scope(engine) as session:
        rows = source_health(newsletter, session=session, alert=settings.source_failure_alert)
    configured = [s for s in rows if s.state != "removed"]
    counts = Counter(s.label if s.failing else s.state for s in configured)
    parts = ", ".join(f"{n} {label}" for label, n in counts.items())
    out.print(f"sources: {len(configured)} in digest.toml ({parts or 'none'})", highlight=False, markup=False)
    for s in configured:
        if s.failing:
            out.print(
                f"  {s.name}: {s.label}: {s.last_error or ''}",
                style="red" if s.state == "FAILING" else "yellow",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
