"""The file transport: one .eml per message, the exact bytes SMTP would send."""

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.headers import checked_address
from digest.deliver.message import MessageEncoder
from digest.errors import UnsendableAddress

log = logging.getLogger(__name__)


class FileTransport:
    """Writes `<outbox>/edition-<id>/<delivery id>-<address>.eml` atomically (write, then rename)."""

    name = "file"
    max_batch = 1  # like SMTP: a crash leaves at most one message unknown

    def __init__(
        self, outbox: Path, *, clock: Callable[[], datetime], encoder: MessageEncoder | None = None
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.encoder = encoder or MessageEncoder()
        self._dirs: set[Path] = set()

    def path_for(self, message: OutgoingMessage) -> Path:
        """Where a message is written; stable, so a resend overwrites rather than duplicates."""
        safe = "".join(c if c.isalnum() or c in "@._-" else "_" for c in message.to_email)
        return self.outbox / f"edition-{message.edition_id}" / f"{message.delivery_id:08d}-{safe}.eml"

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Write each message; an OS error or an unusable address fails that message only.

        A non-ASCII domain is written as IDNA; an address with a non-ASCII local part is kept
        as it is, in a message an SMTPUTF8 relay would carry (RFC 6532).
        """
        results = []
        now = self.clock()
        for message in messages:
            path = self.path_for(message)
            try:
                if path.parent not in self._dirs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._dirs.add(path.parent)
                tmp = path.with_suffix(".tmp")
                data = self.encoder.to_bytes(message, now=now)
                if message.return_path:
                    # As the final delivery server records the envelope sender (RFC 5321 §4.4).
                    data = f"Return-Path: <{checked_address(message.return_path)}>\r\n".encode() + data
                tmp.write_bytes(data)
                tmp.replace(path)
                results.append(SendResult(message.delivery_id, ok=True, provider_id=str(path)))
            except OSError as e:
                log.warning("outbox write failed subscriber=%s error=%s", message.to_email, e)
                results.append(SendResult(message.delivery_id, ok=False, error=f"{path}: {e}"))
            except UnsendableAddress as e:
                log.warning("outbox cannot write subscriber=%r reason=%s", message.to_email, e)
                results.append(SendResult(message.delivery_id, ok=False, permanent=True, error=str(e)))
        return results

    def close(self) -> None:
        """Nothing to release."""
