"""The in-memory runner: the queued path of the Celery runner with a list for the queue.

The coordinators are the Celery runner's own (runners/send_tasks.py, runners/collect_tasks.py);
the tasks they queue wait in a list that this process works through itself, as one worker
would, whenever a coordinator waits. So tests run the distributed protocol (claims, staging,
idempotent tasks) without a broker or worker processes, and the shared runner contract
(tests/runners/) runs against it. A send needs PostgreSQL, as in distributed mode.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from digest.clock import Clock
from digest.config import Settings
from digest.db.queries import zone_audience
from digest.deliver import claims
from digest.deliver.base import Transport
from digest.deliver.journal import SendReport
from digest.deliver.send import send_batch
from digest.newsletter import Newsletter
from digest.runners import collect_tasks
from digest.runners.send_tasks import send_distributed
from digest.sources.collect import SourceResult
from digest.sources.fetch import FetchOptions


@dataclass
class MemoryRunner:
    """Queues tasks in lists and runs them when the coordinator waits; `transport_factory` makes
    the worker's connection for each send task."""

    settings: Settings
    transport_factory: Callable[[], Transport]
    owner: str = "memory:1"
    sends: list[tuple[int, claims.Batch, str | None]] = field(default_factory=list)
    collects: list[collect_tasks.CollectTask] = field(default_factory=list)
    tasks_run: int = 0

    def collect(
        self,
        newsletter: Newsletter,
        *,
        engine: sa.Engine,
        clock: Clock,
        on_fetched: Callable[[str, str | None], None] | None = None,
    ) -> list[SourceResult]:
        """Collect through one task per source, run here while the coordinator waits."""
        now = clock()
        options = FetchOptions.from_settings(self.settings)

        def enqueue(task: collect_tasks.CollectTask) -> None:
            self.collects.append(task)

        def work(_seconds: float) -> None:
            while self.collects:
                task = self.collects.pop(0)
                collect_tasks.collect_source(task, engine=engine, options=options, clock=clock)
                self.tasks_run += 1

        return collect_tasks.collect_distributed(
            newsletter,
            engine=engine,
            now=now,
            clock=clock,
            enqueue=enqueue,
            sleep=work,
            wait=collect_tasks.wait_seconds(self.settings),
            on_fetched=on_fetched,
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
        """Send through batches of the ledger, each claimed and sent here while the coordinator waits."""
        settings = self.settings

        def enqueue(edition_id: int, batch: claims.Batch, zone: str | None) -> None:
            self.sends.append((edition_id, batch, zone))

        def work(_seconds: float) -> None:
            while self.sends:
                edition_id, batch, task_zone = self.sends.pop(0)
                send_batch(
                    settings,
                    newsletter,
                    engine=engine,
                    lanes=[self.transport_factory()],
                    edition_id=edition_id,
                    batch=batch,
                    owner=self.owner,
                    clock=clock,
                    audience=zone_audience(task_zone, settings.timezone) if task_zone else None,
                )
                self.tasks_run += 1

        return send_distributed(
            settings,
            newsletter,
            engine=engine,
            edition_date=edition_date,
            clock=clock,
            enqueue=enqueue,
            sleep=work,
            zone=zone,
            audience=zone_audience(zone, settings.timezone) if zone else None,
            resend_unknown=resend_unknown,
            should_stop=should_stop,
        )
