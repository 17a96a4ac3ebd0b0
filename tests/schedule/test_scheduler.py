"""The scheduler: the lease, the job store in the database, and real processes (two schedulers at
once; SIGTERM in the middle of a send)."""

import os
import pickle
import signal
import subprocess
import sys
import threading
import time as timing
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlmodel import Session, col, select

from digest.clock import Clock
from digest.db.models import Delivery, SchedulerLease, ScheduleRun
from digest.schedule.lease import Lease, current_holder
from digest.schedule.scheduler import JOB_FUNC, Scheduler, SchedulerThread
from digest.schedule.status import JOBS_TABLE
from tests.schedule_helpers import NEWSLETTER_TOML, add_story, add_subscribers, newsletter, settings
from tests.web_helpers import Inbox, smtp_server

# --- the lease --------------------------------------------------------------------------------


def test_one_holder_at_a_time_and_takeover_after_expiry(engine: sa.Engine, now: datetime) -> None:
    ttl = timedelta(seconds=30)
    a, b = Lease(engine, "a", ttl=ttl), Lease(engine, "b", ttl=ttl)
    assert a.acquire(now)
    assert not b.acquire(now)
    assert a.acquire(now + timedelta(seconds=20))  # renewal moves the expiry on
    assert not b.acquire(now + timedelta(seconds=40))
    holder = current_holder(engine, now + timedelta(seconds=40))
    assert holder is not None
    assert holder.owner == "a"
    assert b.acquire(now + timedelta(seconds=51))  # a stopped renewing: b takes over
    assert not a.acquire(now + timedelta(seconds=52))
    b.release()
    assert current_holder(engine, now + timedelta(seconds=52)) is None
    assert a.acquire(now + timedelta(seconds=52))


def test_racing_takers_get_one_winner(engine: sa.Engine, now: datetime) -> None:
    leases = [Lease(engine, f"owner-{i}", ttl=timedelta(seconds=30)) for i in range(8)]
    won: list[str] = []
    barrier = threading.Barrier(len(leases))

    def take(lease: Lease) -> None:
        barrier.wait()
        if lease.acquire(now):
            won.append(lease.owner)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


# --- APScheduler with the database job store (in process) ------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy (waiting on another thread or process, not timing it)."""
    deadline = timing.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if timing.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        timing.sleep(0.05)


def runs(engine: sa.Engine, job: str) -> list[ScheduleRun]:
    with Session(engine) as session:
        return list(
            session.exec(select(ScheduleRun).where(ScheduleRun.job == job).order_by(col(ScheduleRun.id)))
        )


def test_jobs_persist_and_a_missed_run_is_caught_up_once(
    engine: sa.Engine, tmp_path: Path, db_url: str, wall_clock: Clock
) -> None:
    cfg = settings(tmp_path, db_url, scheduler_lease_seconds=10)
    first = SchedulerThread(
        Scheduler(cfg, newsletter(), engine=engine, clock=wall_clock, owner="first")
    ).start()
    wait_for(lambda: [r for r in runs(engine, "dispatch") if r.status == "ok"], what="a dispatch run")
    first.stop()
    store = SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)
    jobs = {job.id: job for job in store.get_all_jobs()}
    assert sorted(jobs) == ["collect", "dispatch", "expire"]
    # pretend the machine was off for three collection periods
    collect = jobs["collect"]
    collect.next_run_time = wall_clock() - timedelta(hours=3)
    store.update_job(collect)
    assert runs(engine, "collect") == []

    second = SchedulerThread(
        Scheduler(cfg, newsletter(), engine=engine, clock=wall_clock, owner="second")
    ).start()
    wait_for(lambda: runs(engine, "collect"), what="the missed collection")
    wait_for(lambda: len(runs(engine, "dispatch")) == 2, what="the takeover dispatch")
    second.stop()
    assert [(r.owner, r.status) for r in runs(engine, "collect")] == [("second", "ok")]  # once, not 3 times
    with Session(engine) as session:
        assert session.exec(select(SchedulerLease)).all() == []  # released on stop


def test_jobs_stored_under_the_old_function_path_are_replaced(
    engine: sa.Engine, tmp_path: Path, db_url: str, wall_clock: Clock
) -> None:
    """Jobs a digest from before issue 13 stored name `digest.scheduler:run_job`, which no longer
    imports: the scheduler replaces them instead of failing to start."""
    cfg = settings(tmp_path, db_url, scheduler_lease_seconds=10)
    first = SchedulerThread(
        Scheduler(cfg, newsletter(), engine=engine, clock=wall_clock, owner="first")
    ).start()
    wait_for(lambda: [r for r in runs(engine, "dispatch") if r.status == "ok"], what="a dispatch run")
    first.stop()
    table = sa.Table(JOBS_TABLE, sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        for job_id, job_state in conn.execute(sa.select(table.c.id, table.c.job_state)).all():
            state = pickle.loads(job_state)
            state["func"] = "digest.scheduler:run_job"
            conn.execute(table.update().where(table.c.id == job_id).values(job_state=pickle.dumps(state)))

    second = SchedulerThread(
        Scheduler(cfg, newsletter(), engine=engine, clock=wall_clock, owner="second")
    ).start()
    wait_for(lambda: len(runs(engine, "dispatch")) == 2, what="the takeover dispatch")
    second.stop()
    store = SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)
    assert {job.id: job.func_ref for job in store.get_all_jobs()} == dict.fromkeys(
        ["collect", "dispatch", "expire"], JOB_FUNC
    )


# --- real processes ---------------------------------------------------------------------------


class Process:
    """`digest -v schedule` in a subprocess, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path, command: tuple[str, ...] = ("schedule",)) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "digest", "-v", *command],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=60)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._out.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        p.kill()


def scheduler_env(tmp_path: Path, db_url: str, smtp_port: int, now: datetime, **extra: str) -> dict[str, str]:
    """A `digest schedule` process's environment, sending a minute before `now` (the wall clock's:
    the process reads that one) so that its first dispatch sends."""
    config = tmp_path / "digest.toml"
    config.write_text(NEWSLETTER_TOML)
    due = now - timedelta(minutes=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(
        {
            "DIGEST_CONFIG": str(config),
            "DIGEST_DATABASE_URL": db_url,
            "DIGEST_TRANSPORT": "smtp",
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(smtp_port),
            "DIGEST_SECRET_KEY": "a-real-secret-for-tests-0123456789",
            "DIGEST_VAR_DIR": str(tmp_path / "var"),
            "DIGEST_TIMEZONE": "UTC",
            "DIGEST_SEND_TIME": f"{due:%H:%M}",
            "DIGEST_SCHEDULER_LEASE_SECONDS": "10",
            **extra,
        }
    )
    return env


def statuses(engine: sa.Engine) -> list[tuple[str, int]]:
    with Session(engine) as session:
        return sorted((str(d.status), d.attempts) for d in session.exec(select(Delivery)))


def test_two_schedulers_send_each_edition_once(
    engine: sa.Engine, tmp_path: Path, db_url: str, processes: list[Process], wall_clock: Clock
) -> None:
    now = wall_clock()
    add_subscribers(engine, now, ["UTC"] * 5)
    add_story(engine, now - timedelta(hours=1), 1)
    inbox = Inbox()
    with smtp_server(inbox) as port:
        env = scheduler_env(tmp_path, db_url, port, now)
        processes.extend([Process(env, tmp_path / "a.log"), Process(env, tmp_path / "b.log")])
        inbox.wait(5, timeout=60)
        wait_for(lambda: statuses(engine) == [("sent", 1)] * 5, what="five sent rows")
        wait_for(lambda: all("leader" in p.text() or "standby" in p.text() for p in processes), what="roles")
        [leader] = [p for p in processes if "leader" in p.text()]
        [standby] = [p for p in processes if p is not leader]
        assert "standby (another scheduler holds the lease)" in standby.text()
        assert leader.terminate() == 0
        # the standby takes over and looks for work: there is none left
        wait_for(lambda: "leader" in standby.text(), what="the standby taking over")
        wait_for(lambda: len({r.owner for r in runs(engine, "dispatch")}) == 2, what="the second dispatch")
        assert standby.terminate() == 0
    assert len(inbox.messages) == 5
    assert sorted(m["To"] for m in inbox.messages) == sorted({m["To"] for m in inbox.messages})
    assert statuses(engine) == [("sent", 1)] * 5
    with Session(engine) as session:
        assert session.exec(select(SchedulerLease)).all() == []
        assert session.exec(select(ScheduleRun).where(ScheduleRun.status == "running")).all() == []


class BlockingInbox(Inbox):
    """Holds the first message until released, so a test can signal a process mid-send."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.arrived.is_set():
            self.arrived.set()
            self.release.wait(timeout=60)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("command", [("schedule",), ("serve", "--port", "0")], ids=["schedule", "serve"])
def test_sigterm_finishes_and_records_the_batch_in_hand(
    engine: sa.Engine,
    tmp_path: Path,
    db_url: str,
    processes: list[Process],
    wall_clock: Clock,
    command: tuple[str, ...],
) -> None:
    now = wall_clock()
    add_subscribers(engine, now, ["UTC"] * 4)
    add_story(engine, now - timedelta(hours=1), 1)
    inbox = BlockingInbox()
    with smtp_server(inbox) as port:
        env = scheduler_env(tmp_path, db_url, port, now, DIGEST_SEND_BATCH_SIZE="2")
        first = Process(env, tmp_path / "first.log", command)
        processes.append(first)
        assert inbox.arrived.wait(timeout=60), first.text()
        # one message in flight at a time (issue 5): only the one held in DATA is `sending`
        assert statuses(engine) == [("pending", 0), ("pending", 0), ("pending", 0), ("sending", 1)]
        first.popen.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM received" in first.text(), what="the signal to be handled")
        inbox.release.set()
        assert first.terminate() == 0, first.text()
        # the message in hand was finished and recorded; the next one never started
        assert len(inbox.messages) == 1
        assert statuses(engine) == [("pending", 0), ("pending", 0), ("pending", 0), ("sent", 1)]
        sends = runs(engine, "send")
        assert [r.status for r in sends] == ["interrupted"]
        assert "sent 1" in sends[0].detail
        assert [r.status for r in runs(engine, "dispatch")] == ["interrupted"]
        with Session(engine) as session:
            assert session.exec(select(SchedulerLease)).all() == []

        # started again, it sends the rest, once
        second = Process(env, tmp_path / "second.log", command)
        processes.append(second)
        inbox.wait(4, timeout=60)
        wait_for(lambda: statuses(engine) == [("sent", 1)] * 4, what="the rest sent")
        assert second.terminate() == 0
    assert len(inbox.messages) == 4
    assert len({m["To"] for m in inbox.messages}) == 4


def test_a_standby_takes_over_from_a_killed_leader_without_sending_twice(
    engine: sa.Engine, tmp_path: Path, db_url: str, processes: list[Process], wall_clock: Clock
) -> None:
    now = wall_clock()
    add_subscribers(engine, now, ["UTC"] * 4)
    add_story(engine, now - timedelta(hours=1), 1)
    inbox = BlockingInbox()
    with smtp_server(inbox) as port:
        env = scheduler_env(tmp_path, db_url, port, now, DIGEST_SEND_BATCH_SIZE="2")
        leader = Process(env, tmp_path / "leader.log")
        processes.append(leader)
        assert inbox.arrived.wait(timeout=60), leader.text()
        standby = Process(env, tmp_path / "standby.log")
        processes.append(standby)
        wait_for(lambda: "standby" in standby.text(), what="the second scheduler to stand by")
        leader.kill()  # a crash in the middle of a batch: no clean-up at all
        inbox.release.set()
        # the lease runs out (10 s), the standby takes over and sends what was never claimed
        wait_for(lambda: "leader" in standby.text(), timeout=60, what="the takeover")
        wait_for(lambda: ("sent", 1) in statuses(engine), timeout=60, what="the rest sent")
        wait_for(lambda: [r.status for r in runs(engine, "dispatch")][-1:] == ["ok"], what="the dispatch")
        assert standby.terminate() == 0
    # the one message in flight during the crash (issue 5): maybe delivered, so never sent again
    assert statuses(engine) == [("sent", 1), ("sent", 1), ("sent", 1), ("unknown", 1)]
    assert len(inbox.messages) <= 4
    assert len({m["To"] for m in inbox.messages}) == len(inbox.messages)
    assert [r.status for r in runs(engine, "send")] == [
        "interrupted",
        "partial",
    ]  # killed leader; standby (1 unknown)


class _Runner:
    owner = "test:1"

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_a_signal_before_the_web_server_listens_stops_it_as_well_as_the_scheduler() -> None:
    # `digest serve`: uvicorn installs its own handlers only once it serves; a SIGTERM before
    # that reached the scheduler's alone, and the web server then started and served on.
    from digest.schedule.scheduler import stop_on_signals

    runner, server_told = _Runner(), threading.Event()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop_on_signals(runner, also_stop=server_told.set)
        signal.raise_signal(signal.SIGTERM)  # the handler runs before raise_signal returns
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert runner.stopped and server_told.is_set()
