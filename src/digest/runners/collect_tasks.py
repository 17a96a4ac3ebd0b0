"""A distributed collect (issue 7): one task per source for the workers, one writer for the stories.

The coordinator (the process that runs `digest collect`, `digest run` or the scheduler's collect)
queues one task per source. A worker fetches and parses its one source and stages the outcome in
the `collectresult` table, one row per (run, source), so a task delivered twice writes nothing
twice. The coordinator waits for every source's row, then stores them all with `store_outcomes`
in one transaction, in digest.toml order: articles, stories (clustering stays single-writer and
deterministic), and source health come out exactly as a collect in one process makes them.

No Celery here: the queue is an `EnqueueCollect` (Celery in runners/celery.py, a list in
runners/memory.py and in tests).
"""

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Protocol
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import CollectResult
from digest.errors import SourceError
from digest.newsletter import Newsletter
from digest.sources.collect import Outcome, SourceResult, store_outcomes, sync_sources
from digest.sources.fetch import FetchOptions, FetchRequest, fetch, make_client
from digest.sources.model import ParsedFeed
from digest.sources.network import run_with_lookups
from digest.sources.workers import parse_with_terms
from digest.stories import cluster

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
OK, NOT_MODIFIED, FAILED = "ok", "not-modified", "failed"
STALE_ROWS = timedelta(days=1)  # staged rows older than this belong to runs that ended long ago
SLOT_POLL_SECONDS = 0.05  # how often a fetch waiting for its host's slot asks again


@dataclass(frozen=True, slots=True)
class CollectTask:
    """One source to fetch for one run, with the validators kept from its last fetch."""

    run: str
    name: str
    location: str
    etag: str | None = None
    last_modified: str | None = None

    @property
    def request(self) -> FetchRequest:
        """The conditional GET this task makes."""
        return FetchRequest(self.name, self.location, self.etag, self.last_modified)


class EnqueueCollect(Protocol):
    """Puts one source's task on the queue (Celery in production, a list in tests)."""

    def __call__(self, task: CollectTask) -> None:
        """Queue the task; raise SourceError naming the source when the broker cannot take it."""
        ...


def wait_seconds(settings: Settings) -> float:
    """How long the coordinator waits with no answer before giving up on the rest.

    A busy worker answers within one fetch's deadline (DIGEST_FETCH_DEADLINE_SECONDS), so that,
    plus time for the broker and a worker's start, with no answer means no worker is answering.
    """
    if settings.collect_wait_seconds is not None:
        return settings.collect_wait_seconds
    return settings.fetch_deadline_seconds + 30


def interleave_hosts(tasks: Sequence[CollectTask]) -> list[CollectTask]:
    """The tasks in queue order: one per host in turn, so the workers' threads, taking tasks in
    order, seldom wait for a host's fetch slot (`host_slot`)."""
    by_host: dict[str, list[CollectTask]] = {}
    for task in tasks:
        by_host.setdefault(urlsplit(task.location).hostname or "", []).append(task)
    rounds = zip_longest(*by_host.values())
    return [task for turn in rounds for task in turn if task is not None]


# --- the worker's side --------------------------------------------------------------------


def fetch_one(request: FetchRequest, *, options: FetchOptions) -> Outcome:
    """Fetch and parse one source; an expected failure is the outcome's error, a bug propagates."""

    async def get() -> Outcome:
        async with make_client(options) as client:
            fetched = await fetch(request, client=client, options=options)
        if fetched.body is None:
            return Outcome.of(fetched)
        # Story-matching terms are computed here too: the coordinator's work is only storing.
        return Outcome.of(fetched, parse_with_terms(request.name, fetched.body, fetched.url, fetched.headers))

    try:
        return run_with_lookups(get())
    except SourceError as e:
        return Outcome(error=e)


def stage(run: str, name: str, outcome: Outcome, *, session: Session, now: datetime) -> bool:
    """Write one source's outcome for the coordinator; False when the run already had it."""
    if outcome.error is not None:
        status, feed_json = FAILED, None
    elif outcome.feed is None:
        status, feed_json = NOT_MODIFIED, None
    else:
        status, feed_json = OK, outcome.feed.to_json()
    values = {
        "run": run,
        "source": name,
        "status": status,
        "etag": outcome.etag,
        "last_modified": outcome.last_modified,
        "error": str(outcome.error) if outcome.error is not None else None,
        "feed_json": feed_json,
        "created_at": now,
    }
    table = CollectResult.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # A redelivered task (acks_late) lands on the unique (run, source) and changes nothing.
    statement = (
        dialect.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["run", "source"])
        .returning(table.c.id)
    )
    return session.connection().execute(statement).first() is not None


def answered(run: str, name: str, *, session: Session) -> bool:
    """True when the run already has this source's outcome."""
    found = session.exec(
        select(CollectResult.id).where(CollectResult.run == run, CollectResult.source == name)
    ).first()
    return found is not None


@contextmanager
def host_slot(
    engine: sa.Engine, location: str, *, slots: int, sleep: Callable[[float], None] = time.sleep
) -> Iterator[None]:
    """Hold one of the `slots` fetch slots of the location's host across every worker.

    DIGEST_FETCH_PER_HOST must hold for the whole cluster, not per task: each slot is a PostgreSQL
    advisory lock on (host, slot number), taken on a connection of its own and released when the
    fetch ends, or by the server when a killed worker's connection drops. Without PostgreSQL (no
    distributed mode) or without a host (a local file) there is nothing to share.
    """
    host = urlsplit(location).hostname
    if host is None or engine.url.get_backend_name() != "postgresql":
        yield
        return
    key = "SELECT hashtext('digest fetch ' || current_schema() || ' ' || :host)"
    with engine.connect() as conn:
        held = None
        while held is None:
            for slot in range(slots):
                got = conn.execute(
                    sa.text(f"SELECT pg_try_advisory_lock(({key}), :slot)"), {"host": host, "slot": slot}
                ).scalar()
                conn.commit()
                if got:
                    held = slot
                    break
            else:
                sleep(SLOT_POLL_SECONDS)
        try:
            yield
        finally:
            conn.execute(sa.text(f"SELECT pg_advisory_unlock(({key}), :slot)"), {"host": host, "slot": held})
            conn.commit()


def collect_source(task: CollectTask, *, engine: sa.Engine, options: FetchOptions, clock: Clock) -> bool:
    """A worker's task: fetch, parse and stage one source; False when it had already been done."""
    with session_scope(engine) as session:
        if answered(task.run, task.name, session=session):
            log.info("collect run=%s source=%r already answered", task.run, task.name)
            return False
    with host_slot(engine, task.location, slots=options.per_host):
        outcome = fetch_one(task.request, options=options)
    with session_scope(engine) as session:
        written = stage(task.run, task.name, outcome, session=session, now=clock())
    log.info(
        "collect run=%s source=%r %s%s",
        task.run,
        task.name,
        "failed" if outcome.error else "not modified" if outcome.feed is None else "ok",
        "" if written else " (another copy of the task was first)",
    )
    return written


# --- the coordinator's side ---------------------------------------------------------------


def _outcome(row: CollectResult) -> Outcome:
    """The staged row back as the outcome the worker had."""
    if row.status == FAILED:
        return Outcome(error=SourceError(row.error or f"source {row.source!r}: failed"))
    feed = ParsedFeed.from_json(row.feed_json) if row.status == OK and row.feed_json is not None else None
    return Outcome(etag=row.etag, last_modified=row.last_modified, feed=feed)


def _answers(run: str, *, session: Session) -> dict[str, str | None]:
    """The sources that have answered so far, with their error (None when they did not fail)."""
    rows = session.exec(
        select(CollectResult.source, CollectResult.error).where(CollectResult.run == run)
    ).all()
    return dict(rows)


def collect_distributed(
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    now: datetime,
    clock: Clock,
    enqueue: EnqueueCollect,
    sleep: Callable[[float], None],
    wait: float,
    poll_seconds: float = 0.25,
    on_fetched: Callable[[str, str | None], None] | None = None,
    run: str | None = None,
) -> list[SourceResult]:
    """Collect every source through the workers and store the outcomes here, in one transaction.

    A source with no answer after `wait` seconds without any answer is recorded failed (no worker
    is running, or all are stuck); `on_fetched(name, error)` is called as each answer arrives.
    """
    run = run or uuid.uuid4().hex
    with session_scope(engine) as session:
        rows = sync_sources(newsletter, session=session)
        tasks = [
            CollectTask(run, cfg.name, rows[cfg.name].url, rows[cfg.name].etag, rows[cfg.name].last_modified)
            for cfg in newsletter.sources
        ]
        # Rows of runs whose coordinator died, or that a late copy of a task wrote after its run.
        session.execute(sa.delete(CollectResult).where(col(CollectResult.created_at) < now - STALE_ROWS))
    refused: dict[str, Outcome] = {}
    for task in interleave_hosts(tasks):
        try:
            enqueue(task)
        except SourceError as e:
            refused[task.name] = Outcome(error=e)
            if on_fetched is not None:
                on_fetched(task.name, str(e))
    log.info("collect run=%s queued %d source(s), %d refused by the broker", run, len(tasks), len(refused))
    wanted = {t.name for t in tasks} - set(refused)
    seen: dict[str, str | None] = {}
    last_answer = clock()
    while wanted - seen.keys():
        with session_scope(engine) as session:
            fresh = {k: v for k, v in _answers(run, session=session).items() if k in wanted and k not in seen}
        for name, error in fresh.items():
            seen[name] = error
            if on_fetched is not None:
                on_fetched(name, error)
        if fresh:
            last_answer = clock()
            continue
        if (clock() - last_answer).total_seconds() >= wait:
            log.warning(
                "collect run=%s no answer for %g s: %d source(s) left", run, wait, len(wanted - seen.keys())
            )
            break
        sleep(poll_seconds)
    silent = f"no worker answered within {wait:g} s (is `digest worker` running?)"
    with session_scope(engine) as session:
        staged = {r.source: r for r in session.exec(select(CollectResult).where(CollectResult.run == run))}
        outcomes = []
        for task in tasks:
            if task.name in refused:
                outcome = refused[task.name]
            elif task.name in staged:
                outcome = _outcome(staged[task.name])
            else:
                outcome = Outcome(error=SourceError(f"source {task.name!r}: {silent}"))
            if on_fetched is not None and task.name in wanted and task.name not in seen:
                on_fetched(task.name, str(outcome.error) if outcome.error else None)
            outcomes.append(outcome)
        rows = sync_sources(newsletter, session=session)
        results = store_outcomes(
            [t.request for t in tasks], outcomes, rows=rows, session=session, now=now, clusterer=cluster
        )
        session.execute(sa.delete(CollectResult).where(col(CollectResult.run) == run))
    return results
