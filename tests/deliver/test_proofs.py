"""Before a send (issue 14): test sends, seed copies and the VERP return path, through a real SMTP
server on loopback (aiosmtpd) and the file outbox, on SQLite and PostgreSQL."""

import mailbox
from collections import Counter
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import col, func, select

from digest.cli import app
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import Delivery, Edition, SeedCopy, Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.addresses import address_list
from digest.deliver.memory import MemoryTransport
from digest.deliver.proofs import TestSend, send_test
from digest.deliver.smtp import SmtpTransport
from digest.errors import DeliveryError
from digest.render.copies import make_renderer
from digest.subscribers.roster import add_subscriber
from tests.cli_helpers import ClockedRunner
from tests.deliver.sendgrid_server import Script, sendgrid_server
from tests.hostile.relay import Relay, hostile_relay
from tests.world import SECRET, World, use_in_cli

BOUNCES = "bounces@news.example.com"


def smtp_settings(world: World, port: int, **more: object) -> Settings:
    """The world's settings with the SMTP transport on a loopback port."""
    return world.settings.model_copy(
        update={"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_timeout": 2.0, **more}
    )


def relay_transport(port: int, now: datetime) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", port, clock=lambda: now, timeout=2.0, sleep=lambda _: None)


def subjects(relay: Relay, address: str) -> list[str]:
    """The subjects of the messages the relay took for `address`."""
    found = []
    for m in relay.received:
        if address in m.rcpt_tos:
            found.append(str(message_from_bytes(m.data, policy=policy.default)["Subject"]))
    return found


def ledger_and_events(world: World) -> tuple[int, int, int]:
    """(delivery rows, editions, subscriber events other than subscribing)."""
    with session_scope(world.engine) as session:
        rows = session.exec(select(func.count()).select_from(Delivery)).one()
        editions = session.exec(select(func.count()).select_from(Edition)).one()
        events = session.exec(
            select(func.count()).select_from(SubscriberEvent).where(SubscriberEvent.kind != "subscribe")
        ).one()
    return rows, editions, events


# --- test sends ------------------------------------------------------------------------------------


def test_a_test_send_goes_through_smtp_marked_test_records_nothing_and_the_real_send_reaches_everyone(
    world: World,
) -> None:
    with hostile_relay() as (port, relay):
        settings = world.settings = smtp_settings(world, port, bounce_address=BOUNCES)
        result = send_test(
            settings,
            world.newsletter,
            engine=world.engine,
            renderer=make_renderer(settings, world.newsletter),
            edition_date=world.now.date(),
            to=["editor@example.org", "second@example.net"],
            clock=lambda: world.now,
        )
        assert [(r.address, r.ok) for r in result.results] == [
            ("editor@example.org", True),
            ("second@example.net", True),
        ]
        assert not result.built  # a draft: the test did not freeze the edition
        assert relay.copies() == {"editor@example.org": 1, "second@example.net": 1}
        (subject,) = subjects(relay, "editor@example.org")
        assert subject.startswith("[Test] ") and subject == result.subject
        # No reader's VERP: a bounce of a test copy must never suppress a reader.
        assert {m.mail_from for m in relay.received} == {world.newsletter.newsletter.from_email}
        body = message_from_bytes(relay.received[0].data, policy=policy.default)
        text = body.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Hi," in text and "reader001" not in text
        assert ledger_and_events(world) == (0, 0, 0)

        # The real send afterwards reaches every reader, with no "[Test]" anywhere.
        report = world.send(relay_transport(port, world.now))
        assert report.sent == len(world.emails) and report.already == 0
        for email in world.emails:
            (real,) = subjects(relay, email)
            assert not real.startswith("[Test]")
        # Each reader's envelope sender is their own VERP address.
        verps = {m.rcpt_tos[0]: m.mail_from for m in relay.received if m.rcpt_tos[0] in world.emails}
        assert len(set(verps.values())) == len(world.emails)
        assert all(v.startswith("bounces+") and v.endswith("@news.example.com") for v in verps.values())


def copy_for(world: World, reader: str) -> TestSend:
    """A test send of the world's edition to editor@example.org as `reader`'s copy."""
    return send_test(
        world.settings,
        world.newsletter,
        engine=world.engine,
        renderer=make_renderer(world.settings, world.newsletter),
        edition_date=world.now.date(),
        to=["editor@example.org"],
        clock=lambda: world.now,
        as_reader=reader,
    )


def test_a_test_send_as_a_reader_is_their_copy_in_the_file_outbox_apart_from_the_readers(
    world: World,
) -> None:
    with session_scope(world.engine) as session:
        add_subscriber(
            "ana@example.com",
            name="Ana Reader",
            topics=[world.newsletter.topic_names[0]],
            session=session,
            now=world.now,
            known_topics=world.newsletter.topic_names,
        )
    world.settings = world.settings.model_copy(update={"bounce_address": BOUNCES})
    world.send(MemoryTransport())  # freeze and "send" the edition first: a test still works after
    result = copy_for(world, "ana@example.com")
    assert result.built and result.reader == "ana@example.com"
    (copy,) = result.results
    assert copy.where is not None
    path = Path(copy.where)
    assert path.parent.parent == world.settings.outbox_dir / "test"
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert str(message["Subject"]).startswith("[Test] ")
    assert parseaddr(str(message["To"]))[1] == "editor@example.org"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hi Ana Reader," in text
    listed = [t for t in world.newsletter.topic_names if f"\n- {t} (" in text]  # "In this edition:"
    assert listed == [world.newsletter.topic_names[0]]  # her topics only
    assert "Return-Path" not in message  # no reader's VERP on a test copy
    # By id too.
    with session_scope(world.engine) as session:
        ana = session.exec(select(Subscriber).where(Subscriber.email == "ana@example.com")).one()
    again = copy_for(world, str(ana.id))
    assert again.reader == "ana@example.com"


def test_the_test_command_validates_addresses_and_names_what_is_wrong(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_in_cli(world, monkeypatch)
    runner = ClockedRunner()
    bad = runner.invoke(
        app, ["send", "--date", world.now.date().isoformat(), "--test", "me@example.com,not-an-address"]
    )
    assert bad.exit_code == 1
    assert "--test: address 2 ('not-an-address') is not an email address" in bad.output
    alone = runner.invoke(app, ["send", "--as", "reader001@example.com"])
    assert alone.exit_code == 1 and "--test ADDRESS" in alone.output
    nobody = runner.invoke(app, ["send", "--test", "me@example.com", "--as", "nobody@example.com"])
    assert nobody.exit_code == 1 and "no subscriber nobody@example.com" in nobody.output
    ok = runner.invoke(
        app,
        [
            "send",
            "--date",
            world.now.date().isoformat(),
            "--test",
            "me@example.com",
            "--as",
            "reader001@example.com",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "reader001@example.com's copy" in ok.output and "sent to me@example.com" in ok.output
    assert "nothing was recorded" in ok.output
    assert ledger_and_events(world) == (0, 0, 0)


def test_address_lists_are_normalised_deduplicated_and_refused_by_position() -> None:
    assert address_list(" a@example.com, b@Example.COM ,a@example.com", what="--test") == (
        "a@example.com",
        "b@example.com",
    )
    with pytest.raises(DeliveryError, match=r"--test: address 1 \('a b@x.example'\)"):
        address_list("a b@x.example", what="--test")
    with pytest.raises(DeliveryError, match="no address given"):
        address_list(" , ", what="--test")


def test_a_test_send_through_a_relay_that_refuses_one_address_reports_it_and_exits_3(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_in_cli(world, monkeypatch)
    with hostile_relay({"RCPT gone@example.com": "550 5.1.1 no such user"}) as (port, relay):
        monkeypatch.setenv("DIGEST_TRANSPORT", "smtp")
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(port))
        result = ClockedRunner().invoke(app, ["send", "--test", "gone@example.com,me@example.com"])
    assert result.exit_code == 3, result.output
    assert "failed: gone@example.com: 550 5.1.1 no such user" in result.output.replace("\n", " ")
    assert "sent to me@example.com" in result.output
    assert relay.copies() == {"me@example.com": 1}
    assert ledger_and_events(world) == (0, 0, 0)  # and no bounce recorded for anyone


# --- seed copies -----------------------------------------------------------------------------------


def seed_rows(world: World) -> dict[str, str]:
    with session_scope(world.engine) as session:
        return {r.address: r.status for r in session.exec(select(SeedCopy).order_by(col(SeedCopy.id)))}


def test_seeds_get_each_edition_once_outside_the_counts_and_a_failing_seed_never_stops_the_send(
    world: World,
) -> None:
    script: dict[str, str | list[str]] = {"RCPT flaky@seeds.example": ["451 4.3.0 try later"] * 3}
    with hostile_relay(script) as (port, relay):
        settings = smtp_settings(world, port, seed_addresses="inbox@seeds.example, flaky@seeds.example")
        world.settings = settings
        first = world.send(relay_transport(port, world.now))
        assert first.sent == len(world.emails)  # readers only
        assert first.seeds.sent == 1 and len(first.seeds.failures) == 1
        assert "flaky@seeds.example" in first.seeds.failures[0]
        assert seed_rows(world) == {"inbox@seeds.example": "sent", "flaky@seeds.example": "failed"}
        # The real subject, the generic copy, no reader's VERP.
        (subject,) = subjects(relay, "inbox@seeds.example")
        (reader_subject,) = subjects(relay, world.emails[0])
        assert subject == reader_subject
        # Again (the scheduler sends each time zone apart): the failed seed is tried again, the
        # other is not sent twice, and no reader gets a second copy.
        second = world.send(relay_transport(port, world.now))
        assert second.nothing_new and second.seeds.sent == 1 and not second.seeds.failures
        third = world.send(relay_transport(port, world.now))
        assert third.seeds.sent == 0
        copies = relay.copies()
        assert copies["inbox@seeds.example"] == 1 and copies["flaky@seeds.example"] == 1
        assert Counter(copies[e] for e in world.emails) == Counter({1: len(world.emails)})
    with session_scope(world.engine) as session:
        rows = session.exec(select(func.count()).select_from(Delivery)).one()
    assert rows == len(world.emails)  # seeds are not in the ledger


def test_seeds_through_the_file_outbox_are_written_apart(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_in_cli(world, monkeypatch)
    monkeypatch.setenv("DIGEST_SEED_ADDRESSES", "inbox@seeds.example")
    result = ClockedRunner().invoke(app, ["send"])
    assert result.exit_code == 0, result.output
    assert "seed copies (not counted above): sent 1, failed 0" in result.output
    assert f"sent {len(world.emails)}," in result.output
    (seed,) = (world.settings.outbox_dir / "seeds").glob("edition-*/*.eml")
    assert "inbox@seeds.example" in seed.name


def test_the_seed_setting_names_the_bad_address() -> None:
    from digest.config import load_settings
    from digest.errors import SettingsError

    with pytest.raises(SettingsError, match=r"DIGEST_SEED_ADDRESSES: address 2 \('nope'\) is not an email"):
        load_settings(seed_addresses="ok@example.com,nope")


# --- VERP, end to end --------------------------------------------------------------------------------


def dsn(verp: str, *, final_recipient: str) -> bytes:
    """A delivery status notification (RFC 3464) as a relay would mail it to the return path: the
    recipient named as the remote server knew it (here a forwarding address), no copy returned."""
    report = EmailMessage()
    report["From"] = "MAILER-DAEMON@relay.example.net"
    report["To"] = verp
    report["Delivered-To"] = verp
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = "<verp-e2e-1@relay.example.net>"
    report.set_content("The mail system could not deliver your message to one recipient.\n")
    report.make_mixed()
    report.replace_header("Content-Type", 'multipart/report; report-type=delivery-status; boundary="=_b"')
    status = EmailMessage()
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(
        "Reporting-MTA: dns; relay.example.net\n\n"
        f"Final-Recipient: rfc822; {final_recipient}\n"
        "Action: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    )
    raw = report.as_bytes()
    # Assemble by hand: EmailMessage will not attach a raw delivery-status part.
    head, _, _ = raw.partition(b"\n\n")
    text = b"The mail system could not deliver your message to one recipient.\n"
    return (
        head
        + b"\n\n--=_b\nContent-Type: text/plain; charset=us-ascii\n\n"
        + text
        + b"\n--=_b\nContent-Type: message/delivery-status\n\n"
        + str(status.get_payload()).encode()
        + b"\n--=_b--\n"
    )


def test_the_verp_return_path_carries_a_later_bounce_back_to_its_reader(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with hostile_relay() as (port, relay):
        world.settings = smtp_settings(world, port, bounce_address=BOUNCES)
        report = world.send(relay_transport(port, world.now))
    assert report.sent == len(world.emails)
    victim = world.emails[3]
    (mail_from,) = [m.mail_from for m in relay.received if m.rcpt_tos == [victim]]
    assert mail_from.startswith("bounces+") and mail_from.endswith("@news.example.com")
    box = mailbox.Maildir(tmp_path / "Bounces", create=True)
    box.add(dsn(mail_from, final_recipient="old-alias@forward.example"))  # only the VERP names the reader
    use_in_cli(world, monkeypatch)
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    monkeypatch.setenv("DIGEST_BOUNCE_ADDRESS", BOUNCES)
    monkeypatch.setenv("DIGEST_BOUNCE_MAILBOX", f"maildir:{tmp_path / 'Bounces'}")
    result = ClockedRunner().invoke(app, ["bounces"])
    assert result.exit_code == 0, result.output
    assert "read 1: hard 1, soft 0, readers suppressed 1" in result.output
    with session_scope(world.engine) as session:
        status = {s.email: s.status for s in session.exec(select(Subscriber))}
    assert status[victim] == SubscriberStatus.BOUNCED
    assert Counter(status.values())[SubscriberStatus.ACTIVE] == len(world.emails) - 1


def test_the_file_outbox_records_the_return_path(world: World) -> None:
    world.settings = world.settings.model_copy(update={"bounce_address": BOUNCES})
    from digest.deliver.file import FileTransport

    world.send(FileTransport(world.settings.outbox_dir, clock=lambda: world.now))
    files = sorted(world.settings.outbox_dir.glob("edition-*/*.eml"))
    assert len(files) == len(world.emails)
    first = files[0].read_bytes()
    assert first.startswith(b"Return-Path: <bounces+")
    # The rest is exactly what SMTP sends: the header is only in the file.
    assert first.count(b"Return-Path:") == 1


def test_a_test_send_and_the_seeds_through_sendgrid_are_requests_the_spec_accepts(world: World) -> None:
    script = Script()
    with sendgrid_server(script) as url:
        world.settings = world.settings.model_copy(
            update={
                "transport": "sendgrid",
                "sendgrid_host": url,
                "sendgrid_api_key": SecretStr("SG.test-key-for-the-local-server"),
                "seed_addresses": "inbox@seeds.example",
            }
        )
        result = send_test(
            world.settings,
            world.newsletter,
            engine=world.engine,
            renderer=make_renderer(world.settings, world.newsletter),
            edition_date=world.now.date(),
            to=["editor@example.org", "second@example.net"],
            clock=lambda: world.now,
        )
        assert [r.ok for r in result.results] == [True, True]
        assert ledger_and_events(world) == (0, 0, 0)
        report = world.send(MemoryTransport())  # the readers through memory; the seeds through SendGrid
    assert report.seeds.sent == 1
    assert script.violations == []
    test_request, seed_request = script.requests
    assert test_request["subject"].startswith("[Test] ")
    assert [p["to"][0]["email"] for p in test_request["personalizations"]] == [
        "editor@example.org",
        "second@example.net",
    ]
    assert not seed_request["subject"].startswith("[Test]")
    assert [p["to"][0]["email"] for p in seed_request["personalizations"]] == ["inbox@seeds.example"]
