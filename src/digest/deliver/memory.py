"""An in-memory transport for tests and dry runs, with a small builder for failures."""

from collections.abc import Sequence

from digest.deliver.base import OutgoingMessage, SendResult


class MemoryTransport:
    """Keeps every message; addresses can be told to fail permanently or transiently."""

    name = "memory"

    def __init__(self, *, max_batch: int = 1) -> None:
        self.max_batch = max_batch
        self.sent: list[OutgoingMessage] = []
        self.calls: list[list[OutgoingMessage]] = []
        self.permanent_failures: dict[str, str] = {}
        self.transient_failures: dict[str, str] = {}
        self.closed = False

    def failing(
        self, email: str, reason: str = "550 no such user", *, permanent: bool = True
    ) -> "MemoryTransport":
        """Make sends to `email` fail (builder style); a permanent failure is a bounce."""
        (self.permanent_failures if permanent else self.transient_failures)[email] = reason
        return self

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Record each message, or fail it as configured."""
        self.calls.append(list(messages))
        results = []
        for m in messages:
            if m.to_email in self.permanent_failures:
                reason = self.permanent_failures[m.to_email]
                results.append(SendResult(m.delivery_id, False, True, reason, bounce=True))
            elif m.to_email in self.transient_failures:
                results.append(SendResult(m.delivery_id, False, False, self.transient_failures[m.to_email]))
            else:
                self.sent.append(m)
                results.append(SendResult(m.delivery_id, True))
        return results

    def close(self) -> None:
        """Mark closed."""
        self.closed = True
