"""Thin Typer commands: parse, call one function, format the result."""

import functools
import logging
import sys
import webbrowser
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from digest import pipeline
from digest.config import Newsletter, Settings, load_newsletter, load_settings, signing_keys, startup_warnings
from digest.db import queries
from digest.db.engine import open_database, session_scope
from digest.db.models import Source, SubscriberStatus
from digest.deliver.transports import make_lanes
from digest.editions import explain_topics
from digest.errors import DigestError, SubscriberError
from digest.sources.collect import SourceResult
from digest.stats import edition_stats
from digest.subscribers import (
    add_subscriber,
    export_rows,
    get_subscriber,
    import_csv,
    list_subscribers,
    remove_subscriber,
    unsubscribe,
    write_csv,
)

app = typer.Typer(
    help="digest: collect feeds, build one good daily email, send it exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
subscribers_app = typer.Typer(help="Manage the subscriber list.", no_args_is_help=True)
sources_app = typer.Typer(help="Inspect sources.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(sources_app, name="sources")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn a DigestError into one line on stderr and exit status 1; no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            while _engines:
                _engines.pop().dispose()

    return wrapper  # type: ignore[return-value]


_engines: list[sa.Engine] = []


def _engine(settings: Settings) -> sa.Engine:
    """The migrated database of this command; disposed when the command ends."""
    engine = open_database(settings.database_url)
    _engines.append(engine)
    return engine


def _setup() -> tuple[Settings, Newsletter]:
    settings = load_settings()
    return settings, load_newsletter(settings.config)


def _warn(settings: Settings) -> None:
    for line in startup_warnings(settings):
        err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def _edition_date(settings: Settings, value: str | None) -> date:
    if value is None:
        return pipeline.today(settings, pipeline.utc_now())
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DigestError(f"--date: {value!r} is not a date like 2026-11-25") from None


DateOpt = Annotated[
    str | None,
    typer.Option("--date", help="Edition date (YYYY-MM-DD) in DIGEST_TIMEZONE; default today."),
]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
@friendly
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the files.")] = Path("."),
) -> None:
    """Create a starter digest.toml and .env (never overwrites).

    Example: digest init
    """
    from digest.starter import write_starter_files

    for path, created in write_starter_files(directory):
        out.print(f"{'created' if created else 'kept existing'} {path}")


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on first use).

    Example: digest db upgrade
    """
    settings = load_settings()
    _engine(settings)
    out.print("database is up to date")


@app.command()
@friendly
def collect() -> None:
    """Fetch every source in digest.toml and store new stories; a table says how each source did.

    A failing source is reported and the others are collected; the exit status is 1 only when
    every source failed. `digest sources list` shows each source's health over time.

    Example: digest collect
    """
    settings, newsletter = _setup()
    engine = _engine(settings)
    results = _collect(settings, newsletter, engine)
    _print_collect(results)
    if results and all(r.status == "failed" for r in results):
        raise DigestError("every source failed; see the table above")


def _collect(settings: Settings, newsletter: Newsletter, engine: sa.Engine) -> list[SourceResult]:
    """Collect with a progress bar while fetching, when stdout is a terminal."""
    if not out.is_terminal or not newsletter.sources:
        return pipeline.collect(newsletter, engine=engine, now=pipeline.utc_now(), settings=settings)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("fetching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TextColumn("{task.fields[last]}"), console=out, transient=True) as bar:
        task = bar.add_task("fetch", total=len(newsletter.sources), last="")

        def advance(name: str, error: str | None) -> None:
            bar.update(task, advance=1, last=f"{name}: failed" if error else name)

        return pipeline.collect(
            newsletter, engine=engine, now=pipeline.utc_now(), settings=settings, on_fetched=advance
        )


def _print_collect(results: list[SourceResult]) -> None:
    table = Table("source", "result", "entries", "new", "updated", "error", title="Collection")
    for r in results:
        style = "red" if r.status == "failed" else None
        table.add_row(
            r.name, r.status, str(r.entries), str(r.new), str(r.updated), r.error or "", style=style
        )
    out.print(table)
    failed = sum(r.status == "failed" for r in results)
    out.print(
        f"{len(results)} sources: {sum(r.new for r in results)} new articles, "
        f"{sum(r.updated for r in results)} updated, {failed} failed",
        highlight=False,
    )


@app.command()
@friendly
def preview(
    date_: DateOpt = None,
    subscriber: Annotated[
        str | None,
        typer.Option("--subscriber", help="Render for this subscriber's topics and name."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="html, text, eml, mjml or json (the composed edition).")
    ] = "html",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the result in the default browser.")] = False,
    serve_: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Start a local preview server: recent editions at 375 and 700 px beside the text "
            "part, reloading when a template changes.",
        ),
    ] = False,
    host: Annotated[str, typer.Option("--host", help="With --serve: interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="With --serve: port to listen on.")] = 8025,
) -> None:
    """Render exactly what a subscriber would receive for a date, without sending.

    Example: digest preview --date 2026-11-25 --format html --output preview.html --open

    Example: digest preview --serve --open
    """
    if fmt not in ("html", "text", "eml", "mjml", "json"):
        raise DigestError(f"--format: {fmt!r} is not one of html, text, eml, mjml, json")
    settings, newsletter = _setup()
    engine = _engine(settings)
    if serve_:
        _serve_preview(settings, newsletter, engine=engine, host=host, port=port, open_browser=open_)
        return
    now = pipeline.utc_now()
    result = pipeline.preview(
        settings,
        newsletter,
        engine=engine,
        edition_date=_edition_date(settings, date_),
        now=now,
        subscriber_email=subscriber,
    )
    data: bytes = {
        "html": lambda: result.message.html.encode(),
        "text": lambda: result.message.text.encode(),
        "eml": lambda: result.eml(now),
        "mjml": lambda: result.rendered.mjml.encode(),
        "json": lambda: result.edition.to_json().encode(),
    }[fmt]()
    if open_ and output is None:
        output = settings.var_dir / "preview" / f"{result.edition.date}.{ {'text': 'txt'}.get(fmt, fmt) }"
    if output is None:
        sys.stdout.buffer.write(data)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    if not result.built:
        err.print("note: this edition is not built yet; the preview is a draft of what it would hold now")
    err.print(f"wrote {output}")
    if open_:
        webbrowser.open(output.resolve().as_uri())


def _serve_preview(
    settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, host: str, port: int, open_browser: bool
) -> None:
    import uvicorn

    from digest.preview import create_preview_app

    url = f"http://{host}:{port}/"
    err.print(f"preview server on {url} (Ctrl-C to stop); edit a template and the page reloads")
    if open_browser:
        webbrowser.open(url)
    app = create_preview_app(settings, newsletter, engine=engine)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _send(
    settings: Settings,
    newsletter: Newsletter,
    engine: sa.Engine,
    edition_date: date,
    *,
    resend_unknown: bool = False,
) -> pipeline.SendReport:
    """Send here, or through the workers when DIGEST_BROKER_URL is set."""
    if settings.broker_url is not None:
        from digest import distributed  # imports Celery: only in distributed mode

        out.print(f"queueing edition {edition_date} for the workers on {settings.broker_queue}; waiting")
        return distributed.send_edition(
            settings,
            newsletter,
            engine=engine,
            edition_date=edition_date,
            clock=pipeline.utc_now,
            resend_unknown=resend_unknown,
        )
    lanes = make_lanes(settings, clock=pipeline.utc_now)
    return pipeline.send_edition(
        settings,
        newsletter,
        engine=engine,
        transport=lanes[0],
        lanes=lanes,
        edition_date=edition_date,
        clock=pipeline.utc_now,
        resend_unknown=resend_unknown,
    )


def _print_send(report: pipeline.SendReport) -> None:
    out.print(
        f"edition {report.edition_date}: {report.story_count} stories; sent {report.sent}, "
        f"failed {report.failed}, to retry {report.retry}, skipped {report.skipped}, "
        f"unknown {report.unknown}",
        soft_wrap=True,
    )
    for line in report.failures[:20]:
        err.print(f"  failed: {line}", highlight=False)


@app.command()
@friendly
def send(
    date_: DateOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and count; send and save nothing.")
    ] = False,
    resend_unknown: Annotated[
        bool,
        typer.Option("--resend-unknown", help="Also send messages whose fate a crash left unknown."),
    ] = False,
) -> None:
    """Send the edition of a date to every subscriber who has not received it.

    Exit status (for cron): 0 all done; 1 an error stopped the send (nothing is lost: run it
    again); 3 some recipients failed, wait for a retry, or are unknown after a crash.

    Example: digest send --date 2026-11-25
    """
    settings, newsletter = _setup()
    engine = _engine(settings)
    edition_date = _edition_date(settings, date_)
    if dry_run:
        from digest.deliver.memory import MemoryTransport

        memory = MemoryTransport()
        report = pipeline.dry_run(
            settings,
            newsletter,
            engine=engine,
            transport=memory,
            edition_date=edition_date,
            clock=pipeline.utc_now,
        )
        out.print(f"dry run: {report.story_count} stories; would send {report.sent}, skip {report.skipped}")
        return
    _warn(settings)
    report = _send(settings, newsletter, engine, edition_date, resend_unknown=resend_unknown)
    _print_send(report)
    if report.needs_attention:
        raise typer.Exit(3)


@app.command()
@friendly
def run(date_: DateOpt = None) -> None:
    """The daily job: collect every source, then send the edition.

    Example: digest run
    """
    settings, newsletter = _setup()
    engine = _engine(settings)
    results = _collect(settings, newsletter, engine)
    _print_collect(results)
    _warn(settings)
    report = _send(settings, newsletter, engine, _edition_date(settings, date_))
    _print_send(report)
    if settings.transport == "file":
        out.print(f"messages are in {settings.outbox_dir.resolve()}")
    if report.needs_attention:
        raise typer.Exit(3)


# --- subscribers ----------------------------------------------------------------------------


@subscribers_app.command("add")
@friendly
def subscribers_add(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    name: Annotated[str, typer.Option("--name", help="Name used in the greeting.")] = "",
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="A topic to receive (repeat); none means all."),
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA time zone, e.g. Europe/Paris.")
    ] = None,
    resubscribe: Annotated[
        bool, typer.Option("--resubscribe", help="They asked to come back after leaving.")
    ] = False,
) -> None:
    """Add a subscriber (or update one), active at once.

    Example: digest subscribers add ana@example.com --name Ana --topic "EV industry"
    """
    settings, newsletter = _setup()
    engine = _engine(settings)
    with session_scope(engine) as session:
        row = add_subscriber(
            email,
            session=session,
            now=pipeline.utc_now(),
            known_topics=newsletter.topic_names,
            name=name,
            topics=topic or [],
            timezone=timezone,
            resubscribe=resubscribe,
        )
        out.print(f"subscribed {row.email}")


@subscribers_app.command("import")
@friendly
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV file (format: subscribers/README.md).")],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the good rows, report the bad.")
    ] = False,
    resubscribe: Annotated[
        bool,
        typer.Option("--resubscribe", help="Also reactivate people who unsubscribed, bounced or complained."),
    ] = False,
) -> None:
    """Import subscribers from CSV; a file with bad rows is rejected whole unless --skip-invalid.

    Example: digest subscribers import subscribers/example.csv
    """
    settings, newsletter = _setup()
    engine = _engine(settings)
    with session_scope(engine) as session:
        report = import_csv(
            file,
            session=session,
            now=pipeline.utc_now(),
            known_topics=newsletter.topic_names,
            skip_invalid=skip_invalid,
            resubscribe=resubscribe,
        )
    out.print(f"added {report.added}, updated {report.updated}, merged duplicates {report.duplicates}")
    for line in report.kept_out:
        err.print(f"kept out (no consent): {line}", highlight=False)
    for line in report.invalid:
        err.print(f"skipped invalid: {line}", highlight=False)
    if report.ignored_columns:
        err.print(f"ignored unknown column(s): {', '.join(report.ignored_columns)}", highlight=False)


@subscribers_app.command("export")
@friendly
def subscribers_export(
    file: Annotated[Path | None, typer.Argument(help="Write here; default stdout.")] = None,
) -> None:
    """Export every subscriber with status and consent (re-importable).

    Example: digest subscribers export subscribers/backup.csv
    """
    settings = load_settings()
    engine = _engine(settings)
    with session_scope(engine) as session:
        if file is None:
            write_csv(export_rows(session=session), sys.stdout)
            return
        with file.open("w", encoding="utf-8", newline="") as fh:
            count = write_csv(export_rows(session=session), fh)
    err.print(f"exported {count} subscribers to {file}")


@subscribers_app.command("list")
@friendly
def subscribers_list(
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only this status (active, pending, unsubscribed, ...)."),
    ] = None,
) -> None:
    """List subscribers.

    Example: digest subscribers list --status active
    """
    try:
        wanted = SubscriberStatus(status) if status else None
    except ValueError:
        raise SubscriberError(
            f"--status: {status!r} is not one of {', '.join(s.value for s in SubscriberStatus)}"
        ) from None
    settings = load_settings()
    engine = _engine(settings)
    with session_scope(engine) as session:
        rows = list_subscribers(session=session, status=wanted)
    table = Table("email", "name", "status", "topics", "timezone", title=f"{len(rows)} subscribers")
    for s in rows:
        table.add_row(s.email, s.name, str(s.status), s.topics.replace("\n", "; ") or "all", s.timezone or "")
    out.print(table)


@subscribers_app.command("remove")
@friendly
def subscribers_remove(
    email: Annotated[str, typer.Argument(help="The address to delete.")],
) -> None:
    """Delete a subscriber and their history (for data-deletion requests).

    Example: digest subscribers remove ana@example.com
    """
    settings = load_settings()
    engine = _engine(settings)
    with session_scope(engine) as session:
        remove_subscriber(email, session=session)
    out.print(f"removed {email}")


@subscribers_app.command("unsubscribe")
@friendly
def subscribers_unsubscribe(
    email: Annotated[str, typer.Argument(help="The address to unsubscribe.")],
) -> None:
    """Unsubscribe someone (recorded as done by the admin).

    Example: digest subscribers unsubscribe ana@example.com
    """
    settings = load_settings()
    engine = _engine(settings)
    with session_scope(engine) as session:
        row = get_subscriber(email, session=session)
        changed = unsubscribe(row, session=session, now=pipeline.utc_now(), method="admin")
    out.print(f"unsubscribed {row.email}" if changed else f"{row.email} was already unsubscribed")


# --- sources, stats ------------------------------------------------------------------------


@sources_app.command("list")
@friendly
def sources_list() -> None:
    """Show each source's health: last success, last error, failure streak, ETag.

    A source that failed DIGEST_SOURCE_FAILURE_ALERT runs in a row (default 3) is flagged FAILING.

    Example: digest sources list
    """
    from sqlmodel import select

    settings = load_settings()
    engine = _engine(settings)
    with session_scope(engine) as session:
        rows = list(session.exec(select(Source).order_by(Source.name)))
    alert = settings.source_failure_alert
    table = Table(
        "source", "health", "last success", "failures in a row", "last error", "etag", title="Sources"
    )
    stamp = "%Y-%m-%d %H:%M"
    for s in rows:
        if s.last_fetched_at is None:
            health = "not fetched yet"
        elif s.failure_streak >= alert:
            health = f"FAILING ({s.failure_streak} runs in a row)"
        elif s.failure_streak:
            health = "failed last run"
        else:
            health = "ok"
        error = f"{s.last_error_at.strftime(stamp)}: {s.last_error}" if s.last_error_at else ""
        table.add_row(
            s.name,
            health,
            s.last_success_at.strftime(stamp) if s.last_success_at else "never",
            str(s.failure_streak),
            error,
            s.etag or "",
            style="red" if s.failure_streak >= alert else None,
        )
    out.print(table)
    failing = [s.name for s in rows if s.failure_streak >= alert]
    if failing:
        err.print(f"{len(failing)} source(s) failed {alert}+ runs in a row: {', '.join(failing)}")


@app.command()
@friendly
def stats(date_: DateOpt = None) -> None:
    """Per edition: recipients, sent, failed, unknown, unsubscribes by method, unsubscribe rate.

    Example: digest stats --date 2026-11-25
    """
    settings = load_settings()
    engine = _engine(settings)
    with session_scope(engine) as session:
        editions = (
            [e for e in [queries.edition_for(_edition_date(settings, date_), session=session)] if e]
            if date_
            else queries.recent_editions(session=session, limit=14)
        )
        rows = [edition_stats(e, session=session) for e in editions]
    table = Table(
        "edition",
        "stories",
        "recipients",
        "sent",
        "failed",
        "retry",
        "unknown",
        "skipped",
        "unsubscribes",
        "rate",
        title="Editions",
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
            ", ".join(f"{m} {n}" for m, n in sorted(s.unsubscribes.items())) or "0",
            f"{s.unsubscribe_rate:.2%}",
        )
    out.print(table)
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

    from digest.scheduler import start_background
    from digest.web import create_app

    settings, newsletter = _setup()
    _warn(settings)
    engine = _engine(settings)
    scheduler = None if no_scheduler else start_background(settings, newsletter, engine=engine)
    try:
        uvicorn.run(create_app(settings, newsletter, engine=engine), host=host, port=port, log_level="info")
    finally:
        if scheduler is not None:
            scheduler.stop()  # finishes the batch being sent, records it, releases the lease


@app.command()
@friendly
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Batches this worker sends at once (processes or threads).")
    ] = 1,
    pool: Annotated[
        str, typer.Option("--pool", help="Celery pool: prefork, threads or solo (one process).")
    ] = "prefork",
    name: Annotated[str | None, typer.Option("--name", help="Celery node name, e.g. mail1@%h.")] = None,
) -> None:
    """Run a Celery worker that sends batches of editions (distributed mode: needs DIGEST_BROKER_URL
    and PostgreSQL). Start any number, on any machines; `digest send` queues the work.

    Example: digest worker --concurrency 2
    """
    if pool not in ("prefork", "threads", "solo"):
        raise DigestError(f"--pool: {pool!r} is not one of prefork, threads, solo")
    from digest import distributed  # imports Celery: only in distributed mode

    settings = load_settings()
    distributed.broker_url(settings)  # refuse at once when distributed mode is off
    open_database(settings.database_url).dispose()  # migrate before the first task, not inside it
    distributed.run_worker(settings, concurrency=concurrency, pool=pool, name=name)


@app.command()
@friendly
def schedule() -> None:
    """Run the scheduler alone: collect hourly; each subscriber gets the edition at DIGEST_SEND_TIME
    in their own time zone. SIGTERM finishes the batch being sent, then exits.

    Example: digest schedule
    """
    from digest.scheduler import run_blocking

    settings, newsletter = _setup()
    engine = _engine(settings)
    run_blocking(settings, newsletter, engine=engine)


@app.command()
@friendly
def status(
    runs: Annotated[int, typer.Option("--runs", help="How many recent runs to show.")] = 10,
) -> None:
    """Show the scheduler (who holds the lease, next runs, each time zone's next send, last runs) and
    the latest edition's progress, per worker in distributed mode.

    Example: digest status --runs 20
    """
    from digest.scheduler import status as scheduler_status

    settings = load_settings()
    engine = open_database(settings.database_url)
    now = pipeline.utc_now()
    report = scheduler_status(settings, engine=engine, now=now, runs=runs)
    holder = report.holder
    out.print(
        f"scheduler: {holder.owner} (lease until {holder.expires_at:%Y-%m-%d %H:%M:%S} UTC)"
        if holder
        else "scheduler: not running (no one holds the lease)",
        highlight=False,
    )
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


@app.command()
@friendly
def topics(date_: DateOpt = None) -> None:
    """Show each story waiting for the next edition: its topic, why, and whether it makes the cut.

    "why" names each keyword or pattern that matched and where (title, tags, summary) with the
    topic's score; "also" lists other topics that matched with lower scores.

    Example: digest topics --date 2026-11-25
    """
    settings, newsletter = _setup()
    engine = _engine(settings)
    rows = explain_topics(
        newsletter, engine=engine, edition_date=_edition_date(settings, date_), now=pipeline.utc_now()
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


@app.command("unsubscribe-mail")
@friendly
def unsubscribe_mail() -> None:
    """Process unsubscribe requests sent to DIGEST_UNSUBSCRIBE_MAILTO, read from
    DIGEST_UNSUBSCRIBE_MAILBOX (maildir:/path or imaps://user@host/INBOX). Run it from cron.

    Example: digest unsubscribe-mail
    """
    from digest.tokens import TokenSigner
    from digest.unsubscribe_mail import open_mailbox, process_requests

    settings = load_settings()
    engine = _engine(settings)
    password = settings.unsubscribe_mailbox_password
    box = open_mailbox(settings.unsubscribe_mailbox, password.get_secret_value() if password else None)
    try:
        report = process_requests(
            box, engine=engine, signer=TokenSigner(signing_keys(settings)), now=pipeline.utc_now()
        )
    finally:
        box.close()
    out.print(
        f"read {report.read}, unsubscribed {report.unsubscribed}, already out {report.already}, "
        f"unmatched {len(report.unmatched)}"
    )
    for line in report.unmatched:
        err.print(f"  no subscriber for: {line}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
