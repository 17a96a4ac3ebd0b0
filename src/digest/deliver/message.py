"""RFC 5322 bytes for one OutgoingMessage: multipart/alternative, text first, then HTML."""

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from digest.deliver.base import OutgoingMessage


def new_message_id(domain: str) -> str:
    """A unique Message-ID in angle brackets on our domain (Gmail rejects mail without one)."""
    return make_msgid(domain=domain)


def to_bytes(message: OutgoingMessage, *, now: datetime) -> bytes:
    """The exact bytes an SMTP server receives (CRLF line ends)."""
    msg = EmailMessage()
    msg["From"] = Address(message.from_name, addr_spec=message.from_email)
    msg["To"] = Address(message.to_name, addr_spec=message.to_email)
    msg["Subject"] = message.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message.message_id
    for name, value in message.headers.items():
        msg[name] = value
    msg.set_content(message.text, cte="quoted-printable")
    msg.add_alternative(message.html, subtype="html", cte="quoted-printable")
    return msg.as_bytes(policy=SMTP)


def list_headers(
    *,
    unsubscribe_url: str,
    list_id: str,
    reply_to: str | None = None,
    mailto: str | None = None,
    token: str = "",
) -> dict[str, str]:
    """List-Id, List-Unsubscribe (RFC 2369) and one-click List-Unsubscribe-Post (RFC 8058)."""
    targets = [f"<{unsubscribe_url}>"]
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe%20{token}>")
    headers = {
        "List-Id": list_id,
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    if reply_to:
        headers["Reply-To"] = reply_to
    return headers
