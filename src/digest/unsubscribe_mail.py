"""Unsubscribe requests by email: the mailto in List-Unsubscribe must never be a dead end.

Messages arrive in the DIGEST_UNSUBSCRIBE_MAILTO mailbox, read here from a Maildir or over IMAP
(DIGEST_UNSUBSCRIBE_MAILBOX). A request whose subject carries a valid token unsubscribes that
token's subscriber; without one, the sender's address is used if it is a subscriber. Each
processed message is marked seen, so a rerun does not count it twice.
"""

import imaplib
import logging
import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import Message
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlmodel import Session

from digest.db.engine import session_scope
from digest.db.models import Subscriber
from digest.db.queries import existing_edition_id
from digest.errors import DigestError, SettingsError, SubscriberError, TokenError
from digest.subscribers import get_subscriber, unsubscribe
from digest.tokens import TokenSigner

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"unsubscribe\s+([A-Za-z0-9_.\-]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MailRequest:
    """One message found in the mailbox."""

    key: str
    subject: str
    sender: str


class Mailbox(Protocol):
    """Where unsubscribe requests are read from."""

    def unread(self) -> Iterator[MailRequest]:
        """Messages not processed yet."""
        ...

    def mark_done(self, request: MailRequest) -> None:
        """Mark a message processed (seen)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def _request(key: str, msg: Message) -> MailRequest:
    subject = str(msg.get("Subject", ""))
    sender = ""
    from_header = msg.get("From")
    if from_header is not None:
        addresses: tuple[Address, ...] = getattr(from_header, "addresses", ())
        sender = addresses[0].addr_spec if addresses else str(from_header)
    return MailRequest(key=key, subject=subject, sender=sender)


class MaildirMailbox:
    """A Maildir folder (what most local delivery agents write)."""

    def __init__(self, path: Path) -> None:
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise SettingsError(f"DIGEST_UNSUBSCRIBE_MAILBOX: {path} is not a Maildir (no new/ and cur/)")
        self.box = mailbox.Maildir(path, factory=None, create=False)

    def unread(self) -> Iterator[MailRequest]:
        """Messages without the Seen flag."""
        for key in sorted(self.box.keys()):
            msg = self.box.get_message(key)
            if "S" in msg.get_flags():
                continue
            parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
            yield _request(key, parsed)

    def mark_done(self, request: MailRequest) -> None:
        """Move to cur/ with the Seen flag (Maildir convention)."""
        msg = self.box.get_message(request.key)
        msg.set_subdir("cur")
        msg.add_flag("S")
        self.box[request.key] = msg

    def close(self) -> None:
        """Flush nothing: Maildir writes are immediate."""
        self.box.close()


class ImapMailbox:
    """An IMAP folder over TLS (imaps://user@host[:port]/FOLDER); unread means not \\Seen."""

    def __init__(self, url: str, password: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise SettingsError(
                f"DIGEST_UNSUBSCRIBE_MAILBOX: {url!r} is not like imaps://user@host/INBOX or maildir:/path"
            )
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        try:
            if parts.scheme == "imaps":
                self.conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(parts.hostname, parts.port or 993, timeout=30)
            else:
                self.conn = imaplib.IMAP4(parts.hostname, parts.port or 143, timeout=30)
                self.conn.starttls()
            self.conn.login(unquote(parts.username), password)
            status, _ = self.conn.select(folder)
        except (OSError, imaplib.IMAP4.error) as e:
            raise DigestError(f"IMAP {parts.hostname}: {e}") from e
        if status != "OK":
            raise DigestError(f"IMAP {parts.hostname}: cannot open folder {folder!r}")
        self.host = parts.hostname

    def unread(self) -> Iterator[MailRequest]:
        """Unseen messages' Subject and From (read with PEEK: nothing is marked until done)."""
        try:
            _, data = self.conn.uid("SEARCH", "UNSEEN")
            for uid in (data[0] or b"").split():
                _, fetched = self.conn.uid("FETCH", uid.decode(), "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
                raw = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
                yield _request(uid.decode(), message_from_bytes(raw, policy=policy.default))
        except (OSError, imaplib.IMAP4.error) as e:
            raise DigestError(f"IMAP {self.host}: {e}") from e

    def mark_done(self, request: MailRequest) -> None:
        """Set \\Seen."""
        try:
            self.conn.uid("STORE", request.key, "+FLAGS", "(\\Seen)")
        except (OSError, imaplib.IMAP4.error) as e:
            raise DigestError(f"IMAP {self.host}: {e}") from e

    def close(self) -> None:
        """Log out."""
        try:
            self.conn.logout()
        except (OSError, imaplib.IMAP4.error):
            log.warning("IMAP %s: logout failed", self.host)


def open_mailbox(spec: str | None, password: str | None) -> Mailbox:
    """The mailbox named by DIGEST_UNSUBSCRIBE_MAILBOX."""
    if not spec:
        raise SettingsError(
            "DIGEST_UNSUBSCRIBE_MAILBOX: not set (maildir:/path/to/Maildir or imaps://user@host/INBOX)"
        )
    if spec.startswith("maildir:"):
        return MaildirMailbox(Path(spec.removeprefix("maildir:")).expanduser())
    if not password:
        raise SettingsError("DIGEST_UNSUBSCRIBE_MAILBOX_PASSWORD: required for an IMAP mailbox")
    return ImapMailbox(spec, password)


@dataclass
class MailReport:
    """What one pass over the mailbox did."""

    read: int = 0
    unsubscribed: int = 0
    already: int = 0
    unmatched: list[str] = field(default_factory=list)  # "sender: subject" nobody could be found for


def process_requests(box: Mailbox, *, engine: sa.Engine, signer: TokenSigner, now: datetime) -> MailReport:
    """Unsubscribe the sender of every unread request; each message is marked done after its commit."""
    report = MailReport()
    for request in box.unread():
        report.read += 1
        with session_scope(engine) as session:
            subscriber, edition_id = _who(request, signer=signer, session=session)
            if subscriber is None:
                report.unmatched.append(f"{request.sender or '?'}: {request.subject}")
                log.warning("unsubscribe mail matched nobody sender=%s", request.sender)
            elif unsubscribe(
                subscriber,
                session=session,
                now=now,
                method="email",
                edition_id=edition_id,
                user_agent=f"mailto from {request.sender}"[:200],
            ):
                report.unsubscribed += 1
            else:
                report.already += 1
        box.mark_done(request)
    return report


def _who(
    request: MailRequest, *, signer: TokenSigner, session: Session
) -> tuple[Subscriber | None, int | None]:
    """The subscriber a request is about: by its token, else by its sender; and the edition."""
    match = _TOKEN.search(request.subject)
    if match:
        try:
            link = signer.verify(match.group(1))
        except TokenError:
            log.warning("unsubscribe mail with a bad token sender=%s", request.sender)
        else:
            subscriber = session.get(Subscriber, link.subscriber_id)
            if subscriber is not None:
                return subscriber, existing_edition_id(link.edition_id, session=session)
    if request.sender:
        try:
            return get_subscriber(request.sender, session=session), None
        except SubscriberError:
            pass
    return None, None
