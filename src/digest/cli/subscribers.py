"""`digest subscribers ...`: manage the list."""

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from digest.cli.common import (
    command_engine,
    current_time,
    err,
    friendly,
    out,
    settings_and_newsletter,
    subscribers_app,
)
from digest.config import load_settings
from digest.db.engine import session_scope
from digest.db.models import SubscriberStatus
from digest.errors import SubscriberError
from digest.subscribers.csvfile import export_rows, import_csv, write_csv
from digest.subscribers.roster import add_subscriber, get_subscriber, list_subscribers, remove_subscriber
from digest.subscribers.status import unsubscribe


@subscribers_app.command("add")
@friendly
def subscribers_add(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    name: Annotated[
        str, typer.Option("--name", help="Name used in the greeting: one line, at most 100 characters.")
    ] = "",
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
    settings, newsletter = settings_and_newsletter()
    engine = command_engine(settings)
    with session_scope(engine) as session:
        row = add_subscriber(
            email,
            session=session,
            now=current_time(),
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
        bool, typer.Option("--skip-invalid", help="Import the good rows; print each bad one with its line.")
    ] = False,
    resubscribe: Annotated[
        bool,
        typer.Option("--resubscribe", help="Also reactivate people who unsubscribed, bounced or complained."),
    ] = False,
) -> None:
    """Import subscribers from CSV; a file with bad rows is rejected whole unless --skip-invalid.

    Reads digest's own columns and the exports of Mailchimp, Substack, Buttondown, listmonk and
    Ghost, recognised by their header (which column maps to what: subscribers/README.md).

    Example: digest subscribers import subscribers/example.csv
    """
    settings, newsletter = settings_and_newsletter()
    engine = command_engine(settings)

    def skipped(line: str) -> None:
        # As each is found: every skipped row is named, however many, and none is held.
        err.print(f"skipped invalid: {line}", markup=False, highlight=False, soft_wrap=True)

    with session_scope(engine) as session:
        report = import_csv(
            file,
            session=session,
            now=current_time(),
            known_topics=newsletter.topic_names,
            skip_invalid=skip_invalid,
            resubscribe=resubscribe,
            on_invalid=skipped if skip_invalid else None,
        )
    if report.format != "digest":
        out.print(f"read as a {report.format} export (columns: subscribers/README.md)")
    out.print(
        f"added {report.added}, updated {report.updated}, merged duplicates {report.duplicates}"
        + (f", skipped invalid {report.invalid_count}" if report.invalid_count else "")
    )
    for line in report.kept_out:
        err.print(f"kept out (no consent): {line}", markup=False, highlight=False)
    if report.ignored_columns:
        columns = ", ".join(report.ignored_columns)
        err.print(f"columns not imported: {columns}", markup=False, highlight=False)


@subscribers_app.command("export")
@friendly
def subscribers_export(
    file: Annotated[Path | None, typer.Argument(help="Write here; default stdout.")] = None,
) -> None:
    """Export every subscriber with status and consent (re-importable).

    Example: digest subscribers export subscribers/backup.csv
    """
    settings = load_settings()
    engine = command_engine(settings)
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
    engine = command_engine(settings)
    with session_scope(engine) as session:
        rows = list_subscribers(session=session, status=wanted)
    table = Table("email", "name", "status", "topics", "timezone", title=f"{len(rows)} subscribers")
    for s in rows:
        cells = (s.email, s.name, str(s.status), s.topics.replace("\n", "; ") or "all", s.timezone or "")
        table.add_row(*map(escape, cells))  # a name like "[/x]" is text, not Rich markup
    out.print(table)


@subscribers_app.command("remove")
@friendly
def subscribers_remove(
    email: Annotated[str, typer.Argument(help="The address to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a subscriber and their history (for data-deletion requests); asks first unless --yes.

    Example: digest subscribers remove ana@example.com --yes
    """
    # Deleting cannot be undone and also forgets that they unsubscribed (issue 14: ask first).
    if not yes and not typer.confirm(f"Delete {email} and their whole history? This cannot be undone"):
        err.print("nothing removed")
        raise typer.Exit(1)
    settings = load_settings()
    engine = command_engine(settings)
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
    engine = command_engine(settings)
    with session_scope(engine) as session:
        row = get_subscriber(email, session=session)
        changed = unsubscribe(row, session=session, now=current_time(), method="admin")
    out.print(f"unsubscribed {row.email}" if changed else f"{row.email} was already unsubscribed")
