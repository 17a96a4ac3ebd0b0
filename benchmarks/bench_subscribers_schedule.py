"""Subscriber import/export at scale (memory and speed) and the quarter-hourly dispatch with a
large list.

Run: python benchmarks/bench_subscribers_schedule.py [subscribers] [--csv-rows 20000,200000]
     [--database-url URL ...]
`subscribers` (default 20,000) is the list the dispatch ticks run over (SQLite, temp dir).
`--csv-rows` are the file sizes for `digest subscribers import` and `export`: each runs as its own
process through the CLI, as a user runs it, and reports its rows per second over the whole
process (exec to exit, start-up included; also the CPU seconds from wait4 and the rate after the
imports) and its own peak resident size (VmHWM, as bench_memory.py). The import is read against
issue 15's targets: >= 20,000 rows/s, and under 200 MB at its largest size. On SQLite, and
PostgreSQL too when DIGEST_BENCH_DATABASE_URL (default the test database on 127.0.0.1) answers.
"""

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from as_user import bench_row, load_average, run  # noqa: E402
from bench_memory import PROBE, add_database_option, databases, fresh_database, kind  # noqa: E402

from digest.config import load_settings  # noqa: E402
from digest.db.engine import open_database, session_scope  # noqa: E402
from digest.db.models import Delivery, Edition, Subscriber  # noqa: E402
from digest.deliver.memory import MemoryTransport  # noqa: E402
from digest.newsletter import Newsletter  # noqa: E402
from digest.runners.local import LocalRunner  # noqa: E402
from digest.schedule import dispatch  # noqa: E402
from digest.subscribers.csvfile import import_csv  # noqa: E402

ZONES = [
    "Pacific/Honolulu", "America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York",
    "America/Sao_Paulo", "Atlantic/Azores", "UTC", "Europe/London", "Europe/Paris", "Europe/Berlin",
    "Europe/Helsinki", "Europe/Moscow", "Asia/Dubai", "Asia/Karachi", "Asia/Kolkata", "Asia/Kathmandu",
    "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo", "Australia/Adelaide", "Australia/Sydney",
    "Pacific/Auckland", "Pacific/Chatham", "Pacific/Kiritimati",
]  # fmt: skip
TOPICS = ["EV industry", "Robotics", "Smartphones", "More news"]
IMPORT_RATE = 20_000  # rows/s, whole process (issue 15)
IMPORT_PEAK = 200_000_000  # bytes, at the largest size (issue 15: "under 200 MB")


def bench(metric: str, value: float, unit: str, note: str) -> None:
    row = {"benchmark": "subscribers+schedule", "metric": metric, "value": round(value, 3)}
    print("BENCH " + json.dumps({**row, "unit": unit, "note": note}))


def write_list(path: Path, n: int) -> None:
    """A subscriber CSV of `n` valid rows."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "topics", "timezone"])
        for i in range(n):
            writer.writerow([f"Reader.{i}@Example.com", f"Reader {i}", TOPICS[i % 4], ZONES[i % len(ZONES)]])


class Run(NamedTuple):
    """One measured CLI command."""

    kib: int  # the process's peak resident size
    imported_kib: int  # its peak right after importing digest (the fixed cost)
    seconds: float  # the command itself, imports excluded
    cpu: float  # its CPU seconds: on a busy machine, the figure that says what the code costs
    stdout: str
    whole: float  # the whole process, exec to exit: what the user waits for
    whole_cpu: float  # its CPU seconds (wait4)


def run_cli(env: dict[str, str], *args: str) -> Run:
    """`digest *args` in its own process, measured."""
    proc = run([sys.executable, "-c", PROBE, *args], env=env)
    if proc.returncode:
        raise SystemExit(f"digest {' '.join(args)} failed:\n{proc.output}")
    found = {w: v for w, _, v in (line.partition(" ") for line in proc.output.splitlines())}
    return Run(
        int(found["PEAK"]),
        int(found["IMPORTED"]),
        float(found["SECONDS"]),
        float(found["CPU"]),
        proc.output,
        proc.seconds,
        proc.cpu,
    )


def csv_at_scale(n: int, url: str) -> tuple[Run, Run]:
    """`digest subscribers import` of `n` new rows, then `export` of them, on a fresh database."""
    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-csv-"))
    try:
        write_list(workdir / "list.csv", n)
        toml = "\n".join(
            ['[newsletter]', 'title = "T"', 'from_email = "d@example.com"', 'postal_address = "1 St"']
            + [f'[[topics]]\nname = "{t}"' for t in TOPICS]
        )  # fmt: skip
        (workdir / "digest.toml").write_text(toml + "\n")
        with fresh_database(url, workdir) as database_url:
            open_database(database_url).dispose()  # migrated before the clock starts
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
                "DIGEST_CONFIG": str(workdir / "digest.toml"),
                "DIGEST_DATABASE_URL": database_url,
                "DIGEST_VAR_DIR": str(workdir / "var"),
            }
            imported = run_cli(env, "subscribers", "import", str(workdir / "list.csv"))
            assert f"added {n}," in imported.stdout, imported.stdout
            exported = run_cli(env, "subscribers", "export", str(workdir / "out.csv"))
            with (workdir / "out.csv").open(encoding="utf-8") as fh:
                assert sum(1 for _ in fh) == n + 1
        return imported, exported
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_csv(counts: list[int], urls: list[str]) -> None:
    """Import and export through the CLI at each size: rows/s and peak memory, and its growth."""
    for url in urls:
        peaks: dict[str, list[tuple[int, Run]]] = {"import": [], "export": []}
        for n in counts:
            imported, exported = csv_at_scale(n, url)
            load = load_average()
            for what, r in (("import", imported), ("export", exported)):
                peaks[what].append((n, r))
                print(
                    f"  {kind(url):<10} {what} {n:>7} rows: {n / r.whole:,.0f} rows/s whole process "
                    f"({r.whole:.2f} s, {r.whole_cpu:.2f} s CPU; {n / r.seconds:,.0f} rows/s after imports), "
                    f"peak {r.kib / 1024:.1f} MiB ({r.imported_kib / 1024:.1f} MiB after imports)"
                )
                note = (
                    f"digest subscribers {what}, whole process {r.whole:.2f} s ({r.whole_cpu:.2f} s CPU: "
                    f"{n / r.whole_cpu:,.0f} rows per CPU second); after imports {r.seconds:.2f} s "
                    f"({n / r.seconds:,.0f} rows/s); peak {r.kib / 1024:.0f} MiB (VmHWM; "
                    f"{r.imported_kib / 1024:.0f} MiB after imports); load {load}"
                )
                if what == "import":
                    rate = n / r.whole
                    bench_row(
                        "subscribers+schedule",
                        f"import (validate + insert), {n:,} rows, {kind(url)}",
                        round(rate),
                        "rows/s",
                        target=f">= {IMPORT_RATE:,} rows/s",
                        met=rate >= IMPORT_RATE,
                        note=note,
                    )
                else:
                    bench(f"export, {n:,} rows, {kind(url)}", n / r.whole, "rows/s", note)
        largest, last = peaks["import"][-1]
        bench_row(
            "subscribers+schedule",
            f"import peak memory, {largest:,} rows, {kind(url)}",
            round(last.kib * 1024 / 1e6),
            "MB",
            target=f"< {IMPORT_PEAK // 1_000_000} MB",
            met=last.kib * 1024 < IMPORT_PEAK,
            note=f"whole process (VmHWM), {last.kib / 1024:.0f} MiB; "
            f"{last.imported_kib / 1024:.0f} MiB after imports",
        )
        for what, runs in peaks.items():
            (small, first), (large, last) = runs[0], runs[-1]
            if large > small:
                bench(
                    f"{what}: growth of the peak from {small:,} to {large:,} rows, {kind(url)}",
                    (last.kib - first.kib) / 1024,
                    "MiB",
                    "streamed: rows are read, checked and written a batch at a time",
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subscribers", nargs="?", type=int, default=20_000)
    parser.add_argument("--csv-rows", default="20000,200000")
    add_database_option(parser)
    args = parser.parse_args()
    bench_csv([int(c) for c in args.csv_rows.split(",")], databases(args.database_url))

    n = args.subscribers
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "list.csv"
        write_list(path, n)
        engine = open_database(f"sqlite:///{folder / 'digest.db'}")
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

        with session_scope(engine) as session:  # the list (import and export are measured above)
            report = import_csv(path, session=session, now=now, known_topics=TOPICS)
        assert report.added == n

        # A quiet tick: every zone's latest edition is already sent to everyone.
        with session_scope(engine) as session:
            ids = list(session.execute(sa.select(Subscriber.id)).scalars())  # type: ignore[call-overload]
            for day in (date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)):
                edition = Edition(date=day, subject="s", content_json="{}", built_at=now)
                session.add(edition)
                session.flush()
                session.execute(
                    sa.insert(Delivery),
                    [{"edition_id": edition.id, "subscriber_id": i, "status": "sent", "attempts": 1,
                      "updated_at": now} for i in ids],
                )  # fmt: skip
        settings = load_settings(database_url=str(engine.url), var_dir=folder / "var", timezone="UTC")
        newsletter = Newsletter.model_validate(
            {"newsletter": {"title": "T", "from_email": "d@example.com", "postal_address": "1 St"},
             "topics": [{"name": t} for t in TOPICS[:3]]}
        )  # fmt: skip
        transport = MemoryTransport()
        ticks = 20
        started = time.perf_counter()
        for k in range(ticks):
            dispatch.dispatch(
                settings,
                newsletter,
                engine=engine,
                clock=lambda k=k: now + timedelta(minutes=15 * k),  # type: ignore[misc]
                runner=LocalRunner(settings, transport_factory=lambda: transport),
                owner="bench",
            )
        took = (time.perf_counter() - started) / ticks
        assert transport.sent == []
        bench("quiet dispatch tick", took * 1000, "ms", f"{n} subscribers in {len(ZONES)} zones, nothing due")
        engine.dispose()


if __name__ == "__main__":
    main()
