"""Subscriber import/export and the quarter-hourly dispatch with a large list (SQLite, temp dir).

Run: python benchmarks/bench_subscribers_schedule.py [subscribers]   (default 20,000)
"""

import csv
import io
import json
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from digest import dispatch
from digest.config import Newsletter, load_settings
from digest.db.engine import open_database, session_scope
from digest.db.models import Delivery, Edition, Subscriber
from digest.deliver.memory import MemoryTransport
from digest.subscribers import export_rows, import_csv, write_csv

ZONES = [
    "Pacific/Honolulu", "America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York",
    "America/Sao_Paulo", "Atlantic/Azores", "UTC", "Europe/London", "Europe/Paris", "Europe/Berlin",
    "Europe/Helsinki", "Europe/Moscow", "Asia/Dubai", "Asia/Karachi", "Asia/Kolkata", "Asia/Kathmandu",
    "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo", "Australia/Adelaide", "Australia/Sydney",
    "Pacific/Auckland", "Pacific/Chatham", "Pacific/Kiritimati",
]  # fmt: skip
TOPICS = ["EV industry", "Robotics", "Smartphones", "More news"]


def bench(metric: str, value: float, unit: str, note: str) -> None:
    row = {"benchmark": "subscribers+schedule", "metric": metric, "value": round(value, 3)}
    print("BENCH " + json.dumps({**row, "unit": unit, "note": note}))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "list.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["email", "name", "topics", "timezone"])
            for i in range(n):
                writer.writerow(
                    [f"Reader.{i}@Example.com", f"Reader {i}", TOPICS[i % 4], ZONES[i % len(ZONES)]]
                )
        engine = open_database(f"sqlite:///{folder / 'digest.db'}")
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

        started = time.perf_counter()
        with session_scope(engine) as session:
            report = import_csv(path, session=session, now=now, known_topics=TOPICS)
        took = time.perf_counter() - started
        assert report.added == n
        bench("import (validate + insert)", n / took, "rows/s", f"{n} rows, SQLite, {took:.2f} s")

        started = time.perf_counter()
        with session_scope(engine) as session:
            out = io.StringIO()
            write_csv(export_rows(session=session), out)
        took = time.perf_counter() - started
        bench("export", n / took, "rows/s", f"{n} rows, {took:.2f} s")

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
                transport_factory=lambda: transport,
                owner="bench",
            )
        took = (time.perf_counter() - started) / ticks
        assert transport.sent == []
        bench("quiet dispatch tick", took * 1000, "ms", f"{n} subscribers in {len(ZONES)} zones, nothing due")
        engine.dispose()


if __name__ == "__main__":
    main()
