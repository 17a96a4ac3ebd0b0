"""Sending N messages (default 100,000) through the file transport, a loopback SMTP sink and a
local SendGrid endpoint, against the floor: a bare loop speaking SMTP on one connection (raw
socket, pipelined commands) with one pre-built message.

Usage: python benchmarks/bench_send.py [--count N]    (prints `BENCH {json}` lines for run.py)

Everything real except the network: a SQLite ledger with N subscribers, the demo edition
rendered once per topic set, per-reader links signed, MIME filled per reader, a ledger commit
around every message (at most one in flight), the SMTP conversation over loopback; for SendGrid
the official client posting up to 1000 personalizations a call to a loopback HTTP server (the
transport's DIGEST_SENDGRID_HOST), which counts the API calls.
"""

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "examples" / "demo"))

import make_feeds  # noqa: E402
from smtp_sink import ProcessSink  # noqa: E402

from digest import pipeline  # noqa: E402
from digest.clock import FixedClock  # noqa: E402
from digest.config import load_settings  # noqa: E402
from digest.db.engine import open_database, session_scope  # noqa: E402
from digest.db.models import Delivery, Subscriber  # noqa: E402
from digest.deliver.file import FileTransport  # noqa: E402
from digest.deliver.message import MessageEncoder  # noqa: E402
from digest.deliver.send import send_edition  # noqa: E402
from digest.deliver.sendgrid import SendGridTransport  # noqa: E402
from digest.deliver.smtp import SmtpTransport  # noqa: E402
from digest.editions import build_edition  # noqa: E402
from digest.newsletter import load_newsletter  # noqa: E402

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
CPU: list[float] = []  # CPU seconds of this process per timed run, in order
TOPIC_SETS = ["", "EV industry", "Robotics\nSmartphones", "Smartphones"]  # as in the example CSV


def setup(workdir: Path, count: int, database_url: str | None = None) -> tuple[object, object, sa.Engine]:
    """A demo newsletter, collected, with `count` subscribers over four topic sets (in a SQLite
    file under `workdir` unless `database_url` names an empty database)."""
    demo = workdir / "demo"
    demo.mkdir()
    (demo / "digest.toml").write_text((ROOT / "examples" / "demo" / "digest.toml").read_text())
    make_feeds.write_feeds(demo / "feeds", NOW)
    settings = load_settings(
        config=demo / "digest.toml",
        database_url=database_url or f"sqlite:///{workdir / 'digest.db'}",
        secret_key="bench-secret-key-0123456789abcdef",
        base_url="https://digest.example",
        var_dir=workdir / "var",
        outbox_dir=workdir / "outbox",
    )
    newsletter = load_newsletter(settings.config)
    engine = open_database(settings.database_url)
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(NOW))
    seed_subscribers(engine, count)
    return settings, newsletter, engine


def seed_subscribers(engine: sa.Engine, count: int) -> None:
    """Insert `count` active subscribers over four topic sets, in one statement."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Subscriber),
            [
                {
                    "email": f"reader{i:06d}@example.com",
                    "name": f"Reader {i}",
                    "topics": TOPIC_SETS[i % len(TOPIC_SETS)],
                    "status": "active",
                    "consent_source": "bench",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in range(count)
            ],
        )


def reset_ledger(engine: sa.Engine) -> None:
    """Forget every delivery, so the next send sends the whole edition again."""
    with engine.begin() as conn:
        conn.execute(sa.delete(Delivery))


def timed_send(settings: object, newsletter: object, engine: sa.Engine, *lanes: object) -> tuple[float, int]:
    """Send the whole edition through `lanes` (parallel transports); (seconds, messages sent)."""
    reset_ledger(engine)
    CPU.append(time.process_time())
    start = time.perf_counter()
    report = send_edition(
        settings,  # type: ignore[arg-type]
        newsletter,  # type: ignore[arg-type]
        engine=engine,
        transport=lanes[0],  # type: ignore[arg-type]
        lanes=lanes,  # type: ignore[arg-type]
        edition_date=NOW.date(),
        clock=lambda: NOW,
    )
    elapsed = time.perf_counter() - start
    CPU.append(time.process_time() - CPU.pop())
    return elapsed, report.sent


def bare_loop(port: int, wire: bytes, count: int) -> float:
    """The floor: the SMTP conversation and nothing else, on one connection, one pre-built
    message (`wire`: as sent after DATA, dot-stuffed and ended). Raw socket, MAIL FROM, RCPT TO
    and DATA in one write (PIPELINING, as the sink offers and digest uses); no database, no
    rendering, no reply parsing beyond reading its lines (smtplib's sendmail, four round trips
    and a regex over every message, was slower than digest itself)."""
    CPU.append(time.process_time())
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as replies:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies.readline()  # the greeting
        sock.sendall(b"EHLO bench\r\n")
        while replies.readline()[3:4] == b"-":
            pass
        for i in range(count):
            sock.sendall(
                b"MAIL FROM:<news@evbrief.example>\r\nRCPT TO:<reader%06d@example.com>\r\nDATA\r\n" % i
            )
            for _ in range(3):
                if not replies.readline().startswith((b"250", b"354")):
                    raise SystemExit("the sink refused the bare loop's message")
            sock.sendall(wire)
            replies.readline()
        sock.sendall(b"QUIT\r\n")
        replies.readline()
    elapsed = time.perf_counter() - start
    CPU.append(time.process_time() - CPU.pop())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    count = args.count
    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    rows = []
    try:
        settings, newsletter, engine = setup(workdir, count)
        with session_scope(engine) as session:
            build_edition(newsletter, session=session, edition_date=NOW.date(), now=NOW, zone=UTC)  # type: ignore[arg-type]
        preview = pipeline.preview(
            settings,
            newsletter,
            engine=engine,
            edition_date=NOW.date(),
            now=NOW,  # type: ignore[arg-type]
        )
        prebuilt = MessageEncoder().to_wire(preview.message, now=NOW)  # once, outside the timing
        with ProcessSink() as sink:
            bare_loop(sink.port, prebuilt, min(count, 1000))  # warm up the sink and the caches
            CPU.clear()
            first = bare_loop(sink.port, prebuilt, count)
            smtp = SmtpTransport("127.0.0.1", sink.port, clock=lambda: NOW)
            smtp_s, smtp_sent = timed_send(settings, newsletter, engine, smtp)
            two = [SmtpTransport("127.0.0.1", sink.port, clock=lambda: NOW) for _ in range(2)]
            two_s, two_sent = timed_send(settings, newsletter, engine, *two)
            # The floor is the better of two runs, one before and one after ours: a fair bar.
            floor = min(first, bare_loop(sink.port, prebuilt, count))
        received = sink.messages - 2 * count - min(count, 1000)
        file_s, file_sent = timed_send(
            settings, newsletter, engine, FileTransport(workdir / "outbox", clock=lambda: NOW)
        )
        with ProcessSink("sendgrid") as api:
            sendgrid = SendGridTransport("SG.bench-key", host=api.url)
            sg_s, sg_sent = timed_send(settings, newsletter, engine, sendgrid)
        assert smtp_sent == two_sent == file_sent == sg_sent == count, (
            smtp_sent,
            two_sent,
            file_sent,
            sg_sent,
        )
        assert received == 2 * count, received
        assert (api.messages, api.requests) == (count, sendgrid.requests), (api.messages, api.requests)
        base = count / floor
        # CPU seconds of this process: bare, smtp, 2 lanes, bare again, file (in run order)
        bare_cpu = min(CPU[0], CPU[3])
        for case, seconds, cpu, note in [
            (
                "bare SMTP loop (floor)",
                floor,
                bare_cpu,
                f"one pre-built {len(prebuilt)}-byte message, one connection",
            ),
            ("digest send, smtp", smtp_s, CPU[1], "loopback sink; a ledger commit around every message"),
            ("digest send, smtp, 2 lanes", two_s, CPU[2], "DIGEST_SEND_CONCURRENCY=2: two connections"),
            ("digest send, file", file_s, CPU[4], "one .eml per message, written then renamed"),
            (
                "digest send, SendGrid",
                sg_s,
                CPU[5],
                f"local endpoint; {api.requests} API calls of up to 1000 personalizations",
            ),
        ]:
            per = cpu / count * 1e6
            rows.append(
                (case, seconds, count / seconds, count / seconds / base, f"{note}; {per:.0f} us CPU/msg")
            )
        calls = api.requests
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{count} messages, {len(TOPIC_SETS)} topic sets, {calls} SendGrid API calls")
    for case, seconds, rate, share, note in rows:
        print(f"  {case:<28} {seconds:>8.2f} s {rate:>8.0f}/s {share:>6.0%} of the floor  ({note})")
    for case, seconds, rate, share, note in rows:
        print(
            "BENCH "
            + json.dumps(
                {
                    "benchmark": "send",
                    "metric": f"{case}: messages per second ({count:,} messages)",
                    "value": round(rate),
                    "unit": "msg/s",
                    "note": f"{share:.0%} of the bare SMTP loop; {seconds:.1f} s; {note}",
                }
            )
        )
    print(
        "BENCH "
        + json.dumps(
            {
                "benchmark": "send",
                "metric": f"SendGrid API calls ({count:,} messages)",
                "value": calls,
                "unit": "calls",
                "note": f"{len(TOPIC_SETS)} topic sets: one content per call, at most 1000 readers a call",
            }
        )
    )


if __name__ == "__main__":
    main()
