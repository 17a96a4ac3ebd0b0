"""Running and watching digest: sources, stats, serve, worker, schedule, topics."""

from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from digest.cli.common import (
    DateOpt,
    _sending_setup,
    app,
    command_engine,
    current_clock,
    current_time,
    edition_date_option,
    err,
    friendly,
    out,
    print_warnings,
    settings_and_newsletter,
    sources_app,
)
from digest.config import load_settings
from digest.config_messages import port_mismatch
from digest.db import queries
from digest.db.engine import open_database, session_scope
from digest.deliver.stats import edition_stats
from digest.editions import explain_topics
from digest.errors import DigestError
from digest.sources.health import source_health


@sources_app.command("list")
@friendly
def sources_list() -> None:
    """Show each source of digest.toml and its health: last success, last error, failure streak, ETag.

    A source whose last run failed, or gave a malformed feed (stored as far as it could be read),
    is flagged; after DIGEST_SOURCE_FAILURE_ALERT runs in a row (default 3) it is FAILING. A source
    the database remembers but digest.toml no longer names is shown as removed.

    Example: digest sources list
    """
    settings, newsletter = settings_and_newsletter()
    engine = command_engine(settings)
    with session_scope(engine) as session:
        rows = source_health(newsletter, session=session, alert=settings.source_failure_alert)
    table = Table(
        "source", "health", "last success", "failures in a row", "last error", "etag", title="Sources"
    )
    stamp = "%Y-%m-%d %H:%M"
    for s in rows:
        error = f"{s.last_error_at.strftime(stamp)}: {s.last_error}" if s.last_error_at else ""
        table.add_row(
            s.name,
            s.label,
            s.last_success_at.strftime(stamp) if s.last_success_at else "never",
            str(s.failure_streak),
            error,
            s.etag or "",
            style="red"
            if s.state == "FAILING"
            else "yellow"
            if s.failing
            else "dim"
            if s.state == "removed"
            else None,
        )
    out.print(table)
    failing = [s.name for s in rows if s.state == "FAILING"]
    if failing:
        alert = settings.source_failure_alert
        err.print(f"{len(failing)} source(s) failed {alert}+ runs in a row: {', '.join(failing)}")


@app.command()
@friendly
def stats(date_: DateOpt = None) -> None:
    """Per edition: recipients, sent, failed, unknown, unsubscribes by method, unsubscribe rate.

    Example: digest stats --date 2026-11-25
    """
    settings = load_settings()
    engine = command_engine(settings)
    with session_scope(engine) as session:
        editions = (
            [e for e in [queries.edition_for(edition_date_option(settings, date_), session=session)] if e]
            if date_
            else queries.recent_editions(session=session, limit=14)
        )
        rows = [edition_stats(e, session=session) for e in editions]
    # Fits 80 columns (issue 14): no vertical rules, short headers, unsubscribes by method below.
    table = Table(
        "edition",
        "stories",
        "readers",
        "sent",
        "failed",
        "retry",
        "unknown",
        "skipped",
        "unsubs",
        "rate",
        title="Editions",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),  # the box's one-space column rule separates the columns
    )
    for s in rows:
        table.add_row(
            str(s.date),
            str(s.stories),
            str(s.recipients),
            str(s.sent),
            str(s.failed),
            str(s.retry),
            str(s.unknown),
            str(s.skipped),
            str(sum(s.unsubscribes.values())),
            f"{s.unsubscribe_rate:.2%}",
        )
    out.print(table)
    for s in rows:
        if s.unsubscribes:
            by_method = ", ".join(f"{m} {n}" for m, n in sorted(s.unsubscribes.items()))
            out.print(f"Unsubscribes, edition {s.date}: {by_method}", highlight=False)
    for s in rows:  # bounces reported later (SMTP refusals, SendGrid events, bounce mail)
        if s.bounces or s.soft_bounces:
            out.print(
                f"Bounces, edition {s.date}: {s.bounces} suppressed, {s.soft_bounces} soft", highlight=False
            )
    for s in rows:  # distributed mode: who sent what (live progress while workers run)
        if s.workers:
            out.print(f"Workers, edition {s.date}:", highlight=False)
            for worker, by_status in sorted(s.workers.items()):
                done = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items()))
                out.print(f"  {worker}: {done}", highlight=False, markup=False)


# --- long-running ---------------------------------------------------------------------------


@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Serve the web app only.")] = False,
) -> None:
    """Run the web app (sign-up, unsubscribe, preferences, archive, /healthz) and, unless told not
    to, the scheduler. SIGTERM stops both; a batch being sent is finished first.

    Example: digest serve --port 8000
    """
    import uvicorn

    from digest.schedule.scheduler import start_background
    from digest.web.app import create_app

    settings, newsletter = _sending_setup()
    print_warnings(settings)
    if mismatch := port_mismatch(settings.base_url, port):
        err.print(f"[yellow]warning:[/] {escape(mismatch)}", highlight=False, soft_wrap=True)
    engine = command_engine(settings)
    app_ = create_app(settings, newsletter, engine=engine, clock=current_clock())
    server = uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="info"))

    def stop_server() -> None:
        server.should_exit = True

    scheduler = (
        None
        if no_scheduler
        else start_background(
            settings, newsletter, engine=engine, clock=current_clock(), also_stop=stop_server
        )
    )
    try:
        server.run()
    finally:
        if scheduler is not None:
            scheduler.stop()  # finishes the batch being sent, records it, releases the lease


@app.command()
@friendly
def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            help="Tasks this worker runs at once: sources fetched side by side; send batches take "
            "turns per process, so DIGEST_SEND_CONCURRENCY and DIGEST_SEND_RATE hold per process.",
        ),
    ] = 8,
    pool: Annotated[
        str,
        typer.Option(
            "--pool",
            help="Celery pool: threads (fetching waits on the network), prefork (one process "
            "per task) or solo (one task at a time).",
        ),
    ] = "threads",
    name: Annotated[str | None, typer.Option("--name", help="Celery node name, e.g. mail1@%h.")] = None,
) -> None:
    """Run a Celery worker that sends batches of editions and fetches sources (distributed mode:
    needs DIGEST_BROKER_URL and PostgreSQL). Start any number, on any machines; `digest send`,
    `digest collect`, `digest run` and the scheduler queue the work.

    Example: digest worker --concurrency 8 --name mail1@%h
    """
    if pool not in ("prefork", "threads", "solo"):
        raise DigestError(f"--pool: {pool!r} is not one of prefork, threads, solo")
    from digest.runners import celery  # imports Celery: only in distributed mode

    settings = load_settings()
    celery.broker_url(settings)  # refuse at once when distributed mode is off
    open_database(settings.database_url).dispose()  # migrate before the first task, not inside it
    celery.run_worker(settings, concurrency=concurrency, pool=pool, name=name)


@app.command()
@friendly
def schedule() -> None:
    """Run the scheduler alone: collect hourly; each subscriber gets the edition at DIGEST_SEND_TIME
    in their own time zone. SIGTERM finishes the batch being sent, then exits.

    Example: digest schedule
    """
    from digest.schedule.scheduler import run_blocking

    settings, newsletter = _sending_setup()
    engine = command_engine(settings)
    run_blocking(settings, newsletter, engine=engine, clock=current_clock())


@app.command()
@friendly
def topics(date_: DateOpt = None) -> None:
    """Show each story waiting for the next edition: its topic, why, and whether it makes the cut.

    "why" names each keyword or pattern that matched and where (title, tags, summary) with the
    topic's score; "also" lists other topics that matched with lower scores.

    Example: digest topics --date 2026-11-25
    """
    settings, newsletter = settings_and_newsletter()
    engine = command_engine(settings)
    rows = explain_topics(
        newsletter,
        engine=engine,
        edition_date=edition_date_option(settings, date_),
        now=current_time(),
        zone=settings.zone,
    )
    table = Table("topic", "story", "sources", "why", "also", "in edition", title=f"{len(rows)} stories")
    for r in rows:
        table.add_row(
            r.topic or "(dropped)",
            r.title,
            ", ".join(r.sources),
            r.reason,
            ", ".join(f"{name} ({score})" for name, score in r.also_matched),
            "yes" if r.in_edition else ("no: dropped" if r.topic is None else "no: over a cap"),
        )
    out.print(table)
