"""Peak memory of `digest send` at 10,000 and 100,000 subscribers: it must stay flat.

Usage: python benchmarks/bench_memory.py [--counts 10000,100000] [--database-url URL ...]
(prints `BENCH {json}` lines). By default it measures a SQLite ledger, and PostgreSQL too when
DIGEST_BENCH_DATABASE_URL (default the test database on 127.0.0.1) answers; `--database-url`
names the databases instead (`sqlite` for a fresh SQLite file; a PostgreSQL URL gets its own
schema, dropped afterwards).

Each send runs as its own `digest send` process (SMTP to a loopback sink in another process) and
reports its own peak resident size, VmHWM from /proc/self/status. Not getrusage's ru_maxrss:
Linux carries the parent's high-water mark over fork and exec into the child's ru_maxrss, so a
child of this script would report the benchmark's setup (the subscribers it seeded), not itself.
The ledger is read in batches of DIGEST_SEND_BATCH_SIZE rows; nothing holds every subscriber.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_distributed import own_schema  # noqa: E402
from bench_send import NOW, setup  # noqa: E402
from smtp_sink import ProcessSink  # noqa: E402

from digest import editions  # noqa: E402
from digest.db.engine import session_scope  # noqa: E402

PG = os.environ.get("DIGEST_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Runs `digest ARGS...` in the child; prints its high-water mark after the imports and at exit,
# and the seconds (wall and CPU) the command itself took (imports excluded).
PROBE = (
    "import atexit, sys, time\n"
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1])\n"
    "from digest.cli import main\n"
    "print('IMPORTED', hwm(), flush=True)\n"
    "start, cpu = time.perf_counter(), time.process_time()\n"
    "atexit.register(lambda: print('PEAK', hwm(), '\\nSECONDS', time.perf_counter() - start,\n"
    "                              '\\nCPU', time.process_time() - cpu, flush=True))\n"
    "sys.argv = ['digest', *sys.argv[1:]]\n"
    "main()\n"
)


class Peak(NamedTuple):
    """One measured send."""

    kib: int  # the sending process's peak resident size
    imported_kib: int  # its peak right after importing digest (the fixed cost)
    seconds: float


def kind(url: str) -> str:
    """'SQLite' or 'PostgreSQL', for the table."""
    return "SQLite" if url == "sqlite" or url.startswith("sqlite") else "PostgreSQL"


@contextmanager
def fresh_database(url: str, workdir: Path) -> Iterator[str]:
    """An empty database for one run: a SQLite file, or a new PostgreSQL schema (dropped after)."""
    if kind(url) == "SQLite":
        yield f"sqlite:///{workdir / 'digest.db'}"
        return
    with own_schema(url) as schema_url:
        yield schema_url


def peak_of_send(count: int, url: str) -> Peak:
    """The peak memory of a `digest send` process sending an edition to `count` subscribers."""
    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-mem-"))
    try:
        with fresh_database(url, workdir) as database_url:
            settings, newsletter, engine = setup(workdir, count, database_url)
            with session_scope(engine) as session:  # the edition, frozen with the benchmark's clock
                editions.build_edition(
                    newsletter, session=session, edition_date=NOW.date(), now=NOW, zone=UTC
                )  # type: ignore[arg-type]
            engine.dispose()
            with ProcessSink() as sink:
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
                    "DIGEST_CONFIG": str(settings.config),  # type: ignore[attr-defined]
                    "DIGEST_DATABASE_URL": database_url,
                    "DIGEST_TRANSPORT": "smtp",
                    "DIGEST_SMTP_HOST": "127.0.0.1",
                    "DIGEST_SMTP_PORT": str(sink.port),
                    "DIGEST_SECRET_KEY": "bench-secret-key-0123456789abcdef",
                    "DIGEST_BASE_URL": "https://digest.example",
                    "DIGEST_VAR_DIR": str(workdir / "var"),
                }
                start = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", PROBE, "send", "--date", NOW.date().isoformat()],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                seconds = time.perf_counter() - start
        assert f"sent {count}" in proc.stdout, proc.stdout + proc.stderr
        found = {
            word: int(value)
            for word, _, value in (line.partition(" ") for line in proc.stdout.splitlines())
            if word in ("PEAK", "IMPORTED")
        }
        return Peak(found["PEAK"], found["IMPORTED"], seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def reachable(url: str) -> str | None:
    """Why a PostgreSQL URL cannot be used, or None."""
    try:
        sa.create_engine(url).connect().close()
    except sa.exc.OperationalError as e:
        return f"PostgreSQL at {url} unreachable ({type(e).__name__})"
    return None


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """--database-url, repeatable (see `databases`)."""
    parser.add_argument(
        "--database-url",
        action="append",
        help="'sqlite' or a PostgreSQL URL (repeatable); default: SQLite, and PostgreSQL if it answers",
    )


def databases(given: list[str] | None) -> list[str]:
    """The databases to measure: those given, else SQLite and PostgreSQL when it answers."""
    if given:
        return given
    why = reachable(PG)
    if why:
        print(f"PostgreSQL skipped: {why}")
        return ["sqlite"]
    return ["sqlite", PG]


def bench_line(metric: str, value: float, note: str) -> str:
    """One `BENCH` line for run.py."""
    return "BENCH " + json.dumps(
        {"benchmark": "memory", "metric": metric, "value": value, "unit": "MiB", "note": note}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,100000")
    add_database_option(parser)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    urls = databases(args.database_url)
    lines = []
    for url in urls:
        results = [(count, peak_of_send(count, url)) for count in counts]
        for count, peak in results:
            print(
                f"  {kind(url):<10} {count:>7} subscribers: peak {peak.kib / 1024:.1f} MiB "
                f"({peak.imported_kib / 1024:.1f} MiB after imports), {peak.seconds:.1f} s"
            )
            lines.append(
                bench_line(
                    f"digest send peak memory, {count:,} subscribers, {kind(url)}",
                    round(peak.kib / 1024, 1),
                    f"whole process (VmHWM), {peak.imported_kib / 1024:.0f} MiB of it after imports; "
                    f"SMTP to a loopback sink; {peak.seconds:.0f} s",
                )
            )
        (small, first), (large, last) = results[0], results[-1]
        if large > small:
            lines.append(
                bench_line(
                    f"growth of the peak from {small:,} to {large:,} subscribers, {kind(url)}",
                    round((last.kib - first.kib) / 1024, 1),
                    "flat: the ledger is read in batches, nothing holds every subscriber",
                )
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
