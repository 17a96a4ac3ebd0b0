"""The clock is a dependency (issue 11): made at the door, handed down; no stage reads the wall."""

import ast
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from digest.clock import FixedClock, RunningClock
from digest.config import load_settings
from digest.db.models import CollectResult
from digest.runners.collect_tasks import CollectTask
from tests.feedbuilder import Item, rss, write

SRC = Path(__file__).resolve().parents[1] / "src" / "digest"
# Reading the wall clock: only `digest.clock.system_clock` may, and a door hands it down.
WALL = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}
WALL_TIME = {"time", "time_ns", "localtime", "gmtime", "ctime", "strftime"}


def _wall_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name):
            continue
        owner, name = node.value.id, node.attr
        if (owner, name) in WALL or (owner == "time" and name in WALL_TIME) or name == "utc_now":
            found.append(f"{path.relative_to(SRC)}: {owner}.{name}")
    return found


def test_only_the_clock_module_reads_the_wall_clock() -> None:
    reads = [r for path in sorted(SRC.rglob("*.py")) for r in _wall_reads(path)]
    # SendGrid's X-RateLimit-Reset is an epoch of SendGrid's clock: compared with the real one,
    # never with a date of ours (a transport is built at the door; tests hand in their own).
    assert reads == ["clock.py: datetime.now", "deliver/sendgrid.py: time.time"]


def test_a_worker_stamps_what_it_stages_with_its_own_clock(
    tmp_path: Path, db_url: str, engine: sa.Engine
) -> None:
    from digest.runners import celery

    feed = write(tmp_path / "feed.xml", rss([Item("Robot news", "https://w.example/1")]))
    settings = load_settings(database_url=db_url)
    at = datetime.fromisoformat("2031-02-03T04:05:06+00:00")
    state = celery.WorkerState(settings, clock=FixedClock(at))
    try:
        assert state.collect_source(CollectTask("run-1", "wire", str(feed)))
    finally:
        state.engine().dispose()
    with Session(engine) as session:
        row = session.exec(select(CollectResult)).one()
    assert row.created_at == at


def test_a_running_clock_starts_where_it_is_told_and_keeps_the_real_pace() -> None:
    start = datetime.fromisoformat("2026-11-25T07:00:00+00:00")
    clock = RunningClock(start)
    assert clock() == start  # the first reading, whenever it is taken
    assert start <= clock() < start + timedelta(minutes=1)
