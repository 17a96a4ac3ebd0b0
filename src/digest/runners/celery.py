"""The Celery runner (distributed mode, issue 7): the app, the send and collect tasks, the enqueues.

The only module that imports Celery; the coordinators it runs are runners/send_tasks.py and
runners/collect_tasks.py, which know no queue. Tasks are acknowledged late (a worker killed mid-task
leaves its message to the broker, which hands it out again) and idempotent: a send task claims
ledger rows (deliver/claims.py), so a task run twice, or a range queued twice, sends nothing
twice; a collect task writes its source's one row of the run (runners/collect_tasks.py).
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from celery import Celery
from celery.exceptions import Reject
from kombu.exceptions import KombuError, OperationalError

from digest.clock import Clock, system_clock
from digest.config import Settings
from digest.db.engine import open_database
from digest.db.queries import zone_audience
from digest.deliver import claims
from digest.deliver.base import Transport
from digest.deliver.journal import SendReport
from digest.deliver.send import EditionCache
from digest.deliver.transports import KeptLanes, make_lanes
from digest.errors import DeliveryError, DigestError, SettingsError, SourceError
from digest.newsletter import Newsletter, load_newsletter
from digest.render.copies import Renderer, make_renderer
from digest.runners.send_tasks import Enqueue, SendTurn, Stopping, send_distributed, send_task

if TYPE_CHECKING:  # the collect side, imported where a collect runs: a send's coordinator need
    # not load the fetcher (httpx, anyio: a fifth of a second before its first batch is queued)
    from digest.runners import collect_tasks
    from digest.sources.collect import SourceResult

log = logging.getLogger(__name__)

SEND_TASK = "digest.send_batch"
COLLECT_TASK = "digest.collect_source"


@dataclass
class WorkerState:
    """What a worker process opens once and reuses for every task: database, newsletter, renderer.

    With `--pool threads` (the default) several tasks run in this one process at once: what is
    opened here is opened once under a lock, and send tasks take turns (`send_turn`), so that
    DIGEST_SEND_CONCURRENCY connections and DIGEST_SEND_RATE hold per worker process, as they do
    for one `digest send`, while the collect tasks (waiting on feeds) run side by side.

    A worker process is a door: `clock` is its one clock, handed to every task it runs.
    """

    settings: Settings
    clock: Clock = system_clock
    _engine: sa.Engine | None = None
    _newsletter: Newsletter | None = None
    _renderer: Renderer | None = field(default=None, repr=False)
    _opening: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _turn: SendTurn = field(default_factory=SendTurn, repr=False)
    # What the send tasks of one edition share, used only in a send turn: the parsed edition,
    # and the last batch's lanes (open connections).
    lanes_factory: Callable[[], list[Transport]] | None = field(default=None, repr=False)
    _editions: EditionCache = field(default_factory=EditionCache, repr=False)
    _lanes: KeptLanes | None = field(default=None, repr=False)
    # Whether a send task with no other waiting behind it takes rows from the end of the edition
    # (run_worker: a threads pool of several slots, whose empty waiting line means the broker
    # had no batch left to hand it; a solo or prefork slot cannot tell).
    steal: bool = False

    def engine(self) -> sa.Engine:
        """The database, opened on first use (after the fork, never shared across processes)."""
        with self._opening:
            if self._engine is None:
                self._engine = open_database(self.settings.database_url)
            return self._engine

    def newsletter(self) -> Newsletter:
        """digest.toml, read on first use."""
        with self._opening:
            if self._newsletter is None:
                self._newsletter = load_newsletter(self.settings.config)
            return self._newsletter

    def renderer(self) -> Renderer:
        """One renderer per process: each edition copy is rendered once, then filled per reader."""
        newsletter = self.newsletter()
        with self._opening:
            if self._renderer is None:
                self._renderer = make_renderer(self.settings, newsletter)
            return self._renderer

    def send_turn(self, stopping: Callable[[], bool], *, poll: float = 1.0) -> AbstractContextManager[None]:
        """This process's send turn (send_tasks.SendTurn), held while a send task sends."""
        return self._turn.hold(stopping, poll=poll)

    def send_batch(
        self,
        edition_id: int,
        first_id: int,
        last_id: int,
        zone: str | None,
        *,
        stopping: Callable[[], bool] = lambda: False,
    ) -> dict[str, int]:
        """The task body: claim and send one range of an edition's ledger (in this process's turn)."""
        with self.send_turn(stopping):
            return self._send_batch(edition_id, first_id, last_id, zone)

    def _send_batch(self, edition_id: int, first_id: int, last_id: int, zone: str | None) -> dict[str, int]:
        return send_task(
            self.settings,
            self.newsletter(),
            engine=self.engine(),
            renderer=self.renderer(),
            lanes=self._kept_lanes(),
            editions=self._editions,
            edition_id=edition_id,
            batch=claims.Batch(first_id, last_id),
            zone=zone,
            clock=self.clock,
            alone=lambda: self.steal and not self._turn.waiting,
        )

    def _kept_lanes(self) -> KeptLanes:
        if self._lanes is None:
            make = self.lanes_factory or (lambda: make_lanes(self.settings, clock=self.clock))
            self._lanes = KeptLanes(make, clock=self.clock)
        return self._lanes

    def close(self) -> None:
        """Close the kept lanes (the worker is stopping); left to the exit if a send still runs."""
        if self._turn.free():
            try:
                self._kept_lanes().close()
            finally:
                self._turn.release()

    def collect_source(self, task: "collect_tasks.CollectTask") -> bool:
        """The collect task body: fetch, parse and stage one source for its run's coordinator."""
        from digest.runners import collect_tasks
        from digest.sources.fetch import FetchOptions

        return collect_tasks.collect_source(
            task,
            engine=self.engine(),
            options=FetchOptions.from_settings(self.settings),
            clock=self.clock,
        )


def broker_url(settings: Settings) -> str:
    """DIGEST_BROKER_URL, or a SettingsError when distributed mode is off."""
    if settings.broker_url is None:
        raise SettingsError("DIGEST_BROKER_URL: not set (distributed mode is off)")
    return settings.broker_url.get_secret_value()


def transport_options(url: str, settings: Settings) -> dict[str, Any]:
    """Broker-specific options: the two brokers take back an unacknowledged task differently.

    Redis hands it out again after `visibility_timeout` (a copy that runs while the first still
    does finds its rows claimed and sends nothing). RabbitMQ takes it back when the worker's
    connection closes, and closes a channel whose task stays unacknowledged past the server's
    `consumer_timeout` (30 minutes by default; see README): nothing to set from here.
    """
    if url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": max(3 * settings.claim_lease_seconds, 60)}
    return {}


RABBITMQ_CONSUMER_TIMEOUT = 1800  # seconds: RabbitMQ's default `consumer_timeout` since 3.8.15


def slow_batch_warning(settings: Settings, *, waiting: int = 1) -> str | None:
    """On RabbitMQ, a warning when rate-limited batches may outlast the broker's consumer timeout.

    `waiting`: the batches one worker process holds unacknowledged while they take turns (its
    --concurrency with the threads pool, whose send tasks run one at a time; 1 otherwise).
    """
    if not broker_url(settings).startswith(("amqp://", "amqps://")) or not settings.send_rate:
        return None
    seconds = waiting * settings.send_batch_size / settings.send_rate
    if seconds <= RABBITMQ_CONSUMER_TIMEOUT:
        return None
    held = f"{waiting} batches (--concurrency {waiting}, sent in turn)" if waiting > 1 else "a batch"
    return (
        f"{held} of DIGEST_SEND_BATCH_SIZE={settings.send_batch_size} at DIGEST_SEND_RATE="
        f"{settings.send_rate:g}/s take {seconds:.0f} s, past RabbitMQ's default consumer_timeout "
        f"({RABBITMQ_CONSUMER_TIMEOUT} s): lower the batch size or the concurrency, or raise "
        "consumer_timeout (the broker would close this worker's channel mid-batch; the claims "
        "still keep every message to one copy)"
    )


def make_app(settings: Settings, *, state: WorkerState | None = None) -> Celery:
    """The Celery app for these settings, with the send and collect tasks registered."""
    url = broker_url(settings)
    app = Celery("digest", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged after the task ran: a killed worker's task is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds one batch at a time; the rest stay shareable
        task_default_queue=settings.broker_queue,
        task_ignore_result=True,  # the ledger is the result
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(url, settings),
        worker_hijack_root_logger=False,
    )
    state = state or WorkerState(settings)

    # shared=False: a shared task would be added to every app made later in this process (each send
    # publishes through a new app), each bringing this app's `state` along.
    @app.task(name=SEND_TASK, acks_late=True, shared=False)  # type: ignore[untyped-decorator]
    def send_batch(edition_id: int, first_id: int, last_id: int, zone: str | None = None) -> dict[str, int]:
        try:
            return state.send_batch(edition_id, first_id, last_id, zone, stopping=_worker_stopping)
        except Stopping as e:
            # A task that raised is acknowledged (acks_late acks failures too): requeue it instead.
            raise Reject(str(e), requeue=True) from e

    @app.task(name=COLLECT_TASK, acks_late=True, shared=False)  # type: ignore[untyped-decorator]
    def collect_source(
        run: str, name: str, location: str, etag: str | None = None, last_modified: str | None = None
    ) -> bool:
        from digest.runners.collect_tasks import CollectTask

        return state.collect_source(CollectTask(run, name, location, etag, last_modified))

    return app


def _worker_stopping() -> bool:
    """True once the worker got its warm (SIGTERM) or cold shutdown."""
    from celery.worker import state as worker_state

    # Celery's own test (worker/state.py): the warm shutdown's code is EX_OK, which is 0.
    return any(
        flag is not None and flag is not False
        for flag in (worker_state.should_stop, worker_state.should_terminate)
    )


def _publish(
    app: Celery, settings: Settings, task: str, kwargs: dict[str, Any], refused: Callable[[str], DigestError]
) -> None:
    """Put one task on the digest queue (retrying briefly); a broker that cannot take it raises
    `refused(reason)`, the error of the thing that was not queued."""
    try:
        app.send_task(
            task,
            kwargs=kwargs,
            queue=settings.broker_queue,
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )
    except (OperationalError, KombuError, OSError) as e:
        raise refused(f"broker {_safe(settings)}: {e}") from e


def celery_enqueue(app: Celery, settings: Settings) -> Enqueue:
    """An Enqueue that publishes send tasks; a broker that cannot take them is a DeliveryError."""

    def enqueue(edition_id: int, batch: claims.Batch, zone: str | None) -> None:
        kwargs = {"edition_id": edition_id, "first_id": batch[0], "last_id": batch[1], "zone": zone}
        _publish(app, settings, SEND_TASK, kwargs, DeliveryError)

    return enqueue


def celery_collect_enqueue(app: Celery, settings: Settings) -> "collect_tasks.EnqueueCollect":
    """An EnqueueCollect that publishes collect tasks; a broker that refuses is that source's error."""

    def enqueue(task: "collect_tasks.CollectTask") -> None:
        def refused(reason: str) -> SourceError:
            return SourceError(f"source {task.name!r}: not queued: {reason}")

        _publish(app, settings, COLLECT_TASK, asdict(task), refused)

    return enqueue


def _safe(settings: Settings) -> str:
    """The broker URL without its password, for messages."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(broker_url(settings)))


@contextmanager
def _publisher(settings: Settings) -> Iterator[Celery]:
    """A Celery app to queue tasks with, closed (its broker connections too) afterwards."""
    app = make_app(settings)
    try:
        yield app
    finally:
        app.close()


@dataclass(frozen=True)
class CeleryRunner:
    """Collects and sends through `digest worker` processes: this process queues the tasks on
    DIGEST_BROKER_URL, waits, and stores what the collect tasks staged (the coordinator)."""

    settings: Settings

    def collect(
        self,
        newsletter: Newsletter,
        *,
        engine: sa.Engine,
        clock: Clock,
        on_fetched: Callable[[str, str | None], None] | None = None,
    ) -> list["SourceResult"]:
        """`digest collect` in distributed mode: one task per source for the workers, stored here."""
        from digest.runners import collect_tasks

        now = clock()
        with _publisher(self.settings) as app:
            return collect_tasks.collect_distributed(
                newsletter,
                engine=engine,
                now=now,
                clock=clock,
                enqueue=celery_collect_enqueue(app, self.settings),
                sleep=time.sleep,
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
        """`digest send` in distributed mode: queue the edition's batches for the workers and wait."""
        settings = self.settings
        with _publisher(settings) as app:
            return send_distributed(
                settings,
                newsletter,
                engine=engine,
                edition_date=edition_date,
                clock=clock,
                enqueue=celery_enqueue(app, settings),
                sleep=time.sleep,
                zone=zone,
                audience=zone_audience(zone, settings.timezone) if zone else None,
                resend_unknown=resend_unknown,
                should_stop=should_stop,
            )


def run_worker(settings: Settings, *, concurrency: int, pool: str, name: str | None) -> None:
    """Start a Celery worker on the digest queue (blocks until it is stopped)."""
    from celery.signals import worker_process_shutdown

    state = WorkerState(settings, steal=pool == "threads" and concurrency > 1)
    app = make_app(settings, state=state)
    # The kept SMTP lanes say QUIT when the worker stops: here (threads and solo pools), and in
    # each child of a prefork pool, which has its own copy of the state.
    worker_process_shutdown.connect(lambda **_: state.close(), weak=False)
    argv: list[Any] = [
        "worker",
        "--loglevel=INFO",
        f"--queues={settings.broker_queue}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        "--without-gossip",
        "--without-mingle",
    ]
    if name:
        argv.append(f"--hostname={name}")
    log.info("worker on queue %s at %s", settings.broker_queue, _safe(settings))
    slow = slow_batch_warning(settings, waiting=concurrency if pool == "threads" else 1)
    if slow:
        log.warning("%s", slow)
    try:
        app.worker_main(argv=argv)
    finally:
        state.close()
