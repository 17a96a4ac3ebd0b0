"""The transport interface and the values that cross it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only named here: the ledger, which imports this module, needs no Jinja or MJML
    from digest.render.email import BodyTemplate

ONE_CLICK = "List-Unsubscribe=One-Click"  # the exact List-Unsubscribe-Post value (RFC 8058 §3.1)


@dataclass(frozen=True, slots=True)
class MessageContent:
    """What every reader of one distinct digest shares: sender, subject, both bodies with slots.

    `key` identifies the content: transports encode it once (MIME, SendGrid content) and reuse it.
    """

    key: str
    from_email: str
    from_name: str
    subject: str
    list_id: str | None  # "Daily Digest <daily-digest.example.com>"; None: not list mail
    html: BodyTemplate
    text: BodyTemplate
    reply_to: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # more shared headers, e.g. Auto-Submitted


# OutgoingMessage and SendResult are made once per reader of a send: slots without `frozen`,
# whose __init__ sets each field through object.__setattr__ and cost three times as much
# (about 2.4 us a reader for the two, issue 15). Treat them as values all the same: nothing
# changes one after it is made (dataclasses.replace makes a new one).
@dataclass(slots=True)
class OutgoingMessage:
    """One message to one subscriber: shared content plus this reader's values."""

    delivery_id: int
    subscriber_id: int
    edition_id: int
    to_email: str
    to_name: str
    content: MessageContent
    values: Mapping[str, str]  # slot name -> this reader's value (render.personal_values)
    message_id: str  # with angle brackets
    unsubscribe_url: str | None  # None only for mail that is not list mail (sign-up confirmation)
    unsubscribe_mailto: str | None = None  # a full mailto: URL carrying the token, or None
    token_key: str | None = None  # the reader's link key: webhook events name the very row (issue 12)
    # The envelope sender (SMTP MAIL FROM), where relays mail their bounce reports: a VERP address
    # naming this reader and edition (bounces.return_path, issue 14); None: the From address.
    return_path: str | None = None

    @property
    def subject(self) -> str:
        """The subject line (shared by every reader of the content)."""
        return self.content.subject

    @property
    def html(self) -> str:
        """This reader's HTML part (built on demand: the hot path never needs it)."""
        return self.content.html.fill(self.values)

    @property
    def text(self) -> str:
        """This reader's text part."""
        return self.content.text.fill(self.values)

    @property
    def headers(self) -> dict[str, str]:
        """Headers beyond From, To, Subject, Date and Message-ID, as the message carries them."""
        content = self.content
        headers = {"Reply-To": content.reply_to} if content.reply_to else {}
        if content.list_id is not None:
            headers["List-Id"] = content.list_id
            headers["List-Unsubscribe-Post"] = ONE_CLICK
        if self.list_unsubscribe is not None:
            headers["List-Unsubscribe"] = self.list_unsubscribe
        headers.update(content.headers)
        return headers

    @property
    def list_unsubscribe(self) -> str | None:
        """The List-Unsubscribe value: the https URL first, then the mailto (RFC 2369, RFC 8058)."""
        if self.unsubscribe_url is None:
            return None
        if self.unsubscribe_mailto:
            return f"<{self.unsubscribe_url}>, <{self.unsubscribe_mailto}>"
        return f"<{self.unsubscribe_url}>"


@dataclass(slots=True)  # not frozen: see OutgoingMessage
class SendResult:
    """A transport's answer for one message."""

    delivery_id: int
    ok: bool
    permanent: bool = False  # a failure that retrying will not fix
    error: str | None = None
    provider_id: str | None = None
    bounce: bool = False  # the server refused the address itself (suppress the subscriber)
    attempts: int = 1  # tries made by the transport for this message in this call


class Transport(Protocol):
    """Sends messages and answers per message; expected failures are results, not exceptions.

    `max_batch` is how many messages one `send` call may carry: the ledger marks exactly that
    many rows `sending` at a time, so a crash leaves at most one call's messages unknown.
    A transport raises `TransportUnavailable` only when it cannot send anything at all (the
    server is unreachable); the send stops and nothing of that call counts as sent.
    """

    name: str
    max_batch: int

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send a batch; one result per message, in order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
