"""Distributed mode against real services: Redis and RabbitMQ as the Celery broker (each test
runs on both), PostgreSQL, real worker processes and a loopback SMTP server. Every subscriber
gets one copy; a worker killed with SIGKILL mid-batch leaves its rows to the others, and at most
its message in flight is unknown; a broker that loses its queue loses no message."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from digest import editions
from digest.clock import FixedClock
from digest.config import load_settings
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Subscriber
from digest.deliver.base import OutgoingMessage, SendResult, Transport
from digest.deliver.memory import MemoryTransport
from digest.deliver.transports import KEPT_FOR
from digest.errors import SettingsError, TransportUnavailable
from digest.runners import send_tasks
from tests.cli_helpers import ClockedRunner
from tests.deliver.builders import Handler, smtp_server
from tests.world import SECRET, World, make_world

REDIS = "redis://127.0.0.1:6379/11"  # a database of its own; each test also has its own queue
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"  # each test gets a virtual host of its own
COUNT = 2000


@dataclass(frozen=True)
class Broker:
    """Where a test's workers and sender meet: the broker URL and a queue nobody else uses."""

    kind: str  # redis or amqp
    url: str
    queue: str
    vhost: str | None = None  # RabbitMQ: the test's own virtual host, deleted afterwards


def _unreachable(what: str, error: object) -> None:
    if os.environ.get("DIGEST_REQUIRE_POSTGRES"):
        pytest.fail(f"DIGEST_REQUIRE_POSTGRES is set but {what} is unreachable: {error}")
    pytest.skip(f"{what} is unreachable")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run rabbitmqctl on the local node (root or the rabbitmq user may)."""
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)


def _redis_broker(queue: str) -> Iterator[Broker]:
    import redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as e:
        _unreachable(f"Redis at {REDIS}", e)
    try:
        yield Broker("redis", REDIS, queue)
    finally:
        client.delete(queue)
        client.close()


def _rabbitmq_broker(queue: str) -> Iterator[Broker]:
    from kombu import Connection
    from kombu.exceptions import OperationalError

    try:
        with Connection(f"{RABBITMQ}//", connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except (OperationalError, OSError) as e:
        _unreachable(f"RabbitMQ at {RABBITMQ}", e)
    if shutil.which("rabbitmqctl") is None or rabbitmqctl("add_vhost", queue).returncode != 0:
        # No admin access: the default virtual host, with this test's own queue.
        yield Broker("amqp", f"{RABBITMQ}//", queue)
        with Connection(f"{RABBITMQ}//") as conn:
            conn.default_channel.queue_delete(queue)
        return
    try:
        assert rabbitmqctl("set_permissions", "-p", queue, "guest", ".*", ".*", ".*").returncode == 0
        yield Broker("amqp", f"{RABBITMQ}/{queue}", queue, vhost=queue)
    finally:
        rabbitmqctl("delete_vhost", queue)  # its queues and exchanges go with it


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A fresh queue on the local Redis or RabbitMQ; skipped when that broker is not running,
    unless PostgreSQL runs are required (CI), where a missing broker fails the test."""
    queue = f"digest-test-{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        yield from _redis_broker(queue)
    else:
        yield from _rabbitmq_broker(queue)


def test_broker_needs_postgresql() -> None:
    with pytest.raises(SettingsError, match="distributed mode requires PostgreSQL"):
        load_settings(broker_url="redis://127.0.0.1:6379/0", database_url="sqlite:///var/x.db")
    with pytest.raises(SettingsError, match="DIGEST_BROKER_URL: must start with redis://"):
        load_settings(broker_url="http://127.0.0.1:6379", database_url="postgresql+psycopg://h/db")


def test_send_tasks_of_one_worker_process_take_turns_and_a_waiting_one_goes_back_on_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.exceptions import Reject
    from celery.worker import state as worker_state

    from digest.runners import celery

    settings = load_settings(broker_url="redis://127.0.0.1:6379/11", database_url="postgresql+psycopg://h/db")
    state = celery.WorkerState(settings)
    outcome: list[str] = []

    def second_task(stopping: bool) -> None:
        try:
            with state.send_turn(lambda: stopping, poll=0.01):
                outcome.append("sent")
        except celery.Stopping:
            outcome.append("handed back")

    with state.send_turn(lambda: False):  # a send task of this process is sending
        waiting = threading.Thread(target=second_task, args=(True,))
        waiting.start()
        waiting.join(timeout=30)
        assert outcome == ["handed back"]  # it did not send alongside the first
        # Through the task: a stopping worker's waiting batch is rejected back to the queue,
        # not acknowledged as done (acks_late acknowledges a task that raised).
        monkeypatch.setattr(worker_state, "should_stop", 0)  # Celery's warm shutdown sets EX_OK
        app = celery.make_app(settings, state=state)
        try:
            with pytest.raises(Reject) as rejected:
                app.tasks[celery.SEND_TASK].run(edition_id=1, first_id=1, last_id=2)
            assert rejected.value.requeue
        finally:
            app.close()
    after = threading.Thread(target=second_task, args=(False,))  # the turn is free again
    after.start()
    after.join(timeout=30)
    assert outcome == ["handed back", "sent"]


SOLO = ("--pool", "solo")
THREADS = ("--pool", "threads", "--concurrency", "4")  # the default pool, fewer threads
# The real-service tests run on both brokers with solo workers, and on Redis with threads
# workers too (several tasks in one process: the shared renderer, the send turn).
POOLS = pytest.mark.parametrize(
    ("broker", "pool"),
    [("redis", SOLO), ("amqp", SOLO), ("redis", THREADS)],
    indirect=["broker"],
    ids=["redis-solo", "amqp-solo", "redis-threads"],
)


class Cluster:
    """Worker processes and `digest send`, with one environment."""

    def __init__(self, env: dict[str, str], logs: Path, pool: Sequence[str] = SOLO) -> None:
        self.env, self.logs, self.pool = env, logs, list(pool)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_workers(self, n: int) -> None:
        for i in range(n):
            with (self.logs / f"worker{i}.log").open("wb") as log:  # the child keeps its own copy
                self.workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "digest", "worker", *self.pool, "--name", f"w{i}@%h"],
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        for i in range(n):  # wait until each says it is ready (a condition, not a delay)
            path = self.logs / f"worker{i}.log"
            for _ in range(600):
                if b"ready." in path.read_bytes():
                    break
                if self.workers[i].poll() is not None:
                    pytest.fail(f"worker {i} exited: {path.read_text()}")
                _pause()
            else:
                pytest.fail(f"worker {i} never got ready: {path.read_text()}")

    def send(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "digest", "send", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pause() -> None:
    """Let the other processes run while polling for a condition (never a timing assumption)."""
    time.sleep(0.05)


@pytest.fixture
def world_2000(engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime) -> World:
    if not db_url.startswith("postgresql"):
        pytest.skip("distributed mode requires PostgreSQL")
    world = make_world(engine, demo_dir, now, 0)
    with session_scope(engine) as session:  # 2,000 readers in one statement
        session.execute(
            sa.insert(Subscriber),
            [
                {
                    "email": f"reader{i:04d}@example.com",
                    "name": "",
                    "status": "active",
                    "topics": "",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(COUNT)
            ],
        )
        # Freeze the edition with the test's clock; the workers' and sender's clocks are real.
        editions.build_edition(
            world.newsletter, session=session, edition_date=now.date(), now=now, zone=world.settings.zone
        )
    return world


def _env(db_url: str, demo_dir: Path, broker: Broker, smtp_port: int, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
        "DIGEST_CONFIG": str(demo_dir / "digest.toml"),
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_TRANSPORT": "smtp",
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(smtp_port),
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_BASE_URL": "https://digest.example",
        "DIGEST_VAR_DIR": str(demo_dir / "var"),
        "DIGEST_BROKER_URL": broker.url,
        "DIGEST_BROKER_QUEUE": broker.queue,
        "DIGEST_SEND_BATCH_SIZE": "100",
        **extra,
    }


def _ledger(engine: sa.Engine) -> dict[str, tuple[str, str | None]]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(Subscriber.email, Delivery.status, Delivery.claimed_by).join(Delivery)
        ).all()
    return {email: (str(status), by) for email, status, by in rows}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@POOLS
def test_three_workers_send_each_subscriber_exactly_once(
    world_2000: object,
    engine: sa.Engine,
    db_url: str,
    demo_dir: Path,
    broker: Broker,
    pool: tuple[str, ...],
    tmp_path: Path,
) -> None:
    day = datetime(2026, 11, 25, tzinfo=UTC).date()
    with smtp_server(Handler()) as (server, handler):
        cluster = Cluster(_env(db_url, demo_dir, broker, server.port), tmp_path, pool)
        try:
            cluster.start_workers(3)
            sender = cluster.send("--date", day.isoformat())
            out, errors = sender.communicate(timeout=300)
            assert sender.returncode == 0, errors
        finally:
            cluster.stop()
        assert f"sent {COUNT}" in out
        copies = handler.copies()
    ledger = _ledger(engine)
    assert len(copies) == COUNT
    assert set(copies.values()) == {1}  # every subscriber exactly one copy
    assert {status for status, _ in ledger.values()} == {DeliveryStatus.SENT.value}
    workers = Counter(by for _, by in ledger.values())
    # A claimant is a process, or a thread of one (host:pid/thread): all three processes took part.
    assert len({str(by).split("/")[0] for by in workers}) == 3, workers
    stats = subprocess.run(
        [sys.executable, "-m", "digest", "stats", "--date", day.isoformat()],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stats.returncode == 0, stats.stderr
    for worker, n in workers.items():
        assert f"{worker}: sent {n}" in stats.stdout
    status = subprocess.run(
        [sys.executable, "-m", "digest", "status"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"edition {day}: sent {COUNT} of {COUNT}" in status.stdout
    assert sum(f"worker {w}: sent {n}" in status.stdout for w, n in workers.items()) == len(workers)


def test_worker_without_a_broker_says_so(tmp_path: Path) -> None:
    from digest.cli import app

    result = ClockedRunner().invoke(app, ["worker"])
    assert result.exit_code == 1
    assert "DIGEST_BROKER_URL: not set" in result.output


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@POOLS
def test_a_worker_killed_mid_batch_leaves_only_its_message_in_flight_unknown(
    world_2000: object,
    engine: sa.Engine,
    db_url: str,
    demo_dir: Path,
    broker: Broker,
    pool: tuple[str, ...],
    tmp_path: Path,
) -> None:
    day = datetime(2026, 11, 25, tzinfo=UTC).date()
    handler = Handler(delay=0.002, reach_at=400)  # a little slow, so batches are long enough to kill in
    with smtp_server(handler) as (server, _):
        env = _env(db_url, demo_dir, broker, server.port, DIGEST_CLAIM_LEASE_SECONDS="3")
        cluster = Cluster(env, tmp_path, pool)
        try:
            cluster.start_workers(3)
            sender = cluster.send("--date", day.isoformat())
            assert handler.reached.wait(timeout=120), "the send never got going"
            victim = None
            while victim is None:  # a worker that holds rows it has not sent yet
                held = {
                    by
                    for status, by in _ledger(engine).values()
                    if by and status in (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)
                }
                pids = {int(by.split("/")[0].rsplit(":", 1)[1]) for by in held}  # host:pid[/thread]
                victim = next((p for p in cluster.workers if p.pid in pids and p.poll() is None), None)
                if victim is None:
                    _pause()
                assert sender.poll() is None, "the send finished before a worker could be killed"
            os.kill(victim.pid, signal.SIGKILL)
            assert victim.wait(timeout=30) == -signal.SIGKILL
            out, errors = sender.communicate(timeout=300)
        finally:
            cluster.stop()
        copies = handler.copies()
    ledger = _ledger(engine)
    unknown = [email for email, (status, _) in ledger.items() if status == DeliveryStatus.UNKNOWN.value]
    # One SMTP message in flight at most: a solo worker sends one batch, a threads worker's send
    # tasks take turns (DIGEST_SEND_CONCURRENCY=1 holds per process).
    assert len(unknown) <= 1
    assert sender.returncode == (3 if unknown else 0), errors
    assert f"unknown {len(unknown)}" in out
    for email, (status, _) in ledger.items():
        if email in unknown:
            assert copies.get(email, 0) <= 1
        else:
            assert status == DeliveryStatus.SENT.value, email
            assert copies.get(email) == 1, email  # nothing lost, nothing twice
    assert len(ledger) == COUNT
    killed = f":{victim.pid}"
    assert any(by and by.split("/")[0].endswith(killed) for _, by in ledger.values())  # it sent some


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            _pause()
    client.close()
    return proc


class LosableBroker:
    """A broker this test may lose, with every task queued in it, and bring back empty.

    Redis: a private server with no persistence, killed and started again. RabbitMQ: the test's
    own virtual host, deleted (its queues and connections go with it) and created again.
    """

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker, self.tmp_path = broker, tmp_path
        self.redis: subprocess.Popen[bytes] | None = None
        if broker.kind == "redis":
            if shutil.which("redis-server") is None:
                pytest.skip("redis-server is not installed")
            self.port = _free_port()
            self.redis = _start_redis(self.port, tmp_path)
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            if broker.vhost is None:
                pytest.skip("rabbitmqctl cannot manage virtual hosts here")
            self.url = broker.url

    def lose(self) -> None:
        """The broker goes away with its queue."""
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(timeout=30)
        else:
            assert rabbitmqctl("delete_vhost", str(self.broker.vhost)).returncode == 0

    def come_back(self) -> None:
        """The broker is there again, empty."""
        if self.redis is not None:
            self.redis = _start_redis(self.port, self.tmp_path)
        else:
            vhost = str(self.broker.vhost)
            assert rabbitmqctl("add_vhost", vhost).returncode == 0
            assert rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").returncode == 0

    def close(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(timeout=30)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_broker_going_away_and_coming_back_loses_nothing(
    world_2000: object, engine: sa.Engine, db_url: str, demo_dir: Path, broker: Broker, tmp_path: Path
) -> None:
    losable = LosableBroker(broker, tmp_path)
    handler = Handler(delay=0.002, reach_at=300)
    try:
        with smtp_server(handler) as (server, _):
            env = _env(
                db_url,
                demo_dir,
                broker,
                server.port,
                DIGEST_BROKER_URL=losable.url,
                DIGEST_CLAIM_LEASE_SECONDS="3",
            )
            cluster = Cluster(env, tmp_path)
            try:
                cluster.start_workers(2)
                sender = cluster.send("--date", "2026-11-25")
                assert handler.reached.wait(timeout=120), "the send never got going"
                losable.lose()  # the queued batches are gone with it
                assert sender.poll() is None, "the send finished before the broker went away"
                losable.come_back()
                out, errors = sender.communicate(timeout=300)
            finally:
                cluster.stop()
            copies = handler.copies()
    finally:
        losable.close()
    assert sender.returncode == 0, errors
    assert f"sent {COUNT}" in out
    assert "with no progress for a lease: queued again" in errors  # the lost batches came back
    ledger = _ledger(engine)
    assert {status for status, _ in ledger.values()} == {DeliveryStatus.SENT.value}
    assert len(copies) == COUNT
    assert set(copies.values()) == {1}


def test_broker_options_follow_the_broker() -> None:
    from digest.config import Settings
    from digest.runners import celery

    def settings(url: str, **extra: object) -> Settings:
        return load_settings(broker_url=url, database_url="postgresql+psycopg://h/db", **extra)

    redis_settings = settings("redis://127.0.0.1:6379/0", claim_lease_seconds=100)
    assert celery.transport_options("redis://h:6379/0", redis_settings) == {"visibility_timeout": 300}
    assert celery.transport_options("amqp://guest@h//", redis_settings) == {}  # Redis-only option
    slow = settings("amqp://guest:guest@h//", send_rate=0.2, send_batch_size=500)  # 2,500 s a batch
    assert "consumer_timeout" in str(celery.slow_batch_warning(slow))
    assert celery.slow_batch_warning(settings("amqp://h//", send_rate=1, send_batch_size=500)) is None
    # Threads: a worker holds --concurrency batches unacknowledged while they take turns.
    taking_turns = settings("amqp://h//", send_rate=1, send_batch_size=500)
    assert "4 batches (--concurrency 4" in str(celery.slow_batch_warning(taking_turns, waiting=4))
    assert celery.slow_batch_warning(settings("redis://h:6379/0", send_rate=0.2)) is None
    app = celery.make_app(settings("amqp://guest:guest@h//"))
    try:
        assert app.conf.broker_transport_options == {}
        assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    finally:
        app.close()


@pytest.fixture
def world_25(engine: sa.Engine, db_url: str, demo_dir: Path, now: datetime) -> World:
    """25 readers with their ledger rows of today's edition, for a WorkerState run in-process."""
    if not db_url.startswith("postgresql"):
        pytest.skip("distributed mode requires PostgreSQL")
    world = make_world(engine, demo_dir, now, 25)
    world.open_ledger()
    return world


class _Lanes:
    """A lanes factory for a WorkerState: one lane a call, of the next of `kinds` (the last one
    again once they run out); every lane made is kept for the test to look at."""

    def __init__(self, *kinds: type[MemoryTransport]) -> None:
        self.kinds = kinds or (MemoryTransport,)
        self.made: list[MemoryTransport] = []

    def __call__(self) -> list[Transport]:
        self.made.append(self.kinds[min(len(self.made), len(self.kinds) - 1)]())
        return [self.made[-1]]


def _batches(engine: sa.Engine) -> tuple[int, list[tuple[int, int]]]:
    """The edition's id and its ledger ids in ranges of 10."""
    with session_scope(engine) as session:
        rows = session.exec(select(Delivery.edition_id, Delivery.id).order_by(col(Delivery.id))).all()
    ids = [i for _, i in rows]
    return rows[0][0], [(chunk[0], chunk[-1]) for chunk in (ids[k : k + 10] for k in range(0, len(ids), 10))]


def test_a_worker_keeps_its_lanes_for_the_next_batch_of_the_edition_and_closes_them_on_stop(
    world_25: World,
) -> None:
    from digest.runners import celery

    clock = FixedClock(world_25.now)
    lanes = _Lanes()
    state = celery.WorkerState(world_25.settings, clock=clock, lanes_factory=lanes, _engine=world_25.engine)
    edition_id, batches = _batches(world_25.engine)
    for first, last in batches[:2]:
        assert state.send_batch(edition_id, first, last, None)["sent"] == 10
    assert len(lanes.made) == 1 and not lanes.made[0].closed  # one connection for both batches
    clock.advance(KEPT_FOR)  # idle long enough for a relay to drop it: a new one
    assert state.send_batch(edition_id, *batches[2], None)["sent"] == 5
    assert [lane.closed for lane in lanes.made] == [True, False]
    assert len(lanes.made[0].sent) == 20 and len(lanes.made[1].sent) == 5
    with session_scope(world_25.engine) as session:
        tomorrow, _ = editions.build_edition(
            world_25.newsletter,
            session=session,
            edition_date=world_25.now.date() + timedelta(days=1),
            now=world_25.now,
            zone=world_25.settings.zone,
        )
    assert tomorrow.id is not None
    assert state.send_batch(tomorrow.id, *batches[0], None)["sent"] == 0  # another edition: new lanes
    assert [lane.closed for lane in lanes.made] == [True, True, False]
    state.close()  # the worker stops
    assert all(lane.closed for lane in lanes.made)


class _BrokenRelay(MemoryTransport):
    """A relay that stops the send at its first message (a 5xx to MAIL FROM)."""

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not self.calls:
            self.calls.append(list(messages))
            raise TransportUnavailable("SMTP relay refused the sender at MAIL FROM: 553")
        return super().send(messages)


def test_a_lane_the_relay_broke_is_closed_and_never_reused(world_25: World) -> None:
    from digest.runners import celery

    lanes = _Lanes(_BrokenRelay, MemoryTransport)
    state = celery.WorkerState(
        world_25.settings, clock=FixedClock(world_25.now), lanes_factory=lanes, _engine=world_25.engine
    )
    edition_id, batches = _batches(world_25.engine)
    with pytest.raises(TransportUnavailable, match="MAIL FROM"):
        state.send_batch(edition_id, *batches[0], None)
    assert lanes.made[0].closed
    assert state.send_batch(edition_id, *batches[1], None)["sent"] == 10  # on a new lane
    assert len(lanes.made) == 2 and not lanes.made[1].closed
    with session_scope(world_25.engine) as session:  # the refused call's row stays to send
        statuses = Counter(session.exec(select(Delivery.status)).all())
    assert statuses == {"pending": 14, "retry": 1, "sent": 10}


def test_a_worker_with_no_batch_waiting_takes_the_last_pending_rows_of_the_edition(world_25: World) -> None:
    from digest.runners import celery

    lanes = _Lanes()
    edition_id, batches = _batches(world_25.engine)
    last = batches[-1][1]
    with session_scope(world_25.engine) as session:  # answered `retry` earlier in this run
        session.execute(sa.update(Delivery).where(col(Delivery.id) == last).values(status="retry"))

    def state(waiting: int) -> celery.WorkerState:
        turn = send_tasks.SendTurn()
        turn.waiting = waiting  # send tasks of this worker waiting for their turn
        clock = FixedClock(world_25.now)
        return celery.WorkerState(
            world_25.settings,
            clock=clock,
            lanes_factory=lanes,
            steal=True,
            _engine=world_25.engine,
            _turn=turn,
        )

    assert state(waiting=1).send_batch(edition_id, *batches[0], None)["sent"] == 10  # one waits: no
    alone = state(waiting=0)
    assert alone.send_batch(edition_id, *batches[1], None)["sent"] == 10 + 4  # and the pending of #3
    assert alone.send_batch(edition_id, *batches[2], None)["sent"] == 1  # its batch sends the retry row
    sent = [m.to_email for lane in lanes.made for m in lane.sent]
    assert sorted(sent) == sorted(world_25.emails)  # each reader once


def test_a_zone_s_batch_takes_no_rows_beyond_its_own(world_25: World) -> None:
    from digest.runners import celery

    state = celery.WorkerState(
        world_25.settings,
        clock=FixedClock(world_25.now),
        lanes_factory=_Lanes(),
        steal=True,
        _engine=world_25.engine,
    )
    edition_id, batches = _batches(world_25.engine)
    assert state.send_batch(edition_id, *batches[0], world_25.settings.timezone)["sent"] == 10
