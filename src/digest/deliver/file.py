"""The file transport: one .eml per message, the exact bytes SMTP would send."""

import logging
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from digest.deliver.base import MessageContent, OutgoingMessage, SendResult
from digest.deliver.headers import checked_address
from digest.deliver.message import EncodedContent, MessageEncoder
from digest.errors import UnsendableAddress

log = logging.getLogger(__name__)

_PLAIN = re.compile(r"[A-Za-z0-9@._-]+")  # an address that needs no character replaced in its name
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
try:  # how many buffers one writev takes: 1024 on Linux and the BSDs, at least 16 by POSIX
    _IOV_MAX = max(os.sysconf("SC_IOV_MAX"), 16)
except (ValueError, OSError):
    _IOV_MAX = 16


class FileTransport:
    """Writes `<outbox>/edition-<id>/<delivery id>-<address>.eml` atomically (write, then rename)."""

    name = "file"
    # The ledger marks a call's rows `sending` in one commit and records their answers in the
    # next: a call of 100 files costs two commits, not two hundred (issue 15). A crash leaves at
    # most 100 messages unknown, and resending them rewrites the same files (stable names): the
    # outbox never holds a message twice.
    max_batch = 100

    def __init__(
        self, outbox: Path, *, clock: Callable[[], datetime], encoder: MessageEncoder | None = None
    ) -> None:
        self.outbox = outbox
        self._root = str(outbox)  # formatted into every path: not a Path's str() per message
        self.clock = clock
        self.encoder = encoder or MessageEncoder()
        self._made: set[int] = set()  # editions whose folder exists

    def path_for(self, message: OutgoingMessage) -> Path:
        """Where a message is written; stable, so a resend overwrites rather than duplicates."""
        return Path(self._path(message))

    def _path(self, message: OutgoingMessage) -> str:
        email = message.to_email
        safe = (
            email
            if _PLAIN.fullmatch(email)
            else "".join(c if c.isalnum() or c in "@._-" else "_" for c in email)
        )
        return f"{self._root}/edition-{message.edition_id}/{message.delivery_id:08d}-{safe}.eml"

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Write each message; an OS error or an unusable address fails that message only.

        A non-ASCII domain is written as IDNA; an address with a non-ASCII local part is kept
        as it is, in a message an SMTPUTF8 relay would carry (RFC 6532).
        """
        results = []
        now = self.clock()
        # A call's messages share one content (sender.batches): its encoded form is looked up
        # once a run, not once a message (the encoder's LRU reorders itself on every lookup).
        content: MessageContent | None = None
        encoded: EncodedContent | None = None
        for message in messages:
            path = self._path(message)
            try:
                if message.edition_id not in self._made:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    self._made.add(message.edition_id)
                if message.content is not content or encoded is None:
                    encoded = self.encoder.encoded(message.content)
                    content = message.content
                pieces = encoded.pieces(message, now=now)
                if message.return_path:
                    # As the final delivery server records the envelope sender (RFC 5321 §4.4).
                    pieces.insert(0, f"Return-Path: <{checked_address(message.return_path)}>\r\n".encode())
                _write_atomically(path, pieces)
                results.append(SendResult(message.delivery_id, ok=True, provider_id=path))
            except OSError as e:
                log.warning("outbox write failed subscriber=%s error=%s", message.to_email, e)
                results.append(SendResult(message.delivery_id, ok=False, error=f"{path}: {e}"))
            except UnsendableAddress as e:
                log.warning("outbox cannot write subscriber=%r reason=%s", message.to_email, e)
                results.append(SendResult(message.delivery_id, ok=False, permanent=True, error=str(e)))
        return results

    def close(self) -> None:
        """Nothing to release."""


def _write_atomically(path: str, pieces: list[bytes]) -> None:
    """The pieces, in order, into `path` by way of a temporary file beside it and a rename:
    whoever watches the outbox never sees half a message.

    os.open/os.writev rather than open() and one joined bytes object: the file object's stat,
    isatty and seek calls were half the system calls of a send, and the join copied every
    message once more in memory (issue 15).
    """
    if len(pieces) > _IOV_MAX:  # a template with hundreds of slots
        pieces = [b"".join(pieces)]
    tmp = path[: -len(".eml")] + ".tmp"
    fd = os.open(tmp, _CREATE, 0o666)
    try:
        written = os.writev(fd, pieces)
        size = sum(map(len, pieces))
        if written < size:  # a short write (a signal, a full disk): the rest, or OSError
            rest = b"".join(pieces)
            while written < size:
                written += os.write(fd, rest[written:])
    finally:
        os.close(fd)
    os.replace(tmp, path)
