"""`digest collect` over 1,000 feeds x 10 entries as the user runs it: time and peak memory.

As bench_cli_collect.py, piped: each feed on its own loopback host (127.0.1.1 ... 127.0.4.250)
answering after 200 ms, a fresh SQLite database (migrated first, not timed), the first collect and
the second (every feed answers 304), each a whole process timed from exec to exit, with its peak
resident size (ru_maxrss from wait4: the largest of the digest process and the workers it
waited for) beside that of `digest --help` (the imports alone). The network floor is the latency
times the rounds that DIGEST_FETCH_CONCURRENCY (default 1,024) requests at once need for every feed.

Targets (issue 15, reported not asserted): first collect <= 5 s, second <= 2 s.

Usage: python benchmarks/bench_cli_collect_many.py [--feeds 1000] [--entries 10] [--latency 0.2]
       [--repeats 3]
"""

import argparse
import math
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from as_user import bench_row, digest, environment, load_average, own_peak_kib  # noqa: E402
from bench_cli_collect import FETCH_CONCURRENCY, collect_medians, newsletter  # noqa: E402
from news_feeds import FeedServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3, help="fresh databases collected twice (medians)")
    args = parser.parse_args()
    feeds, entries = args.feeds, args.entries
    shape = f"{feeds:,} feeds x {entries} entries on {feeds:,} hosts, {args.latency * 1000:.0f} ms"
    floor = args.latency * math.ceil(feeds / FETCH_CONCURRENCY)
    with (
        FeedServer(feeds, entries, args.latency, datetime.now(UTC)) as server,
        tempfile.TemporaryDirectory(prefix="digest-bench-many-") as tmp,
    ):
        workdir = Path(tmp)
        result, first_range, second_range = collect_medians(
            server, newsletter(workdir, server.urls), workdir / "piped", tty=False, repeats=args.repeats
        )
        imports = digest("--help", env=environment()).check()
    first, second = result.first, result.second
    print(
        f"{shape}: first {first.seconds:.2f} s (CPU {first.cpu:.2f} s, peak {first.peak_kib / 1024:.0f} MiB,"
        f" {result.stories} stories), second {second.seconds:.2f} s (CPU {second.cpu:.2f} s,"
        f" peak {second.peak_kib / 1024:.0f} MiB); load {result.load} before, {load_average()} after"
    )
    print(f"(peaks are ru_maxrss; this process peaked at {own_peak_kib() / 1024:.0f} MiB, their floor)")
    for which, done, target, spread in (
        ("first", first, 5.0, first_range),
        ("second (all 304)", second, 2.0, second_range),
    ):
        bench_row(
            "cli collect many",
            f"{which} digest collect, {feeds:,} feeds",
            round(done.seconds, 2),
            "s",
            peer=f"network floor {floor:.1f} s",
            target=f"<= {target:.0f} s",
            met=done.seconds <= target,
            note=f"{shape}; {spread}; piped; SQLite; CPU {done.cpu:.1f} s all processes; load {result.load}",
        )
        bench_row(
            "cli collect many",
            f"{which} digest collect, {feeds:,} feeds: peak memory",
            round(done.peak_kib / 1024),
            "MiB",
            peer=f"digest --help: {imports.peak_kib / 1024:.0f} MiB",
            note="ru_maxrss: the largest of the digest process and its parse workers",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
