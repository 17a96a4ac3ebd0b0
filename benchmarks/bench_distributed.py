"""The distributed send as the user runs it: one edition to N subscribers (default 20,000) by a
single `digest send` process, and by `digest send` handing it to 1 and to 2 `digest worker`
processes; PostgreSQL ledger, Redis broker, SMTP to a loopback sink.

Usage: python benchmarks/bench_distributed.py [--count N] [--worker-options "--pool solo"]
(prints `BENCH {json}` lines; the workers start with `digest worker`'s defaults unless given options)

Needs PostgreSQL (DIGEST_BENCH_DATABASE_URL, default the test database on 127.0.0.1) and Redis
(DIGEST_BENCH_BROKER_URL, default redis://127.0.0.1:6379/12); prints a note and no figures
when either is missing. Each run gets its own schema and queue, the demo newsletter collected and
N readers imported by `digest collect` and `digest subscribers import` (not timed); the workers,
long-running services, are started and ready before the clock starts. What is timed is the
`digest send` process from exec to exit (as_user.py), start-up included, as a user or cron waits
for it; in distributed mode it queues batches of DIGEST_SEND_BATCH_SIZE rows and polls the
ledger every second until every row has its answer. The fixed cost of a send, a `digest send`
that finds nothing left to send, is measured after the single-process run.

Each case runs --repeat times (default 3), the cases interleaved; the median run is reported.

Targets (issue 15, reported not asserted): one worker >= 0.95 times and two workers >= 1.7 times
the single process's rate.
"""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from as_user import Run, bench_row, console_script, digest, environment, load_average  # noqa: E402
from bench_cli_send import demo_newsletter, write_readers  # noqa: E402
from smtp_sink import ProcessSink  # noqa: E402

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
                        [console_script(), "worker", *options, "--name", f"b{i}@%h"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            while b"ready." not in log.read_bytes():
                if procs[-1].poll() is not None:
                    why = log.read_text()[-3000:]
                    raise SystemExit(f"digest worker exited {procs[-1].returncode}:\n{why}")
                time.sleep(0.1)
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)


def ledger_writes(url: str, wal_before: int, count: int) -> str:
    """What the send wrote to PostgreSQL: WAL bytes a message (all of the server's, the edition's
    build included) and the share of the ledger's updates that were HOT (no index entry)."""
    wal = wal_position(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'delivery'::regclass"
            )
            for _ in range(50):  # a backend reports its counts as it exits, a moment after the send
                updated, hot = conn.execute(query).one()
                if updated >= 2 * count:
                    break
                time.sleep(0.1)
                conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    finally:
        engine.dispose()
    share = hot / max(updated, 1)
    return f"WAL {(wal - wal_before) / count:,.0f} B/msg, {share:.0%} of {updated:,} ledger updates HOT"


def wal_position(url: str) -> int:
    """The server's write-ahead log position, in bytes."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar_one())
    finally:
        engine.dispose()


def run(count: int, workers: int, workdir: Path, options: list[str]) -> tuple[Run, Run | None, str]:
    """The timed `digest send` to `count` readers with `workers` worker processes (0: no broker,
    the single process), for the single process a second send finding nothing left, and what
    the send wrote to PostgreSQL (ledger_writes)."""
    queue = f"digest-bench-{uuid.uuid4().hex[:8]}"
    with own_schema() as url, ProcessSink() as sink:
        env = environment(
            DIGEST_CONFIG=str(workdir / "demo" / "digest.toml"),
            DIGEST_DATABASE_URL=url,
            DIGEST_TRANSPORT="smtp",
            DIGEST_SMTP_HOST="127.0.0.1",
            DIGEST_SMTP_PORT=str(sink.port),
            DIGEST_SECRET_KEY="bench-secret-key-0123456789abcdef",
            DIGEST_BASE_URL="https://digest.example",
            DIGEST_VAR_DIR=str(workdir / "var"),
        )
        digest("collect", env=env).check()
        digest("subscribers", "import", str(workdir / "readers.csv"), env=env).check()
        wal = wal_position(url)
        if workers == 0:  # the bar: everything in one process, no broker
            sent = digest("send", env=env).check(f"sent {count}")
            writes = ledger_writes(url, wal, count)
            return sent, digest("send", env=env).check("nothing left to send"), writes
        env |= {"DIGEST_BROKER_URL": BROKER, "DIGEST_BROKER_QUEUE": queue}
        with started_workers(env, workdir, workers, *options):
            sent = digest("send", env=env).check(f"sent {count}")
        return sent, None, ledger_writes(url, wal, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--worker-options", default="", help="digest worker options (default: none)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each case, interleaved; the median is reported"
    )
    args = parser.parse_args()
    count, options = args.count, shlex.split(args.worker_options)
    workers_note = " ".join(options) or "defaults (--pool threads --concurrency 8)"
    why = available()
    if why:
        print(f"skipped: {why}")
        return
    import shutil

    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-dist-"))
    try:
        demo_newsletter(workdir)
        write_readers(workdir / "readers.csv", count)
        load = load_average()
        # Interleaved, so that a slow minute of this shared machine touches every case alike.
        runs: dict[int, list[tuple[Run, Run | None, str]]] = {0: [], 1: [], 2: []}
        for _ in range(max(1, args.repeat)):
            for n in runs:
                runs[n].append(run(count, n, workdir, options))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {n: sorted(each, key=lambda r: r[0].seconds)[len(each) // 2] for n, each in runs.items()}
    spread = {n: ", ".join(f"{r.seconds:.1f}" for r, _, _ in each) for n, each in runs.items()}
    single, idle, _ = results[0]
    assert idle is not None
    for workers, (sent, _, writes) in results.items():
        case = f"{workers} worker{'s' if workers > 1 else ''}" if workers else "single process (no broker)"
        print(f"  {case}: {count / sent.seconds:.0f} msg/s, {sent.seconds:.1f} s, CPU {sent.cpu:.1f} s")
        bench_row(
            "distributed",
            f"digest send, {case}: messages per second ({count:,})",
            round(count / sent.seconds),
            "msg/s",
            peer=f"fixed cost of a send with nothing left: {idle.seconds:.1f} s" if not workers else "",
            note=f"{sent.seconds:.1f} s whole process; PostgreSQL ledger, loopback SMTP; "
            + (
                f"Redis broker; workers: {workers_note}"
                if workers
                else f"one `digest send`, the bar for the workers; CPU {sent.cpu:.1f} s"
            )
            + f"; {writes}; median of {len(runs[workers])} ({spread[workers]} s); load {load} at the start",
        )
    for workers, target in ((1, 0.95), (2, 1.7)):
        ratio = single.seconds / results[workers][0].seconds
        bench_row(
            "distributed",
            f"{workers} worker{'s' if workers > 1 else ''} / single process",
            round(ratio, 2),
            "x",
            peer=f"single process: {count / single.seconds:.0f} msg/s",
            target=f">= {target}x",
            met=ratio >= target,
            note=f"rate with {workers} `digest worker` over that of one `digest send`, {count:,} messages",
        )


if __name__ == "__main__":
    main()
