"""The distributed collect: bench_collect's 200 feeds x 50 entries (each answering after 200 ms, on
40 loopback hosts) fetched and parsed by 2 `digest worker` processes, one task per source, and
stored by the coordinator in PostgreSQL; Redis is the broker. Two worker shapes: solo (one task
at a time each) and a thread pool of 8. A second collect, where every feed answers 304, too.

Usage: python benchmarks/bench_distributed_collect.py [--feeds 200] [--entries 50] [--latency 0.2]

Needs PostgreSQL and Redis as bench_distributed.py does (DIGEST_BENCH_DATABASE_URL,
DIGEST_BENCH_BROKER_URL); prints a note and no figures when either is missing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_collect import NOW, expected_stories, newsletter_file  # noqa: E402
from bench_distributed import BROKER, available, own_schema, started_workers  # noqa: E402

from digest import pipeline  # noqa: E402
from digest.clock import FixedClock  # noqa: E402
from digest.config import load_settings  # noqa: E402
from digest.db.engine import open_database  # noqa: E402
from digest.newsletter import load_newsletter  # noqa: E402


def run(ports: dict[str, int], feeds: int, pool: list[str], folder: Path) -> dict[str, float]:
    """Both collects with 2 workers started with `pool` options; seconds and counts."""
    queue = f"digest-bench-{uuid.uuid4().hex[:8]}"
    config = newsletter_file(folder, ports, feeds)
    with own_schema() as url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
            "DIGEST_CONFIG": str(config),
            "DIGEST_DATABASE_URL": url,
            "DIGEST_VAR_DIR": str(folder / "var"),
            "DIGEST_BROKER_URL": BROKER,
            "DIGEST_BROKER_QUEUE": queue,
        }
        engine = open_database(url)
        settings = load_settings(config=config, database_url=url, broker_url=BROKER, broker_queue=queue)
        newsletter = load_newsletter(config)
        with started_workers(env, folder, 2, *pool):
            started = time.perf_counter()
            results = pipeline.collect(newsletter, engine=engine, clock=FixedClock(NOW), settings=settings)
            first = time.perf_counter() - started
            started = time.perf_counter()
            later = NOW + timedelta(hours=1)
            again = pipeline.collect(newsletter, engine=engine, clock=FixedClock(later), settings=settings)
            second = time.perf_counter() - started
        with engine.connect() as conn:
            stories = conn.exec_driver_sql("SELECT count(*) FROM story").scalar_one()
        engine.dispose()
    return {
        "first": first,
        "second": second,
        "new": sum(r.new for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "unchanged": sum(r.status == "unchanged" for r in again),
        "stories": stories,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    why = available()
    if why:
        print(f"skipped: {why}")
        return 0
    server = subprocess.Popen(
        [
            *(sys.executable, str(HERE / "bench_collect.py"), "--serve"),
            *("--feeds", str(args.feeds), "--entries", str(args.entries), "--latency", str(args.latency)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        shapes = {
            "2 solo workers": ["--pool", "solo"],
            "2 workers x 8 threads": ["--pool", "threads", "--concurrency", "8"],
        }
        measured = {}
        for shape, pool in shapes.items():
            with tempfile.TemporaryDirectory() as tmp:
                measured[shape] = run(ports, args.feeds, pool, Path(tmp))
    finally:
        server.terminate()
        server.wait(timeout=30)
    perfect = expected_stories(args.feeds, args.entries)
    note = f"{args.feeds} feeds x {args.entries} entries, {args.latency * 1000:.0f} ms; PostgreSQL, Redis"
    print(f"  load average before: {load}")
    for shape, m in measured.items():
        print(
            f"  {shape}: first collect {m['first']:.2f} s ({m['new']:.0f} new, {m['failed']:.0f} failed, "
            f"{m['stories']:.0f} stories, perfect {perfect}); second (304s) {m['second']:.2f} s, "
            f"{m['unchanged']:.0f} unchanged"
        )
        for metric, value in (("first collect", m["first"]), ("second collect (304s)", m["second"])):
            row = {
                "benchmark": "distributed collect",
                "metric": f"{metric}, {shape}",
                "value": round(value, 2),
            }
            print("BENCH " + json.dumps({**row, "unit": "s", "note": note}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
