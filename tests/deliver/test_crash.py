"""kill -9 a real `digest send` mid-send, run it again: nobody is missed, nobody gets two copies
except the one message in flight, which is reported unknown and sent by --resend-unknown."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Subscriber
from digest.editions import build_edition
from tests.deliver.builders import Handler, smtp_server
from tests.world import SECRET, make_world

COUNT = 30


def run_send(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", "send", *args], env=env, capture_output=True, text=True, timeout=120
    )


def ledger(engine: sa.Engine) -> dict[str, DeliveryStatus]:
    with session_scope(engine) as session:
        rows = session.exec(select(Subscriber.email, Delivery.status).join(Delivery)).all()
    return {email: DeliveryStatus(status) for email, status in rows}


@pytest.mark.parametrize("moment", ["in DATA", "anywhere"])
def test_kill_9_mid_send_then_rerun(
    engine: sa.Engine, db_url: str, demo_dir: Path, now: object, moment: str
) -> None:
    world = make_world(engine, demo_dir, now, COUNT)  # type: ignore[arg-type]
    day = world.now.date()
    with session_scope(engine) as session:  # freeze the edition with the test's clock
        build_edition(
            world.newsletter, session=session, edition_date=day, now=world.now, zone=world.settings.zone
        )
    # "in DATA": the 10th message is held inside DATA, received by the server, not yet
    # acknowledged. "anywhere": a slow server; the kill lands wherever the sender is after 10.
    handler = Handler(block_at=10) if moment == "in DATA" else Handler(delay=0.02, reach_at=10)
    with smtp_server(handler) as (server, _):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
            "DIGEST_CONFIG": str(demo_dir / "digest.toml"),
            "DIGEST_DATABASE_URL": db_url,
            "DIGEST_TRANSPORT": "smtp",
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
            "DIGEST_SECRET_KEY": SECRET,
            "DIGEST_BASE_URL": "https://digest.example",
            "DIGEST_VAR_DIR": str(demo_dir / "var"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "send", "--date", day.isoformat()],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        event = handler.in_data if moment == "in DATA" else handler.reached
        assert event.wait(timeout=60), "the send never got going"
        proc.kill()  # SIGKILL: no cleanup, no final commit
        assert proc.wait(timeout=30) == -9
        handler.release.set()
        handler.block_at, handler.delay = None, 0.0
        crashed = ledger(engine)
        in_flight = [e for e, s in crashed.items() if s == DeliveryStatus.SENDING]
        assert len(in_flight) <= 1  # at most one SMTP message was in flight
        if moment == "in DATA":
            assert len(in_flight) == 1
        assert sum(s == DeliveryStatus.SENT for s in crashed.values()) >= 9

        second = run_send(env, "--date", day.isoformat())
        after = ledger(engine)
        unknown = [e for e, s in after.items() if s == DeliveryStatus.UNKNOWN]
        assert unknown == in_flight
        assert second.returncode == (3 if unknown else 0), second.stderr
        assert f"unknown {len(unknown)}" in second.stdout
        copies = handler.copies()
        for email in world.emails:
            if email in unknown:
                assert copies.get(email, 0) <= 1
            else:
                assert copies.get(email, 0) == 1, email
                assert after[email] == DeliveryStatus.SENT
        before_resend = Counter(copies)

        third = run_send(env, "--date", day.isoformat(), "--resend-unknown")
        assert third.returncode == 0, third.stderr
        assert set(ledger(engine).values()) == {DeliveryStatus.SENT}
        resent = Counter(handler.copies()) - before_resend
        assert resent == Counter(unknown)  # exactly the unknown ones, once more
        again = run_send(env, "--date", day.isoformat()).stdout  # nothing new
        assert f"already sent to {COUNT}; nothing left to send" in again
