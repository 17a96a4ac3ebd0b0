"""Hostile web clients, link scanners and forged mail against the real app on loopback (issue 12).

Rows of the issue's table: 9 (huge bodies), 10 (a scanner that runs JavaScript), 11 (a token of
a deleted subscriber), 15 (weak secrets), 16 (forged unsubscribe mail), 17 (a complaint undone by
a click), 19 (deeply nested webhook JSON), and the Content-Security-Policy of the public pages.
"""

import base64
import json
import logging
import mailbox
import re
import select
import socket
import subprocess
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from itsdangerous import URLSafeSerializer
from sqlmodel import select as query

from digest.config import load_settings, resolve_secret_key
from digest.db import engine as db_engine
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberStatus
from digest.deliver.base import OutgoingMessage
from digest.deliver.memory import MemoryTransport
from digest.deliver.sendgrid import personalization
from digest.errors import SettingsError
from digest.subscribers import webhooks
from digest.subscribers.optin import expire_pending
from digest.subscribers.roster import add_subscriber, remove_subscriber
from digest.subscribers.unsubscribe_mail import MaildirMailbox, process_requests
from digest.tokens import TokenSigner
from digest.web.app import create_app
from tests.browser import chromium
from tests.conftest import NOW
from tests.render.tools import require
from tests.web_helpers import SignalingTransport, serve
from tests.world import SECRET, World, make_world

WAIT = 60.0  # seconds: a bound for a hung server or browser, never an assertion about speed
CONFIRM_LINK = re.compile(r"https://digest\.example(/confirm/[A-Za-z0-9_.\-]+)")


@dataclass
class Site:
    """The demo newsletter sent once to its readers, served on loopback."""

    world: World
    base: str
    http: httpx.Client
    mailed: list[OutgoingMessage]  # the edition, one message per reader
    outbox: SignalingTransport  # confirmations sent by the web app
    key: ec.EllipticCurvePrivateKey  # SendGrid's webhook signing key

    def token(self, n: int) -> str:
        return self.mailed[n].unsubscribe_url.rsplit("/", 1)[1]  # type: ignore[union-attr]

    def row(self, email: str) -> Subscriber:
        with session_scope(self.world.engine) as session:
            return session.exec(query(Subscriber).where(Subscriber.email == email)).one()

    def webhook(self, body: bytes) -> httpx.Response:
        ts = int(self.world.now.timestamp())
        signature = self.key.sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            webhooks.SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            webhooks.TIMESTAMP_HEADER: str(ts),
            "Content-Type": "application/json",
        }
        return self.http.post("/webhooks/sendgrid", content=body, headers=headers)


@pytest.fixture
def site(world: World) -> Iterator[Site]:
    memory = MemoryTransport()
    world.send(memory)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = load_settings(
        **{**world.settings.model_dump(), "sendgrid_webhook_public_key": base64.b64encode(public).decode()}
    )
    outbox = SignalingTransport()
    app = create_app(
        settings,
        world.newsletter,
        engine=world.engine,
        clock=lambda: world.now,
        transport_factory=lambda: outbox,
    )
    with serve(app) as base, httpx.Client(base_url=base, timeout=WAIT, follow_redirects=False) as http:
        yield Site(world, base, http, list(memory.sent), outbox, key)


# --- row 9: bodies are bounded while they stream ------------------------------------------------

CAP = 64 * 1024 * 1024  # what a test sends at most: far over every limit, far under 400 MB


def upload(base: str, path: str, *, chunked: bool) -> tuple[int | None, int]:
    """POST an endless body of filler to `path` until the server answers or CAP bytes are sent.

    Returns (the answer's status, None if none came; body bytes sent before it came). A server
    that reads a whole body before answering never answers here: the body has no end.
    """
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=WAIT)
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 400000000"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n{framing}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
    )
    filler = b"x=" + b"y" * (64 * 1024 - 2)
    piece = f"{len(filler):x}\r\n".encode() + filler + b"\r\n" if chunked else filler
    sock.setblocking(False)
    sent, pending, answer = 0, b"", b""
    try:
        while sent < CAP and b"\r\n\r\n" not in answer:
            readable, writable, _ = select.select([sock], [sock], [], WAIT)
            assert readable or writable, "the connection stalled"
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                continue
            pending = pending or piece
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server hung up: what it said is in `answer` or still to read
            pending, sent = pending[n:], sent + n
        if sent < CAP:
            sock.setblocking(True)
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    status = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (int(status.group(1)) if status else None), sent


ROUTES = ["/webhooks/sendgrid", "/subscribe", "/unsubscribe/{t}", "/preferences/{t}", "/resubscribe/{t}"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", ROUTES)
def test_a_huge_body_gets_413_before_the_server_reads_it(site: Site, route: str, chunked: bool) -> None:
    status, sent = upload(site.base, route.format(t=site.token(0)), chunked=chunked)
    assert status == 413, f"no 413 after {sent} bytes"
    assert sent < CAP  # it answered while the body was still coming
    assert site.row(site.mailed[0].to_email).status == SubscriberStatus.ACTIVE


def test_server_memory_stays_flat_under_an_endless_chunked_webhook(site: Site) -> None:
    # The server runs in this process: tracemalloc sees every byte it buffers. Before issue 12
    # the route read the whole body first (400 MB took the server from 113 MB to 913 MB).
    if site.world.engine.dialect.name != "sqlite":
        pytest.skip("the web process's memory does not depend on the database: SQLite run only")
    tracemalloc.start()
    try:
        status, sent = upload(site.base, "/webhooks/sendgrid", chunked=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    assert peak < 3 * webhooks.MAX_BODY, f"peak {peak} bytes while {sent} were sent"


def test_requests_of_normal_size_still_work(site: Site) -> None:
    form = {"topic": "Robotics", "note": "n" * 10_000}
    assert site.http.post(f"/preferences/{site.token(1)}", data=form).status_code == 200
    assert site.row(site.mailed[1].to_email).topics == "Robotics"


# --- row 10: a scanner that runs JavaScript confirms nothing; a person's click does -------------


def test_a_javascript_running_scanner_confirms_nothing_and_a_click_confirms(
    site: Site, tmp_path: Path
) -> None:
    assert (
        site.http.post("/subscribe", data={"email": "new.reader@example.org", "website": ""}).status_code
        == 200
    )
    [mail] = site.outbox.wait(1)
    match = CONFIRM_LINK.search(mail.text)
    assert match is not None
    link = site.base + match.group(1)
    # The scanner: headless Chromium opens the link, runs every script and lets every timer fire.
    scan = subprocess.run(
        [
            require("chromium"),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'scanner'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            link,
        ],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=True,
    )
    assert "Confirm your subscription" in scan.stdout
    assert site.row("new.reader@example.org").status == SubscriberStatus.PENDING
    # The person: opens the link (still pending), then presses the button.
    with chromium(tmp_path) as browser:
        page = browser.page()
        page.open(link)
        assert site.row("new.reader@example.org").status == SubscriberStatus.PENDING
        page.click("#confirm-form button")
        assert page.evaluate("document.querySelector('h1').textContent") == "You are subscribed"
    assert site.row("new.reader@example.org").status == SubscriberStatus.ACTIVE


# --- row 11: a link never outlives the subscriber it was made for -------------------------------


@pytest.mark.parametrize("who", ["another address", "the same address"])
def test_links_of_a_deleted_subscriber_do_nothing_to_the_next_one_with_its_id(
    site: Site, who: str, tmp_path: Path
) -> None:
    world = site.world
    last = site.mailed[-1]  # the highest id: SQLite gives it to the next row once it is deleted
    token = site.token(len(site.mailed) - 1)
    newcomer = "newcomer@example.org" if who == "another address" else last.to_email
    with session_scope(world.engine) as session:
        remove_subscriber(last.to_email, session=session)
    with session_scope(world.engine) as session:
        row = add_subscriber(
            newcomer, session=session, now=world.now, known_topics=world.newsletter.topic_names
        )
        new_id = row.id
    if world.engine.dialect.name == "sqlite":
        assert new_id == last.subscriber_id  # the id really is reused: the case of the issue
    answers = [
        site.http.get(f"/unsubscribe/{token}").status_code,
        site.http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code,
        site.http.get(f"/preferences/{token}").status_code,
        site.http.post(f"/preferences/{token}", data={"pause_weeks": "8"}).status_code,
        site.http.post(f"/resubscribe/{token}").status_code,
    ]
    assert answers == [400] * 5
    # The mailto and SendGrid's events name the old subscriber the same way.
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(plea(f"unsubscribe {token}", "someone@elsewhere.example"))
    report = process_requests(
        MaildirMailbox(tmp_path / "Maildir"),
        engine=world.engine,
        signer=TokenSigner([SECRET]),
        now=world.now,
    )
    assert report.unsubscribed == 0
    event = {
        "email": last.to_email,
        "event": "spamreport",
        "sg_event_id": "old-mail-1",
        **personalization(last)["custom_args"],  # what SendGrid echoes back of that message
    }
    assert site.webhook(json.dumps([event]).encode()).json() == {"unknown": 1}
    row = site.row(newcomer)
    assert (row.status, row.topics, row.paused_until) == (SubscriberStatus.ACTIVE, "", None)


def test_a_confirmation_link_of_a_deleted_sign_up_does_not_confirm_its_successor(site: Site) -> None:
    world = site.world
    site.http.post("/subscribe", data={"email": "twice@example.org", "website": ""})
    [first] = site.outbox.wait(1)
    with session_scope(world.engine) as session:
        remove_subscriber("twice@example.org", session=session)
    # Signed up again within the same second, under the same id on SQLite: only the key differs.
    site.http.post("/subscribe", data={"email": "twice@example.org", "website": ""})
    site.outbox.wait(2)
    match = CONFIRM_LINK.search(first.text)
    assert match is not None
    assert site.http.post(match.group(1)).status_code == 400
    assert site.row("twice@example.org").status == SubscriberStatus.PENDING


def test_migration_keeps_links_already_mailed_working_for_their_own_subscribers(
    db_url: str, demo_dir: Path
) -> None:
    # A database from before token keys, with two subscribers and links in their mailboxes.
    engine = db_engine.make_engine(db_url)
    config = db_engine._alembic_config(engine)
    command.upgrade(config, "0004_issue7_collect_result")
    with engine.begin() as conn:
        for n in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO subscriber (id, email, name, topics, status, consent_source, created_at,"
                    " updated_at) VALUES (:id, :email, '', '', 'active', 'cli', :t, :t)"
                ),
                {"id": n, "email": f"early{n}@example.org", "t": "2026-11-01 00:00:00+00:00"},
            )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT token_key, legacy_links FROM subscriber ORDER BY id")).all()
    assert len({k for k, _ in keys}) == 2 and all(len(k) >= 16 and legacy for k, legacy in keys)
    old_link = URLSafeSerializer([SECRET], salt="digest.unsubscribe")  # how links were signed then
    kept, reused = old_link.dumps([1, None]), old_link.dumps([2, None])
    with session_scope(engine) as session:
        remove_subscriber("early2@example.org", session=session)
    with session_scope(engine) as session:
        session.add(Subscriber(id=2, email="later@example.org", created_at=NOW, updated_at=NOW))
    world = make_world(engine, demo_dir, NOW, 0)
    app = create_app(world.settings, world.newsletter, engine=engine, clock=lambda: NOW)
    with serve(app) as base, httpx.Client(base_url=base, timeout=WAIT) as http:
        assert http.post(f"/unsubscribe/{reused}").status_code == 400
        assert http.post(f"/unsubscribe/{kept}").status_code == 200
    with session_scope(engine) as session:
        status = {s.email: s.status for s in session.exec(query(Subscriber))}
    assert status == {"early1@example.org": "unsubscribed", "later@example.org": "active"}
    engine.dispose()


# --- row 15: weak secrets are refused; a bad dev key file is replaced ----------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIGEST_SECRET_KEY", "a"),
        ("DIGEST_SECRET_KEY", "correct-horse-battery"),  # 21 characters
        ("DIGEST_SECRET_KEY", "a" * 48),
        ("DIGEST_SECRET_KEY", "ab" * 24),
        ("DIGEST_OLD_SECRET_KEYS", f"{'k' * 50},a"),
    ],
)
def test_a_weak_secret_key_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", "strong-enough-Qx7-0d9f2b81c4e6a5937")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    if variable == "DIGEST_SECRET_KEY":
        assert "secrets.token_urlsafe(32)" in message  # how to make a good one


@pytest.mark.parametrize("content", [b"", b"\n", b"   \n", b"a\n", b"\xff\xfe\x00\x81 not text"])
def test_an_empty_unreadable_or_weak_dev_key_file_is_replaced_never_used(
    engine: sa.Engine, demo_dir: Path, tmp_path: Path, content: bytes
) -> None:
    key_file = tmp_path / "var" / "dev-secret-key"
    key_file.parent.mkdir()
    key_file.write_bytes(content)
    world = make_world(engine, demo_dir, NOW, 2, secret_key=None, var_dir=tmp_path / "var")
    memory = MemoryTransport()
    world.send(memory)
    key = resolve_secret_key(world.settings)
    assert len(key) >= 32
    assert key_file.read_text().strip() == key
    assert resolve_secret_key(world.settings) == key  # kept, not made again
    assert key_file.stat().st_mode & 0o077 == 0  # only its owner reads it
    # A link re-signed with what the file held is refused; the genuine one works.
    genuine = memory.sent[0].unsubscribe_url.rsplit("/", 1)[1]  # type: ignore[union-attr]
    _, payload = URLSafeSerializer([key], salt="digest.unsubscribe").loads_unsafe(genuine)
    forged = URLSafeSerializer([content.decode("latin-1").strip()], salt="digest.unsubscribe").dumps(payload)
    app = create_app(world.settings, world.newsletter, engine=engine, clock=lambda: NOW)
    with serve(app) as base, httpx.Client(base_url=base, timeout=WAIT) as http:
        assert http.post(f"/unsubscribe/{forged}").status_code == 400
        assert http.get(f"/unsubscribe/{genuine}").status_code == 200


# --- row 16: forged unsubscribe mail is not acted on ---------------------------------------------


def plea(subject: str, sender: str, *results: str) -> EmailMessage:
    """An unsubscribe request as it lands in the mailbox: the receiving server's results on top."""
    msg = EmailMessage()
    for value in results:
        msg["Authentication-Results"] = value
    msg["From"], msg["To"], msg["Subject"] = sender, "leave@digest.example", subject
    msg.set_content("Take me off the list, thanks.")
    return msg


MX = "mx.digest.example"
PASSING = f"{MX}; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com; dmarc=pass"


@pytest.mark.parametrize(
    ("results", "authserv_id", "acted"),
    [
        ((f"{MX}; spf=fail (not permitted) smtp.mailfrom=example.com",), None, False),
        ((f"{MX}; spf=softfail smtp.mailfrom=example.com; dkim=none",), None, False),
        ((f"{MX}; spf=none; dkim=fail (bad signature) header.d=example.com; dmarc=fail",), None, False),
        ((f"{MX}; spf=fail smtp.mailfrom=example.com", PASSING), None, False),  # sender's "pass" below
        ((f"{MX}; spf=pass smtp.mailfrom=example.com", f"{MX}; dkim=fail header.d=example.com"), None, False),
        (
            (f"{MX} 1; spf=fail smtp.mailfrom=example.com; dkim=pass header.d=example.com; dmarc=pass",),
            None,
            True,
        ),
        ((PASSING,), None, True),
        ((PASSING,), MX, True),
        (("relay.attacker.example; spf=pass; dkim=pass; dmarc=pass", PASSING), MX, False),
        ((), MX, False),
        ((), None, True),  # no results at all: as before, the address is trusted
    ],
)
def test_unsubscribe_mail_failing_spf_dkim_or_dmarc_is_not_acted_on(
    world: World, tmp_path: Path, results: tuple[str, ...], authserv_id: str | None, acted: bool
) -> None:
    victim = world.emails[2]
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(plea("unsubscribe", victim, *results))
    report = process_requests(
        MaildirMailbox(tmp_path / "Maildir"),
        engine=world.engine,
        signer=TokenSigner([SECRET]),
        now=world.now,
        **({"authserv_id": authserv_id} if authserv_id else {}),
    )
    with session_scope(world.engine) as session:
        status = session.exec(query(Subscriber.status).where(Subscriber.email == victim)).one()
    assert status == (SubscriberStatus.UNSUBSCRIBED if acted else SubscriberStatus.ACTIVE)
    assert (report.unsubscribed, len(report.refused)) == ((1, 0) if acted else (0, 1))
    assert all(line.startswith(f"{victim}: ") for line in report.refused)
    assert "S" in next(iter(mailbox.Maildir(tmp_path / "Maildir").values())).get_flags()  # done either way


# --- row 17: a complaint stays until the reader confirms by email --------------------------------


def test_a_complaint_is_not_undone_by_a_click_only_by_confirming_by_email(site: Site) -> None:
    world, reader = site.world, site.mailed[4]
    token = site.token(4)
    complaint = {"email": reader.to_email, "event": "spamreport", "sg_event_id": "c1"}
    assert site.webhook(json.dumps([complaint]).encode()).json() == {"applied": 1}
    one_click = site.http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert site.row(reader.to_email).status == SubscriberStatus.COMPLAINED
    unsubscribed = {"email": reader.to_email, "event": "unsubscribe", "sg_event_id": "u1"}
    assert site.webhook(json.dumps([unsubscribed]).encode()).json() == {"applied": 1}
    assert site.row(reader.to_email).status == SubscriberStatus.COMPLAINED
    again = site.http.post(f"/resubscribe/{token}")
    assert again.status_code == 200
    assert "Check your inbox" in again.text
    assert site.row(reader.to_email).status == SubscriberStatus.PENDING  # receives no edition
    site.http.post(f"/resubscribe/{token}")  # clicking again sends no second message
    [mail] = site.outbox.wait(1)
    assert mail.to_email == reader.to_email
    # Unconfirmed, the sign-up expires back to the complaint, not to a plain unsubscribe.
    with session_scope(world.engine) as session:
        expire_pending(session=session, now=world.now + timedelta(days=4), max_age=timedelta(hours=72))
    assert site.row(reader.to_email).status == SubscriberStatus.COMPLAINED
    # Asked again and confirmed by email: back.
    world.now += timedelta(days=5)
    site.http.post(f"/resubscribe/{token}")
    [_, mail] = site.outbox.wait(2)
    match = CONFIRM_LINK.search(mail.text)
    assert match is not None
    assert site.http.post(match.group(1)).status_code == 200
    assert site.row(reader.to_email).status == SubscriberStatus.ACTIVE
    assert len(site.outbox.sent) == 2


# --- row 19: deeply nested webhook JSON -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 200_000 + b"]" * 200_000, b'[{"email": "a@example.com", "x": ' + b"[" * 40 + b"]" * 40 + b"}]"],
    ids=["200000 deep", "40 deep inside an event"],
)
def test_a_signed_webhook_with_deeply_nested_json_gets_a_short_400(
    site: Site, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = site.webhook(body)
    assert answer.status_code == 400
    assert len(answer.content) < 200
    assert "nested" in answer.json()["error"]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert [r.getMessage() for r in caplog.records if r.name == "digest.web.webhooks"] == [
        f"sendgrid webhook refused: {answer.json()['error']}"
    ]


# --- Content-Security-Policy: sent by every public page, and the pages still work -----------------


def test_public_pages_send_a_content_security_policy_and_still_work_in_chromium(
    site: Site, tmp_path: Path
) -> None:
    site.http.post("/subscribe", data={"email": "csp@example.org", "website": ""})
    [mail] = site.outbox.wait(1)
    match = CONFIRM_LINK.search(mail.text)
    assert match is not None
    token = site.token(0)
    ours = [
        "/subscribe",
        match.group(1),
        f"/unsubscribe/{token}",
        f"/preferences/{token}",
        "/archive/",
        "/x/y",
    ]
    archived = f"/archive/{site.world.now.date().isoformat()}"
    for path in [*ours, archived, "/healthz", "/robots.txt"]:
        headers = site.http.get(path).headers
        policy = headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy, path
        assert "script-src 'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin", path
    with chromium(tmp_path) as browser:
        for path in ours[:-1]:
            page = browser.page()
            page.open(site.base + path)
            assert page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth") == "560px", path
            assert not [line for line in page.console() if "Content Security Policy" in line], path
        page = browser.page()
        page.open(site.base + "/subscribe")
        zone = page.evaluate("document.getElementById('timezone').value")
        assert zone == page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") != ""  # it ran
        assert page.evaluate("getComputedStyle(document.querySelector('.trap')).position") == "absolute"
        page = browser.page()
        page.open(site.base + archived)
        assert not [line for line in page.console() if "Content Security Policy" in line]
        widths = page.evaluate("[...document.querySelectorAll('[style*=max-width]')].length")
        assert widths > 0
        assert page.evaluate("document.body.scrollWidth") <= 800


def test_the_policy_blocks_a_script_that_is_not_ours(world: World, tmp_path: Path) -> None:
    # A template override with an inline script (as an injection would add) runs nowhere.
    override = tmp_path / "my-templates" / "web"
    override.mkdir(parents=True)
    (override / "archive.html.j2").write_text(
        '{% extends "web/base.html.j2" %}{% block body %}<h1 id="h">archive</h1>'
        "<script>document.getElementById('h').textContent = 'injected';</script>{% endblock %}"
    )
    settings = load_settings(**{**world.settings.model_dump(), "templates_dir": tmp_path / "my-templates"})
    app = create_app(settings, world.newsletter, engine=world.engine, clock=lambda: world.now)
    with serve(app) as base, chromium(tmp_path) as browser:
        page = browser.page()
        page.open(base + "/archive/")
        assert page.evaluate("document.getElementById('h').textContent") == "archive"
        assert any("Content Security Policy" in line for line in page.console())
