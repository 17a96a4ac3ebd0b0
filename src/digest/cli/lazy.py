"""The root command group, which imports a command's module only when that command is used.

`digest --help` used to import every module of digest (SQLAlchemy, pydantic, Jinja, SendGrid,
Alembic...: 0.9 s) to list the commands. The group below knows each command's module and the
line the root help shows for it (COMMANDS), so `digest --help` imports Typer and Rich alone, and
`digest status` the modules `status` uses (issue 15). tests/test_cli_startup.py checks COMMANDS
against the commands themselves: the root help of this group and of the fully imported CLI are
the same text.
"""

import importlib
import sys
from typing import Any

import typer
from typer import _click as click  # Typer (0.29) carries its own click: its groups are built on it
from typer.core import TyperCommand, TyperGroup

# The root Typer app, handed over by cli/common.py where it is made (`serve`): this module never
# imports cli/common.py, which imports it (issue 13: no import circle).
_APP: list[typer.Typer] = []


def serve(app: typer.Typer) -> typer.Typer:
    """Make `app` the root app whose deferred commands this group imports when used."""
    _APP[:] = [app]
    return app


# Command (or group) -> (module of digest.cli that defines it, what `digest --help` shows of it:
# the first paragraph of its help).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("daily", "Create a starter digest.toml and .env (never overwrites)."),
    "collect": (
        "daily",
        "Fetch every source in digest.toml and store new stories; a table says how each source did.",
    ),
    "preview": ("daily", "Render exactly what a subscriber would receive for a date, without sending."),
    "send": ("daily", "Send the edition of a date to every subscriber who has not received it."),
    "run": ("daily", "The daily job: collect every source, then send the edition."),
    "stats": (
        "operations",
        "Per edition: recipients, sent, failed, unknown, unsubscribes by method, unsubscribe rate.",
    ),
    "serve": (
        "operations",
        "Run the web app (sign-up, unsubscribe, preferences, archive, /healthz) and, unless told "
        "not to, the scheduler. SIGTERM stops both; a batch being sent is finished first.",
    ),
    "worker": (
        "operations",
        "Run a Celery worker that sends batches of editions and fetches sources (distributed mode: "
        "needs DIGEST_BROKER_URL and PostgreSQL). Start any number, on any machines; `digest send`, "
        "`digest collect`, `digest run` and the scheduler queue the work.",
    ),
    "schedule": (
        "operations",
        "Run the scheduler alone: collect hourly; each subscriber gets the edition at "
        "DIGEST_SEND_TIME in their own time zone. SIGTERM finishes the batch being sent, then exits.",
    ),
    "status": (
        "status",
        "Show the scheduler (who holds the lease, next runs, each time zone's next send, last runs), "
        "the sources that need looking at (failing or malformed) and the latest edition's progress, "
        "per worker in distributed mode.",
    ),
    "topics": (
        "operations",
        "Show each story waiting for the next edition: its topic, why, and whether it makes the cut.",
    ),
    "unsubscribe-mail": (
        "mail",
        "Process unsubscribe requests sent to DIGEST_UNSUBSCRIBE_MAILTO, read from "
        "DIGEST_UNSUBSCRIBE_MAILBOX (maildir:/path or imaps://user@host/INBOX). Run it from cron.",
    ),
    "bounces": (
        "mail",
        "Process the bounce reports relays mail back after a send (DSNs, and Exim's, qmail's and "
        "Exchange's own formats), read from DIGEST_BOUNCE_MAILBOX (maildir:/path or "
        "imaps://user@host/INBOX). A hard failure suppresses the reader at once; soft ones (a full "
        "mailbox, 4.x.x) after DIGEST_SOFT_BOUNCE_LIMIT editions in a row. Each message is marked "
        "seen once applied; reports we cannot tie to a delivery we sent change nothing and are "
        "listed. Run it from cron.",
    ),
    "db": ("daily", "Database schema."),
    "subscribers": ("subscribers", "Manage the subscriber list."),
    "sources": ("operations", "Inspect sources."),
    "edition": (
        "desk",
        "The editor's desk: change the day's draft before it is frozen, then approve it.",
    ),
}


def _loaded(module: str) -> bool:
    return f"digest.cli.{module}" in sys.modules


class _Deferred(TyperCommand):
    """A command whose module is not imported yet: its name and help line, until it is used."""

    def __init__(self, name: str, module: str, help_line: str) -> None:
        super().__init__(name, help=help_line)
        self.module = module

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """Import the module, then hand over to the real command (its options, its own help)."""
        import gc

        import typer.main

        importlib.import_module(f"digest.cli.{self.module}")
        gc.freeze()  # the command's imports live until exit too (see digest.cli.main)
        gc.enable()  # off while importing (digest.cli.main); on for the command's own work
        real = typer.main.get_command(_APP[0])
        assert isinstance(real, TyperGroup) and self.name is not None
        command: click.Command = real.commands[self.name]
        return command.make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """The root group: every command of COMMANDS, the ones not imported yet as _Deferred."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        ordered: dict[str, click.Command] = {}
        for name, (module, help_line) in COMMANDS.items():
            known = self.commands.get(name)
            ready = known is not None and _loaded(module)
            ordered[name] = known if ready and known is not None else _Deferred(name, module, help_line)
        ordered.update((name, c) for name, c in self.commands.items() if name not in ordered)
        self.commands = ordered
