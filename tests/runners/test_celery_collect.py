"""Distributed collect against real services: Redis or RabbitMQ as the Celery broker,
PostgreSQL, real `digest worker` processes, and a local HTTP server serving the feeds
(tests/collect_helpers.py)."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest import pipeline
from digest.clock import FixedClock, RunningClock
from digest.config import load_settings
from digest.db.engine import open_database
from digest.db.models import Article, CollectResult, Source
from digest.newsletter import load_newsletter
from tests.collect_helpers import serve_site, site_toml, snapshot
from tests.httpserver import FeedServer, Reply, Route, Seen, serving
from tests.runners import test_celery
from tests.runners.test_celery import Broker, Cluster

broker = test_celery.broker  # the fixture: a queue of its own on Redis (db 11) or RabbitMQ (a vhost)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with serving() as s:
        yield s


def _env(db_url: str, config: Path, broker: Broker, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
        "DIGEST_CONFIG": str(config),
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_VAR_DIR": str(config.parent / "var"),
        "DIGEST_BROKER_URL": broker.url,
        "DIGEST_BROKER_QUEUE": broker.queue,
        "COLUMNS": "250",  # one table row per source, unwrapped
        **extra,
    }


def _paths(server: FeedServer) -> list[str]:
    return sorted(s.path for s in server.seen)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@test_celery.POOLS
def test_two_workers_collect_exactly_what_one_process_collects(
    engine: sa.Engine,
    db_url: str,
    broker: Broker,
    pool: tuple[str, ...],
    server: FeedServer,
    tmp_path: Path,
    now: datetime,
) -> None:
    config = tmp_path / "digest.toml"
    config.write_text(site_toml(serve_site(server)))
    newsletter = load_newsletter(config)
    every_path = sorted(["/broken", "/same", *(f"/feed/{i}" for i in range(10))])
    here = open_database(f"sqlite:///{tmp_path / 'here.db'}")
    settings = load_settings(
        config=config, database_url=db_url, broker_url=broker.url, broker_queue=broker.queue
    )
    cluster = Cluster(_env(db_url, config, broker), tmp_path, pool)
    try:
        expected = pipeline.collect(newsletter, engine=here, clock=FixedClock(now))
        server.seen.clear()
        cluster.start_workers(2)
        results = pipeline.collect(newsletter, engine=engine, clock=RunningClock(now), settings=settings)
        assert results == expected
        assert snapshot(engine) == snapshot(here)
        assert [r.status for r in results].count("new") == 10
        assert _paths(server) == every_path  # each source fetched exactly once in the run

        # The second run: validators kept, every good feed answers 304, nothing new is stored.
        server.seen.clear()
        later = now + timedelta(hours=1)
        again = pipeline.collect(newsletter, engine=engine, clock=RunningClock(later), settings=settings)
        assert _paths(server) == every_path
        conditional = [s for s in server.seen if s.path.startswith("/feed/")]
        assert all(s.headers.get("if-none-match") for s in conditional)
        assert {r.name: r.status for r in again} == {
            **{f"site{i}": "unchanged" for i in range(10)},
            "broken": "failed",
            "same": "unchanged",
        }
        assert sum(r.new + r.updated for r in again) == 0
        assert again == pipeline.collect(newsletter, engine=here, clock=FixedClock(later))
        assert snapshot(engine) == snapshot(here)
    finally:
        cluster.stop()
        here.dispose()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert all("collect run=" in log for log in logs), "both workers fetched sources"
    with Session(engine) as s:
        assert s.exec(select(CollectResult)).all() == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_with_no_worker_every_source_fails_after_the_wait_and_nothing_is_lost(
    engine: sa.Engine, db_url: str, broker: Broker, server: FeedServer, tmp_path: Path
) -> None:
    config = tmp_path / "digest.toml"
    sources = serve_site(server, feeds=2)
    config.write_text(site_toml({k: v for k, v in sources.items() if k != "broken"}))
    env = _env(db_url, config, broker, DIGEST_COLLECT_WAIT_SECONDS="1")
    collect = [sys.executable, "-m", "digest", "collect"]
    done = subprocess.run(collect, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "every source failed" in done.stderr
    for name in ("site0", "site1", "same"):
        assert f"source '{name}': no worker answered within 1 s (is `digest worker` running?)" in done.stdout
    assert "3 sources: 0 new articles, 0 updated, 3 failed" in done.stdout
    assert server.seen == []
    with Session(engine) as s:
        rows = {r.name: r for r in s.exec(select(Source))}
        assert s.exec(select(Article)).all() == []
    health = {n: (r.failure_streak, r.etag, r.last_success_at) for n, r in rows.items()}
    assert health == dict.fromkeys(("site0", "site1", "same"), (1, None, None))
    # A worker comes: the next collect stores everything (the first run's stale tasks run too,
    # and write rows no one reads; they cost a fetch each, nothing else).
    cluster = Cluster(env, tmp_path)
    try:
        cluster.start_workers(1)
        done = subprocess.run(
            collect,
            env={**env, "DIGEST_COLLECT_WAIT_SECONDS": "60"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        cluster.stop()
    assert done.returncode == 0, done.stderr
    assert "3 sources: 6 new articles, 0 updated, 0 failed" in done.stdout
    with Session(engine) as s:
        assert {r.name: r.failure_streak for r in s.exec(select(Source))} == {
            "site0": 0,
            "site1": 0,
            "same": 0,
        }
        assert len(s.exec(select(Article)).all()) == 6


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_the_per_host_limit_holds_across_workers_and_their_threads(
    engine: sa.Engine, db_url: str, broker: Broker, server: FeedServer, tmp_path: Path, now: datetime
) -> None:
    sources = serve_site(server, feeds=6)
    in_flight, most, lock = 0, 0, threading.Lock()
    for path, route in list(server.routes.items()):

        def slow(seen: Seen, route: Route = route) -> Reply:
            nonlocal in_flight, most
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            time.sleep(0.2)  # long enough for every free worker thread to ask the site at once
            with lock:
                in_flight -= 1
            return route(seen)

        server.route(path, slow)
    config = tmp_path / "digest.toml"
    config.write_text(site_toml(sources))
    env = _env(db_url, config, broker, DIGEST_FETCH_PER_HOST="1")
    settings = load_settings(
        config=config, database_url=db_url, broker_url=broker.url, broker_queue=broker.queue, fetch_per_host=1
    )
    cluster = Cluster(env, tmp_path, test_celery.THREADS)  # 2 workers x 4 threads, one site
    try:
        cluster.start_workers(2)
        results = pipeline.collect(
            load_newsletter(config), engine=engine, clock=RunningClock(now), settings=settings
        )
    finally:
        cluster.stop()
    assert [r.status for r in results].count("new") == 6
    assert len(server.seen) == 8  # every source fetched once
    assert most == 1  # one request at a time reached the site, from 8 worker threads
