"""Where collecting and sending run: one Runner interface, three implementations (issue 13).

`local.py` runs both in this process; `celery.py` queues one task per source and per batch of
the ledger for `digest worker` processes (distributed mode, issue 7); `memory.py` queues the same
tasks in a list and works through them itself (tests; one contract suite, tests/runners/, runs
against all three). A door (the CLI, the scheduler) picks one with `make_runner`, once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from digest.clock import Clock
from digest.config import Settings
from digest.newsletter import Newsletter
from digest.runners.local import LocalRunner

if TYPE_CHECKING:  # a collect does not load the delivery stage (runners/local.py)
    from digest.deliver.base import Transport
    from digest.deliver.journal import SendReport
    from digest.sources.collect import SourceResult

OnFetched = Callable[[str, str | None], None]  # (source name, its error or None) as each answers


class Runner(Protocol):
    """Runs a collect of every source and the send of one edition, somewhere."""

    def collect(
        self, newsletter: Newsletter, *, engine: sa.Engine, clock: Clock, on_fetched: OnFetched | None = None
    ) -> list[SourceResult]:
        """Fetch every source and store new articles as stories, stamped with `clock()` read once
        at the start; one result per source, in digest.toml order."""
        ...

    def send(
        self,
        newsletter: Newsletter,
        *,
        engine: sa.Engine,
        edition_date: date,
        clock: Clock,
        zone: str | None = None,
        resend_unknown: bool = False,
        should_stop: Callable[[], bool] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> SendReport:
        """Send the edition of `edition_date` to every reader (of `zone` only, when given) who has
        not had it, exactly once; `should_stop` ends the send early (SIGTERM). `on_progress` is told
        how many messages each transport call answered, by a runner that sends here (local); a
        runner whose workers send does not call it."""
        ...


def make_runner(
    settings: Settings,
    *,
    transport_factory: Callable[[], Transport] | None = None,
    batch_size: int | None = None,
    parse_workers: int | None = None,
) -> Runner:
    """The runner these settings ask for: the Celery workers when DIGEST_BROKER_URL is set, else
    this process (`transport_factory`, `batch_size` and `parse_workers` only matter there)."""
    if settings.broker_url is not None:
        from digest.runners.celery import CeleryRunner  # imports Celery: only in distributed mode

        return CeleryRunner(settings)
    return LocalRunner(
        settings, transport_factory=transport_factory, batch_size=batch_size, parse_workers=parse_workers
    )
