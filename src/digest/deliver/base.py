"""The transport interface and the values that cross it."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to one subscriber, with everything any transport needs."""

    delivery_id: int
    subscriber_id: int
    edition_id: int
    to_email: str
    to_name: str
    from_email: str
    from_name: str
    subject: str
    html: str
    text: str
    message_id: str  # with angle brackets
    headers: dict[str, str] = field(default_factory=dict)  # List-*, Reply-To, ...


@dataclass(frozen=True, slots=True)
class SendResult:
    """A transport's answer for one message."""

    delivery_id: int
    ok: bool
    permanent: bool = False  # a failure that retrying will not fix (5xx, bad address)
    error: str | None = None
    provider_id: str | None = None


class Transport(Protocol):
    """Sends messages and answers per message; expected failures are results, not exceptions."""

    name: str

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send a batch; one result per message, in order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
