"""The runner of one process: collect and send here (the default, without DIGEST_BROKER_URL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import sqlalchemy as sa

from digest.clock import Clock
from digest.config import Settings
from digest.db.engine import session_scope
from digest.errors import SettingsError
from digest.newsletter import Newsletter

if TYPE_CHECKING:
    # Each stage loads where its half runs: `digest collect` never imports the delivery stage
    # (Jinja, MJML, SendGrid, cryptography), `digest send` never imports httpx or feedparser.
    from digest.deliver.base import Transport
    from digest.deliver.journal import SendReport
    from digest.sources.collect import SourceResult


@dataclass(frozen=True)
class LocalRunner:
    """Collects and sends in this process. Without settings it collects with the default fetch
    options (tests) and cannot send.

    `transport_factory` makes a send's first connection (default: one from the settings, with
    the send's clock); `batch_size` is how many ledger rows are read at once (default
    DIGEST_SEND_BATCH_SIZE); `parse_workers` is the collect's parsing processes (default: sized
    to the machine, sources/workers.py).
    """

    settings: Settings | None
    transport_factory: Callable[[], Transport] | None = None
    batch_size: int | None = None
    parse_workers: int | None = None

    def collect(
        self,
        newsletter: Newsletter,
        *,
        engine: sa.Engine,
        clock: Clock,
        on_fetched: Callable[[str, str | None], None] | None = None,
    ) -> list[SourceResult]:
        """Fetch every source here and store new articles as stories (one transaction)."""
        from digest.sources.collect import collect
        from digest.sources.fetch import FetchOptions

        now = clock()
        options = FetchOptions.from_settings(self.settings) if self.settings is not None else FetchOptions()
        with session_scope(engine) as session:
            return collect(
                newsletter,
                session=session,
                now=now,
                options=options,
                on_fetched=on_fetched,
                parse_workers=self.parse_workers,
            )

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
        """Send the edition from this process (deliver/send.py)."""
        from digest.db.queries import zone_audience
        from digest.deliver.send import send_edition
        from digest.deliver.transports import make_transport

        settings = self.settings
        if settings is None:
            raise SettingsError("a send needs the settings (DIGEST_* variables)")
        factory = self.transport_factory or (lambda: make_transport(settings, clock=clock))
        return send_edition(
            settings,
            newsletter,
            engine=engine,
            transport=factory(),
            edition_date=edition_date,
            clock=clock,
            resend_unknown=resend_unknown,
            batch_size=self.batch_size,
            audience=zone_audience(zone, settings.timezone) if zone else None,
            should_stop=should_stop,
            on_progress=on_progress,
        )
