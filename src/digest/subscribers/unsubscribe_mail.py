"""Unsubscribe requests by email: the mailto in List-Unsubscribe must never be a dead end.

Messages arrive in the DIGEST_UNSUBSCRIBE_MAILTO mailbox, read here from a Maildir or over IMAP
(DIGEST_UNSUBSCRIBE_MAILBOX). A request whose subject carries a valid token unsubscribes that
token's subscriber; without one, the sender's address is used if it is a subscriber. Each
processed message is marked seen, so a rerun does not count it twice.

A From address is easy to forge, so a message that the receiving mail server found failing SPF,
DKIM or DMARC (its Authentication-Results header, RFC 8601) is not acted on (issue 12). Only that
server's headers count: they sit on top, above anything the sender wrote; with
DIGEST_UNSUBSCRIBE_AUTHSERV_ID set, only headers naming that server count at all.
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
from itertools import takewhile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import authres
import sqlalchemy as sa
from sqlmodel import Session

from digest.db.engine import session_scope
from digest.db.models import Subscriber
from digest.db.queries import existing_edition_id
from digest.errors import DigestError, SettingsError, SubscriberError, TokenError
from digest.subscribers.roster import get_subscriber
from digest.subscribers.status import unsubscribe
from digest.tokens import TokenSigner, subscriber_for

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"unsubscribe\s+([A-Za-z0-9_.\-]+)", re.IGNORECASE)


MAX_AUTH_HEADER = 4096  # characters of one Authentication-Results value read; the rest is noise
FAILED = frozenset({"fail", "softfail"})  # SPF results that refuse; softfail (~all): "probably not us"


@dataclass(frozen=True, slots=True)
class MailRequest:
    """One message found in the mailbox."""

    key: str
    subject: str
    sender: str
    authentication: tuple[str, ...] = ()  # Authentication-Results values, topmost (newest) first


class Mailbox(Protocol):
    """Where unsubscribe requests are read from."""

    def unread(self) -> Iterator[MailRequest]:
        """Messages not processed yet."""
        ...

    def raw(self, request: MailRequest, *, limit: int) -> bytes:
        """The message's first `limit` bytes, as stored (nothing is marked)."""
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
    results = tuple(str(v) for v in msg.get_all("Authentication-Results") or ())
    return MailRequest(key=key, subject=subject, sender=sender, authentication=results)


def _parse_results(value: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(authserv-id, [(method, result), ...]) of one header value; None when it does not parse."""
    try:
        header = authres.AuthenticationResultsHeader.parse_value(" ".join(value[:MAX_AUTH_HEADER].split()))
    except authres.AuthResError:
        return None
    return str(header.authserv_id), [(str(r.method).lower(), str(r.result).lower()) for r in header.results]


def authentication_failure(request: MailRequest, authserv_id: str | None = None) -> str | None:
    """Why the receiving server's Authentication-Results say the message is forged, or None.

    The receiving server adds its headers on top, so the trusted ones are the first run of headers
    naming the same server (the topmost one's, or `authserv_id`'s when set). A sender can write
    headers with that name below them, and only ever to look better: so a pass counts only in the
    topmost header, a failure anywhere in the run. DMARC pass settles it (forwarding breaks SPF,
    not an aligned DKIM signature); else SPF fail or softfail, DKIM fail without a DKIM pass, or
    DMARC fail refuse. With `authserv_id` set, a message without its header is refused too: that
    server always adds one, so its absence means the message came some other way.
    """
    parsed = [_parse_results(v) for v in request.authentication]
    server = authserv_id.lower() if authserv_id else (parsed[0][0] if parsed and parsed[0] else None)
    run = [p[1] for p in takewhile(lambda p: p is not None and p[0] == server, parsed) if p is not None]
    if not run:
        return f"no Authentication-Results from {authserv_id}" if authserv_id else None
    top = set(run[0])
    if ("dmarc", "pass") in top:
        return None
    seen = {pair for pairs in run for pair in pairs}
    failing = [
        f"{method}={result}"
        for method, result in sorted(seen)
        if (method == "spf" and result in FAILED)
        or (method == "dmarc" and result == "fail")
        or (method == "dkim" and result == "fail" and ("dkim", "pass") not in top)
    ]
    return ", ".join(failing) or None


class MaildirMailbox:
    """A Maildir folder (what most local delivery agents write)."""

    def __init__(self, path: Path, *, setting: str = "DIGEST_UNSUBSCRIBE_MAILBOX") -> None:
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise SettingsError(f"{setting}: {path} is not a Maildir (no new/ and cur/)")
        self.box = mailbox.Maildir(path, factory=None, create=False)

    def unread(self) -> Iterator[MailRequest]:
        """Messages without the Seen flag."""
        for key in sorted(self.box.keys()):
            msg = self.box.get_message(key)
            if "S" in msg.get_flags():
                continue
            parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
            yield _request(key, parsed)

    def raw(self, request: MailRequest, *, limit: int) -> bytes:
        """The file's first `limit` bytes."""
        with self.box.get_file(request.key) as f:
            return f.read(limit)

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

    def __init__(self, url: str, password: str, *, setting: str = "DIGEST_UNSUBSCRIBE_MAILBOX") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise SettingsError(f"{setting}: {url!r} is not like imaps://user@host/INBOX or maildir:/path")
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
        """Unseen messages' Subject, From and Authentication-Results, in the order the message has
        them (read with PEEK: nothing is marked until done)."""
        try:
            _, data = self.conn.uid("SEARCH", "UNSEEN")
            for uid in (data[0] or b"").split():
                _, fetched = self.conn.uid(
                    "FETCH", uid.decode(), "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM AUTHENTICATION-RESULTS)])"
                )
                raw = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
                yield _request(uid.decode(), message_from_bytes(raw, policy=policy.default))
        except (OSError, imaplib.IMAP4.error) as e:
            raise DigestError(f"IMAP {self.host}: {e}") from e

    def raw(self, request: MailRequest, *, limit: int) -> bytes:
        """The first `limit` bytes of the message (a partial fetch with PEEK: not marked seen)."""
        try:
            _, fetched = self.conn.uid("FETCH", request.key, f"(BODY.PEEK[]<0.{limit}>)")
        except (OSError, imaplib.IMAP4.error) as e:
            raise DigestError(f"IMAP {self.host}: {e}") from e
        data = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
        return bytes(data[:limit])

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


def open_mailbox(
    spec: str | None, password: str | None, *, setting: str = "DIGEST_UNSUBSCRIBE_MAILBOX"
) -> Mailbox:
    """The mailbox named by `setting` (DIGEST_UNSUBSCRIBE_MAILBOX, or DIGEST_BOUNCE_MAILBOX)."""
    if not spec:
        raise SettingsError(f"{setting}: not set (maildir:/path/to/Maildir or imaps://user@host/INBOX)")
    if spec.startswith("maildir:"):
        return MaildirMailbox(Path(spec.removeprefix("maildir:")).expanduser(), setting=setting)
    if not password:
        raise SettingsError(f"{setting}_PASSWORD: required for an IMAP mailbox")
    return ImapMailbox(spec, password, setting=setting)


@dataclass
class MailReport:
    """What one pass over the mailbox did."""

    read: int = 0
    unsubscribed: int = 0
    already: int = 0
    unmatched: list[str] = field(default_factory=list)  # "sender: subject" nobody could be found for
    refused: list[str] = field(default_factory=list)  # "sender: spf=fail": forged, not acted on


def process_requests(
    box: Mailbox,
    *,
    engine: sa.Engine,
    signer: TokenSigner,
    now: datetime,
    authserv_id: str | None = None,
) -> MailReport:
    """Unsubscribe the sender of every unread request that is not forged; each message is marked
    done after its commit (a refused one too: it is reported, and a rerun must not repeat it)."""
    report = MailReport()
    for request in box.unread():
        report.read += 1
        failure = authentication_failure(request, authserv_id)
        if failure is not None:
            report.refused.append(f"{request.sender or '?'}: {failure}")
            log.warning("unsubscribe mail not acted on sender=%s authentication=%s", request.sender, failure)
            box.mark_done(request)
            continue
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
            subscriber = subscriber_for(link, session=session)
            if subscriber is not None:
                return subscriber, existing_edition_id(link.edition_id, session=session)
    if request.sender:
        try:
            return get_subscriber(request.sender, session=session), None
        except SubscriberError:
            pass
    return None, None
