"""`digest unsubscribe-mail`: requests sent to the List-Unsubscribe mailto, read from a Maildir."""

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlmodel import select

from digest.cli import app
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.memory import MemoryTransport
from digest.errors import SettingsError
from digest.subscribers.unsubscribe_mail import MaildirMailbox, open_mailbox, process_requests
from digest.tokens import TokenSigner
from tests.cli_helpers import ClockedRunner
from tests.world import SECRET, World


def request(subject: str, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "unsubscribe@digest.example", subject
    msg.set_content("Please unsubscribe me.")
    return msg


def statuses(world: World) -> dict[str, SubscriberStatus]:
    with session_scope(world.engine) as session:
        return {s.email: s.status for s in session.exec(select(Subscriber))}


def test_requests_by_token_or_by_sender_unsubscribe_once(world: World, tmp_path: Path) -> None:
    memory = MemoryTransport()
    world.send(memory)
    token = memory.sent[0].unsubscribe_url.rsplit("/", 1)[1]
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(request(f"unsubscribe {token}", "someone.else@elsewhere.example"))  # forwarded: token wins
    box.add(request("Unsubscribe", world.emails[5]))  # a client that dropped the subject's token
    box.add(request("unsubscribe forged.token", "stranger@elsewhere.example"))
    report = process_requests(
        MaildirMailbox(tmp_path / "Maildir"), engine=world.engine, signer=TokenSigner([SECRET]), now=world.now
    )
    assert (report.read, report.unsubscribed, report.already) == (3, 2, 0)
    assert report.unmatched == ["stranger@elsewhere.example: unsubscribe forged.token"]
    after = statuses(world)
    assert after[memory.sent[0].to_email] == SubscriberStatus.UNSUBSCRIBED
    assert after[world.emails[5]] == SubscriberStatus.UNSUBSCRIBED
    assert sum(s == SubscriberStatus.UNSUBSCRIBED for s in after.values()) == 2
    with session_scope(world.engine) as session:
        events = list(session.exec(select(SubscriberEvent).where(SubscriberEvent.kind == "unsubscribe")))
    assert sorted((e.method, e.edition_id is not None) for e in events) == [("email", False), ("email", True)]
    # Every message is now seen: a second pass reads nothing.
    again = process_requests(
        MaildirMailbox(tmp_path / "Maildir"), engine=world.engine, signer=TokenSigner([SECRET]), now=world.now
    )
    assert again.read == 0
    assert all("S" in m.get_flags() for m in mailbox.Maildir(tmp_path / "Maildir").values())


def test_the_command_reads_the_configured_maildir(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(request("unsubscribe", world.emails[0]))
    monkeypatch.setenv("DIGEST_DATABASE_URL", world.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    monkeypatch.setenv("DIGEST_UNSUBSCRIBE_MAILBOX", f"maildir:{tmp_path / 'Maildir'}")
    result = ClockedRunner().invoke(app, ["unsubscribe-mail"])
    assert result.exit_code == 0, result.output
    assert "read 1, unsubscribed 1" in result.output
    assert statuses(world)[world.emails[0]] == SubscriberStatus.UNSUBSCRIBED


def test_the_command_lists_forged_requests_it_did_not_act_on(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    forged = request("unsubscribe", world.emails[1])
    forged["Authentication-Results"] = "mail.digest.example; spf=fail smtp.mailfrom=example.com"
    box.add(forged)
    monkeypatch.setenv("DIGEST_DATABASE_URL", world.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    monkeypatch.setenv("DIGEST_UNSUBSCRIBE_MAILBOX", f"maildir:{tmp_path / 'Maildir'}")
    monkeypatch.setenv("DIGEST_UNSUBSCRIBE_AUTHSERV_ID", "mail.digest.example")
    result = ClockedRunner().invoke(app, ["unsubscribe-mail"])
    assert result.exit_code == 0, result.output
    assert "read 1, unsubscribed 0, already out 0, unmatched 0, refused 1" in result.output
    assert f"not acted on (failed authentication): {world.emails[1]}: spf=fail" in result.output
    assert statuses(world)[world.emails[1]] == SubscriberStatus.ACTIVE


def test_a_missing_or_wrong_mailbox_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DIGEST_UNSUBSCRIBE_MAILBOX: not set"):
        open_mailbox(None, None)
    with pytest.raises(SettingsError, match="is not a Maildir"):
        open_mailbox(f"maildir:{tmp_path}", None)
    with pytest.raises(SettingsError, match="PASSWORD"):
        open_mailbox("imaps://me@mail.example/INBOX", None)
