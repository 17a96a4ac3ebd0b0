"""The distributed collect's coordinator and worker task, without Celery: the queue is a list, the
worker is `collect_source` called here, and the clock only moves when the coordinator sleeps."""

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest import pipeline
from digest.clock import FixedClock
from digest.config import load_settings
from digest.db.engine import open_database, session_scope
from digest.db.models import CollectResult, Source
from digest.errors import SourceError
from digest.newsletter import Newsletter, load_newsletter
from digest.runners import collect_tasks
from digest.sources.collect import Outcome, SourceResult
from digest.sources.fetch import FetchOptions, FetchRequest
from digest.sources.model import FeedEntry, ParsedFeed
from tests.collect_helpers import serve_site, site_toml, snapshot
from tests.feedbuilder import Item, rss
from tests.httpserver import FeedServer, Reply, serving


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with serving() as s:
        yield s


@pytest.fixture
def newsletter(server: FeedServer, tmp_path: Path) -> Newsletter:
    path = tmp_path / "digest.toml"
    path.write_text(site_toml(serve_site(server)))
    return load_newsletter(path)


@dataclass
class FakeTime:
    """A clock that moves only when someone sleeps."""

    now: datetime
    slept: list[float] = field(default_factory=list)

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@dataclass
class Queue:
    """An in-memory EnqueueCollect; `inline` runs each task at once, as an idle worker would."""

    engine: sa.Engine
    now: datetime
    inline: bool = False
    refuse: frozenset[str] = frozenset()
    tasks: list[collect_tasks.CollectTask] = field(default_factory=list)

    def __call__(self, task: collect_tasks.CollectTask) -> None:
        if task.name in self.refuse:
            raise SourceError(f"source {task.name!r}: not queued: broker down")
        self.tasks.append(task)
        if self.inline:
            self.work(1)

    def work(self, n: int) -> None:
        """Run the next n queued tasks."""
        for task in self.tasks[:n]:
            collect_tasks.collect_source(
                task, engine=self.engine, options=FetchOptions(), clock=lambda: self.now
            )
        del self.tasks[:n]


def _collect(
    newsletter: Newsletter, engine: sa.Engine, now: datetime, queue: Queue, time: FakeTime, **kw: Any
) -> list[SourceResult]:
    return collect_tasks.collect_distributed(
        newsletter, engine=engine, now=now, clock=time.clock, enqueue=queue, sleep=time.sleep, wait=30, **kw
    )


def test_through_the_queue_stores_exactly_what_an_in_process_collect_stores(
    newsletter: Newsletter, server: FeedServer, engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    here = open_database(f"sqlite:///{tmp_path / 'here.db'}")
    try:
        expected = pipeline.collect(newsletter, engine=here, clock=FixedClock(now))
        server.seen.clear()
        arrived: list[tuple[str, str | None]] = []
        results = _collect(
            newsletter,
            engine,
            now,
            Queue(engine, now, inline=True),
            FakeTime(now),
            on_fetched=lambda name, error: arrived.append((name, error)),
        )
        assert results == expected
        assert snapshot(engine) == snapshot(here)
    finally:
        here.dispose()
    statuses = Counter(r.status for r in results)
    assert statuses == {"new": 10, "failed": 1, "unchanged": 1}
    assert sorted(n for n, _ in arrived) == sorted(s.name for s in newsletter.sources)
    paths = [s.path for s in server.seen]
    assert sorted(paths) == sorted(["/broken", "/same", *(f"/feed/{i}" for i in range(10))])  # once each
    with Session(engine) as s:
        assert s.exec(select(CollectResult)).all() == []  # the run's staging rows are gone


def test_sources_nobody_answers_fail_after_the_wait_and_the_answers_are_kept(
    newsletter: Newsletter, engine: sa.Engine, now: datetime
) -> None:
    queue = Queue(engine, now)
    time = FakeTime(now)
    answered_at: list[datetime] = []

    def sleep(seconds: float) -> None:  # a worker answers a few sources, then every worker stops
        time.sleep(seconds)
        if len(time.slept) == 2:
            queue.work(4)
            answered_at.append(time.now)

    results = collect_tasks.collect_distributed(
        newsletter, engine=engine, now=now, clock=time.clock, enqueue=queue, sleep=sleep, wait=30
    )
    by_name = {r.name: r for r in results}
    answered = ["site0", "site1", "site2", "site3"]
    assert [by_name[n].status for n in answered] == ["new"] * 4
    silent = [n for n in by_name if n not in answered]
    for name in silent:
        assert by_name[name].status == "failed"
        assert by_name[name].error == (
            f"source {name!r}: no worker answered within 30 s (is `digest worker` running?)"
        )
    # It gave up 30 s after the last answer (not 30 s after it started), polling in between.
    assert timedelta(seconds=30) <= time.now - answered_at[0] <= timedelta(seconds=30.25)
    assert len(time.slept) > 100
    with Session(engine) as s:
        sources = {r.name: r for r in s.exec(select(Source))}
    assert sources["site9"].failure_streak == 1 and sources["site9"].etag is None  # nothing stored for it
    assert sources["site0"].etag == '"v0"'
    # The silent tasks still run later (a worker came back): they write rows nobody reads, which
    # the next run clears once they are old; the next run queues every source again.
    queue.work(len(queue.tasks))
    later = now + collect_tasks.STALE_ROWS + timedelta(seconds=1)
    queue.inline = True
    again = _collect(newsletter, engine, later, queue, FakeTime(later))
    assert {r.name: r.status for r in again if r.name in silent} == {
        **{n: "new" for n in silent if n.startswith("site")},
        "broken": "failed",
        "same": "unchanged",
    }
    with Session(engine) as s:
        assert s.exec(select(CollectResult)).all() == []


def test_a_source_the_broker_refuses_fails_at_once_and_the_rest_are_collected(
    newsletter: Newsletter, engine: sa.Engine, now: datetime
) -> None:
    time = FakeTime(now)
    results = _collect(
        newsletter, engine, now, Queue(engine, now, inline=True, refuse=frozenset({"site3"})), time
    )
    by_name = {r.name: r for r in results}
    assert by_name["site3"].status == "failed" and "not queued: broker down" in (by_name["site3"].error or "")
    assert by_name["site4"].status == "new"
    assert time.slept == []  # nothing left to wait for


def test_a_redelivered_task_fetches_and_writes_nothing_more(
    newsletter: Newsletter, server: FeedServer, engine: sa.Engine, now: datetime
) -> None:
    url = server.url("/feed/0")
    task = collect_tasks.CollectTask("run1", "site0", url)
    assert (
        collect_tasks.collect_source(task, engine=engine, options=FetchOptions(), clock=lambda: now) is True
    )
    assert (
        collect_tasks.collect_source(task, engine=engine, options=FetchOptions(), clock=lambda: now) is False
    )
    assert [s.path for s in server.seen] == ["/feed/0"]
    # Two copies that both got past the check: the unique (run, source) keeps the first row.
    second = Outcome(error=SourceError("source 'site0': late copy"))
    with session_scope(engine) as session:
        assert collect_tasks.stage("run1", "site0", second, session=session, now=now) is False
    with Session(engine) as s:
        rows = s.exec(select(CollectResult)).all()
    assert [(r.run, r.source, r.status, r.etag) for r in rows] == [("run1", "site0", "ok", '"v0"')]
    feed = ParsedFeed.from_json(rows[0].feed_json or "")
    assert len(feed.entries) == 3 and all(e.terms for e in feed.entries)  # terms computed by the worker


def test_fetch_one_returns_expected_failures_and_not_modified(
    server: FeedServer, newsletter: Newsletter
) -> None:
    broken = collect_tasks.fetch_one(FetchRequest("broken", server.url("/broken")), options=FetchOptions())
    assert isinstance(broken.error, SourceError) and "source 'broken'" in str(broken.error)
    same = collect_tasks.fetch_one(
        FetchRequest("same", server.url("/same"), etag='"x"'), options=FetchOptions()
    )
    assert same == Outcome(etag='"x"')
    fresh = collect_tasks.fetch_one(FetchRequest("site1", server.url("/feed/1")), options=FetchOptions())
    assert fresh.error is None and fresh.feed is not None and fresh.etag == '"v1"'


def test_a_staged_row_comes_back_as_the_outcome_it_was(engine: sa.Engine, now: datetime) -> None:
    feed = ParsedFeed("T", None, (FeedEntry("https://a.example/1", "A", published=now, terms=b"\x01" * 8),))
    outcomes = {
        "ok": Outcome(etag='"e"', last_modified="Tue, 24 Nov 2026 10:00:00 GMT", feed=feed),
        "same": Outcome(etag='"e"'),
        "bad": Outcome(error=SourceError("source 'bad': HTTP 500")),
    }
    with session_scope(engine) as session:
        for name, outcome in outcomes.items():
            assert collect_tasks.stage("r", name, outcome, session=session, now=now)
    with Session(engine) as s:
        back = {r.source: collect_tasks._outcome(r) for r in s.exec(select(CollectResult))}
    assert back["ok"] == outcomes["ok"] and back["same"] == outcomes["same"]
    assert str(back["bad"].error) == "source 'bad': HTTP 500" and back["bad"].feed is None


def test_the_default_wait_follows_the_fetch_timeout() -> None:
    assert collect_tasks.wait_seconds(load_settings()) == 90  # the 60 s fetch deadline + 30 s
    assert collect_tasks.wait_seconds(load_settings(fetch_deadline_seconds=20)) == 50
    assert collect_tasks.wait_seconds(load_settings(collect_wait_seconds=2)) == 2


def test_tasks_are_queued_one_host_at_a_time() -> None:
    tasks = [
        collect_tasks.CollectTask("r", name, f"https://{host}/{name}")
        for name, host in [
            ("a1", "a.example"),
            ("a2", "a.example"),
            ("a3", "a.example"),
            ("b1", "b.example"),
            ("c1", "c.example"),
            ("c2", "c.example"),
        ]
    ]
    assert [t.name for t in collect_tasks.interleave_hosts(tasks)] == ["a1", "b1", "c1", "a2", "c2", "a3"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_hosts_fetch_slots_are_shared_by_every_connection(engine: sa.Engine) -> None:
    waits: list[float] = []
    with ExitStack() as held:
        held.enter_context(collect_tasks.host_slot(engine, "https://a.example/one", slots=2))
        held.enter_context(collect_tasks.host_slot(engine, "https://a.example/two", slots=2))
        with collect_tasks.host_slot(engine, "https://b.example/feed", slots=2, sleep=waits.append):
            pass  # another site has slots of its own
        assert waits == []

        def sleep(seconds: float) -> None:  # the third fetch of a.example waits until one ends
            waits.append(seconds)
            if len(waits) == 3:
                held.close()

        with collect_tasks.host_slot(engine, "https://a.example/three", slots=2, sleep=sleep):
            assert len(waits) == 3
    with collect_tasks.host_slot(engine, "https://a.example/four", slots=1, sleep=waits.append):
        assert len(waits) == 3  # every slot was given back


def test_a_local_file_needs_no_fetch_slot(engine: sa.Engine) -> None:
    with collect_tasks.host_slot(engine, "file:///srv/feeds/local.xml", slots=1, sleep=pytest.fail):
        pass


def test_a_malformed_feed_through_the_workers_is_reported_as_in_one_process(
    server: FeedServer, engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    body = rss([Item("Robot one", "https://c.example/1"), Item("Robot two", "https://c.example/2")])
    server.route(
        "/cut", Reply(headers={"Content-Type": "application/rss+xml"}, body=body[: body.index(b"Robot two")])
    )
    path = tmp_path / "digest.toml"
    path.write_text(site_toml({"cut": server.url("/cut")}))
    newsletter = load_newsletter(path)
    here = open_database(f"sqlite:///{tmp_path / 'here.db'}")
    try:
        expected = pipeline.collect(newsletter, engine=here, clock=FixedClock(now))
        results = _collect(newsletter, engine, now, Queue(engine, now, inline=True), FakeTime(now))
        assert snapshot(engine) == snapshot(here)
    finally:
        here.dispose()
    assert results == expected
    (result,) = results
    assert (result.status, result.new) == ("malformed", 1)
    assert result.error == "malformed feed: Feed is truncated or has unclosed XML elements"
    with Session(engine) as s:
        row = s.exec(select(Source)).one()
    assert (row.failure_streak, row.last_outcome) == (1, "malformed")
