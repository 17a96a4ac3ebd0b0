"""What every command shares: the Typer apps, the consoles, one-line errors, the database."""

import functools
import logging
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from digest.cli import help_labels  # noqa: F401  (flags without <bool> labels in --help)
from digest.cli.lazy import LazyGroup, serve
from digest.clock import Clock, local_date, system_clock
from digest.errors import DigestError

if TYPE_CHECKING:  # imported where used: a command imports only what it needs (cli/lazy.py)
    import sqlalchemy as sa

    from digest.config import Settings
    from digest.newsletter import Newsletter

app = serve(
    typer.Typer(
        cls=LazyGroup,
        help="digest: collect feeds, build one good daily email, send it exactly once.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Markdown joins a docstring's wrapped lines into paragraphs that fit the terminal (rich mode
        # keeps every line break of the source, which breaks lines mid-sentence at 80 columns).
        rich_markup_mode="markdown",
    )
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


@dataclass(frozen=True, slots=True)
class Door:
    """What the caller of the CLI hands every command: the clock (tests pass `obj=Door(clock=...)`)."""

    clock: Clock = system_clock


# Set by the root callback from the Typer context's `obj` for the command it runs.
_door: ContextVar[Door | None] = ContextVar("digest_cli_door", default=None)


def current_clock() -> Clock:
    """The clock of the running command: the one given through the Typer context, else the real one."""
    door = _door.get()
    return door.clock if door is not None else system_clock


def current_time() -> datetime:
    """`now` for the running command, read once from its clock."""
    return current_clock()()


def friendly(func: F) -> F:
    """Turn a DigestError into one line on stderr and exit status 1; no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DigestError as e:
            # escape: the message quotes outside text ("[/x]" in a CSV must not be Rich markup)
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            while _engines:
                _engines.pop().dispose()

    return wrapper  # type: ignore[return-value]


_engines: list["sa.Engine"] = []


def command_engine(settings: "Settings") -> "sa.Engine":
    """The migrated database of this command; disposed when the command ends."""
    from digest.db.engine import open_database

    engine = open_database(settings.database_url)
    _engines.append(engine)
    return engine


def settings_and_newsletter() -> tuple["Settings", "Newsletter"]:
    """The settings (environment and .env) and the newsletter file they name."""
    from digest.config import load_settings
    from digest.newsletter import load_newsletter

    settings = load_settings()
    return settings, load_newsletter(settings.config)


def _sending_setup() -> tuple["Settings", "Newsletter"]:
    """`settings_and_newsletter` for a command that sends mail: the starter's placeholder sender and postal
    address are refused for smtp and sendgrid (issue 14)."""
    from digest.cli.starter import placeholder_problem

    settings, newsletter = settings_and_newsletter()
    problem = placeholder_problem(settings, newsletter)
    if problem is not None:
        raise DigestError(problem)
    return settings, newsletter


def print_warnings(settings: "Settings") -> None:
    """Print what the settings allow but the operator should know (one line each, on stderr)."""
    from digest.config import startup_warnings

    for line in startup_warnings(settings):
        err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def edition_date_option(settings: "Settings", value: str | None) -> date:
    """The edition date a --date option names; today in DIGEST_TIMEZONE without one."""
    if value is None:
        return local_date(settings.zone, current_time())
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DigestError(f"--date: {value!r} is not a date like 2026-11-25") from None


DateOpt = Annotated[
    str | None,
    typer.Option("--date", help="Edition date (YYYY-MM-DD) in DIGEST_TIMEZONE; default today."),
]


class _PlainFormatter(logging.Formatter):
    """`warning: message`, as the CLI writes its own warnings."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one plain line (a traceback, if any, follows it)."""
        line = f"{record.levelname.lower()}: {record.getMessage()}"
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:  # a warning reads like the CLI's own lines, no time stamp or module (issue 14)
        handler.setFormatter(_PlainFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    _door.set(ctx.obj if isinstance(ctx.obj, Door) else Door())
    from digest.config import settings_warnings

    for line in settings_warnings(os.environ):  # a misspelt DIGEST_* name is otherwise ignored
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
