"""The distributed send: one edition to N subscribers (default 10,000) with 1 and with 2
`digest worker` processes, PostgreSQL ledger, Redis broker, SMTP to a loopback sink.

Usage: python benchmarks/bench_distributed.py [--count N] [--worker-options "--pool solo"]
(prints `BENCH {json}` lines; the workers start with `digest worker`'s defaults unless given options)

Needs PostgreSQL (DIGEST_BENCH_DATABASE_URL, default the test database on 127.0.0.1) and Redis
(DIGEST_BENCH_BROKER_URL, default redis://127.0.0.1:6379/12); prints a note and no figures
when either is missing. Each run gets its own schema and queue. Wall time runs from queueing the
first batch to the last answer, measured by the coordinator (`digest send`'s own code path).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_send import NOW, seed_subscribers  # noqa: E402
from smtp_sink import ProcessSink  # noqa: E402

from digest import editions, fanout, pipeline  # noqa: E402
from digest.clock import FixedClock, system_clock  # noqa: E402
from digest.config import load_newsletter, load_settings  # noqa: E402
from digest.db.engine import open_database, session_scope  # noqa: E402
from digest.deliver.transports import make_transport  # noqa: E402

DB = os.environ.get("DIGEST_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BROKER = os.environ.get("DIGEST_BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")


def available() -> str | None:
    """Why the benchmark cannot run here, or None."""
    try:
        sa.create_engine(DB).connect().close()
    except sa.exc.OperationalError as e:
        return f"PostgreSQL at {DB} unreachable ({type(e).__name__})"
    import redis

    try:
        redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as e:
        return f"Redis at {BROKER} unreachable ({e})"
    return None


@contextmanager
def own_schema(url: str = DB) -> Iterator[str]:
    """A fresh PostgreSQL schema for one run: its database URL; dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def started_workers(env: dict[str, str], workdir: Path, n: int, *options: str) -> Iterator[None]:
    """`n` `digest worker` processes (with extra `options`), each ready; stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n):
            log = workdir / f"worker{i}.log"
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "digest", "worker", *options, "--name", f"b{i}@%h"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            while b"ready." not in log.read_bytes():
                time.sleep(0.1)
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)


def run(count: int, workers: int, workdir: Path, options: list[str]) -> float:
    """Seconds to send the edition to `count` subscribers with `workers` worker processes
    (0: the single-process send)."""
    queue = f"digest-bench-{uuid.uuid4().hex[:8]}"
    with own_schema() as url, ProcessSink() as sink:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
            "DIGEST_CONFIG": str(workdir / "demo" / "digest.toml"),
            "DIGEST_DATABASE_URL": url,
            "DIGEST_TRANSPORT": "smtp",
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(sink.port),
            "DIGEST_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "DIGEST_BASE_URL": "https://digest.example",
            "DIGEST_VAR_DIR": str(workdir / "var"),
            "DIGEST_BROKER_URL": BROKER,
            "DIGEST_BROKER_QUEUE": queue,
        }
        settings = load_settings(
            config=workdir / "demo" / "digest.toml",
            database_url=url,
            secret_key="bench-secret-key-0123456789abcdef",
            base_url="https://digest.example",
            broker_url=BROKER,
            broker_queue=queue,
            transport="smtp",
            smtp_port=sink.port,
        )
        newsletter = load_newsletter(settings.config)
        engine = open_database(url)
        pipeline.collect(newsletter, engine=engine, clock=FixedClock(NOW))
        seed_subscribers(engine, count)
        with session_scope(engine) as session:
            editions.build_edition(newsletter, session=session, edition_date=NOW.date(), now=NOW, zone=UTC)
        if workers == 0:  # the bar: everything in this process, no broker
            start = time.perf_counter()
            single = pipeline.send_edition(
                settings,
                newsletter,
                engine=engine,
                transport=make_transport(settings, clock=system_clock),
                edition_date=NOW.date(),
                clock=system_clock,
            )
            seconds = time.perf_counter() - start
            engine.dispose()
            assert single.sent == count, single
            return seconds
        with started_workers(env, workdir, workers, *options):
            from digest.distributed import celery_enqueue, make_app

            app = make_app(settings)
            start = time.perf_counter()
            report = fanout.send_distributed(
                settings,
                newsletter,
                engine=engine,
                edition_date=NOW.date(),
                clock=system_clock,
                enqueue=celery_enqueue(app, settings),
                sleep=time.sleep,
                poll_seconds=0.05,
            )
            seconds = time.perf_counter() - start
            app.close()
        engine.dispose()
    assert report.sent == count, report
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--worker-options", default="", help="digest worker options (default: none)")
    args = parser.parse_args()
    count, options = args.count, shlex.split(args.worker_options)
    workers_note = " ".join(options) or "defaults (--pool threads --concurrency 8)"
    why = available()
    if why:
        print(f"skipped: {why}")
        return
    import shutil
    import tempfile

    import make_feeds

    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-dist-"))
    try:
        (workdir / "demo").mkdir()
        root = HERE.parent / "examples" / "demo"
        (workdir / "demo" / "digest.toml").write_text((root / "digest.toml").read_text())
        make_feeds.write_feeds(workdir / "demo" / "feeds", NOW)
        results = [(n, run(count, n, workdir, options)) for n in (0, 1, 2)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for workers, seconds in results:
        case = f"{workers} worker(s)" if workers else "single process (no broker)"
        print(f"  {case}: {count / seconds:.0f} msg/s, {seconds:.1f} s")
        print(
            "BENCH "
            + json.dumps(
                {
                    "benchmark": "distributed",
                    "metric": f"distributed send, {case}: messages per second ({count:,})",
                    "value": round(count / seconds),
                    "unit": "msg/s",
                    "note": f"{seconds:.1f} s; PostgreSQL ledger, loopback SMTP; "
                    + (
                        f"Redis broker, batches of 500 rows; workers: {workers_note}"
                        if workers
                        else "one `digest send`, the bar a worker must reach"
                    ),
                }
            )
        )


if __name__ == "__main__":
    main()
