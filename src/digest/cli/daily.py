"""The daily job's commands: init, db upgrade, collect, preview, send, run."""

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import sqlalchemy as sa
import typer

from digest import pipeline
from digest.cli.common import (
    DateOpt,
    _sending_setup,
    app,
    command_engine,
    current_clock,
    current_time,
    db_app,
    edition_date_option,
    err,
    friendly,
    out,
    print_warnings,
    settings_and_newsletter,
)
from digest.cli.progress import fetch_progress, send_progress
from digest.cli.reports import LIST_EVERY_SOURCE_UP_TO, print_collect, print_seeds, print_send
from digest.config import Settings, load_settings
from digest.errors import DigestError
from digest.newsletter import Newsletter
from digest.runners.base import make_runner

if TYPE_CHECKING:  # `digest collect` must not load the delivery stage
    from digest.sources.collect import SourceResult


@app.command()
@friendly
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the files.")] = Path("."),
) -> None:
    """Create a starter digest.toml and .env (never overwrites).

    Example: digest init
    """
    from digest.cli.starter import write_starter_files

    for path, created in write_starter_files(directory):
        out.print(f"{'created' if created else 'kept existing'} {path}")
    out.print("next: edit digest.toml (title, sender, postal address, topics, sources), then")
    for step in NEXT_STEPS:
        out.print(f"  {step}", highlight=False)


# What a new operator runs after `digest init` (issue 14): readers, stories, a look at the email.
NEXT_STEPS = (
    "digest subscribers add you@example.com   # or: subscribers import FILE",
    "digest collect                           # fetch the sources",
    "digest preview --open                    # the email; then: digest send",
)


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on first use).

    Example: digest db upgrade
    """
    settings = load_settings()
    command_engine(settings)
    out.print("database is up to date")


AllOpt = Annotated[
    bool,
    typer.Option(
        "--all",
        help=f"List every source in the table (above {LIST_EVERY_SOURCE_UP_TO} sources, only failed "
        "and malformed ones are listed).",
    ),
]


@app.command()
@friendly
def collect(every: AllOpt = False) -> None:
    """Fetch every source in digest.toml and store new stories; a table says how each source did.

    With more than 30 sources the table lists only those that failed or are malformed (--all lists
    every one). A failing source is reported and the others are collected; a malformed feed (cut off, not
    well-formed) has what could be read stored and is reported "malformed" with the parser's
    reason. The exit status is 1 only when every source failed. `digest sources list` shows each
    source's health over time. With DIGEST_BROKER_URL set, `digest worker` processes fetch and
    parse the sources (one task each) and this command stores what they found;
    DIGEST_COLLECT_WAIT_SECONDS bounds the wait.

    Example: digest collect
    """
    settings, newsletter = settings_and_newsletter()
    engine = command_engine(settings)
    with fetch_progress(newsletter) as (on_fetched, _):
        results = pipeline.collect(
            newsletter,
            engine=engine,
            clock=current_clock(),
            runner=make_runner(settings),
            on_fetched=on_fetched,
        )
    print_collect(results, every=every)
    if results and all(r.status == "failed" for r in results):
        raise DigestError("every source failed; see the table above")


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
            "part, reloading when a template changes, and the editor's desk at /desk.",
        ),
    ] = False,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="With --serve: interface to listen on (not 127.0.0.1: needs DIGEST_ADMIN_TOKEN)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="With --serve: port to listen on.")] = 8025,
) -> None:
    """Render exactly what a subscriber would receive for a date, without sending.

    Example: digest preview --date 2026-11-25 --format html --output preview.html --open

    Example: digest preview --serve --open
    """
    if fmt not in ("html", "text", "eml", "mjml", "json"):
        raise DigestError(f"--format: {fmt!r} is not one of html, text, eml, mjml, json")
    settings, newsletter = settings_and_newsletter()
    engine = command_engine(settings)
    if serve_:
        _serve_preview(settings, newsletter, engine=engine, host=host, port=port, open_browser=open_)
        return
    now = current_time()
    result = pipeline.preview(
        settings,
        newsletter,
        engine=engine,
        edition_date=edition_date_option(settings, date_),
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
        import webbrowser  # ~5 ms (it loads shutil's archive codecs): only a preview opens a browser

        webbrowser.open(output.resolve().as_uri())


def _serve_preview(
    settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, host: str, port: int, open_browser: bool
) -> None:
    import uvicorn

    from digest.web.desk import check_bind
    from digest.web.preview import create_preview_app

    check_bind(host, settings)
    url = f"http://{host}:{port}/"
    err.print(f"preview server on {url} (Ctrl-C to stop); edit a template and the page reloads")
    err.print(
        f"editor's desk on {url}desk" + (" (sign in with DIGEST_ADMIN_TOKEN)" if settings.admin_token else "")
    )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    app = create_preview_app(settings, newsletter, engine=engine, clock=current_clock())
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _queueing(settings: Settings, edition_date: date) -> None:
    """Say that the send waits on the workers (distributed mode)."""
    if settings.broker_url is not None:
        out.print(f"queueing edition {edition_date} for the workers on {settings.broker_queue}; waiting")


@app.command()
@friendly
def send(
    date_: DateOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Count what a send would do now (readers who already have it are not sent again; "
            "unsubscribed and bounced readers are left out), building every message; send and save "
            "nothing.",
        ),
    ] = False,
    resend_unknown: Annotated[
        bool,
        typer.Option("--resend-unknown", help="Also send messages whose fate a crash left unknown."),
    ] = False,
    test: Annotated[
        str | None,
        typer.Option(
            "--test",
            help="Send only to these addresses (comma-separated), subject marked [Test]: the draft "
            "if not frozen yet; nothing is recorded and the real send is not touched.",
        ),
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="With --test: that subscriber's copy (address or id): their name, topics and "
            "links, which act for them.",
        ),
    ] = None,
) -> None:
    """Send the edition of a date to every subscriber who has not received it.

    Exit status (for cron): 0 all done; 1 an error stopped the send (nothing is lost: run it
    again); 3 some recipients failed, wait for a retry, or are unknown after a crash.
    DIGEST_SEED_ADDRESSES get each edition once, outside the counts.

    Example: digest send --date 2026-11-25

    Example: digest send --test me@example.com --as reader@example.com
    """
    settings, newsletter = settings_and_newsletter() if dry_run else _sending_setup()
    engine = command_engine(settings)
    edition_date = edition_date_option(settings, date_)
    if test is not None or as_ is not None:
        from digest.cli import desk  # the test send's door, loaded for it only

        desk.test_send(settings, newsletter, engine, edition_date, to=test, as_reader=as_)
        return
    if dry_run:
        report = pipeline.dry_run(
            settings,
            newsletter,
            engine=engine,
            edition_date=edition_date,
            clock=current_clock(),
        )
        out.print(
            f"dry run: {report.story_count} stories; would send {report.sent}, skip {report.skipped}"
            + (f"; already sent to {report.already}" if report.already else "")
            + (
                f"; unknown {report.unknown} (sent again only with --resend-unknown)"
                if report.unknown
                else ""
            ),
            soft_wrap=True,
        )
        return
    print_warnings(settings)
    _queueing(settings, edition_date)
    with send_progress(settings) as on_progress:
        report = pipeline.send(
            settings,
            newsletter,
            engine=engine,
            edition_date=edition_date,
            clock=current_clock(),
            runner=make_runner(settings),
            resend_unknown=resend_unknown,
            on_progress=on_progress,
        )
    print_send(report)
    if settings.transport == "file" and settings.broker_url is None:
        out.print(f"messages are in {settings.outbox_dir.resolve()}", soft_wrap=True)
    print_seeds(report.seeds)
    if report.needs_attention:
        raise typer.Exit(3)


@app.command()
@friendly
def run(date_: DateOpt = None, every: AllOpt = False) -> None:
    """The daily job: collect every source, then send the edition.

    Exit status (for cron): 0 all done; 1 an error stopped the job (nothing is lost: run it
    again); 3 some recipients failed, wait for a retry, or are unknown after a crash. A source
    that fails is reported in the table and does not change the status (the others are sent).

    Example: digest run
    """
    settings, newsletter = _sending_setup()
    engine = command_engine(settings)
    edition_date = edition_date_option(settings, date_) if date_ is not None else None
    with fetch_progress(newsletter) as (on_fetched, end_progress), send_progress(settings) as on_sent:

        def collected(results: "list[SourceResult]", day: date) -> None:
            end_progress()
            print_collect(results, every=every)
            print_warnings(settings)
            _queueing(settings, day)

        report = pipeline.run(
            settings,
            newsletter,
            engine=engine,
            clock=current_clock(),
            edition_date=edition_date,
            runner=make_runner(settings),
            on_fetched=on_fetched,
            on_collected=collected,
            on_progress=on_sent,
        ).sent
    print_send(report)
    if settings.transport == "file":
        out.print(f"messages are in {settings.outbox_dir.resolve()}")
    if report.needs_attention:
        raise typer.Exit(3)
