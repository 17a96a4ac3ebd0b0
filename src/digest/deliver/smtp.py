"""The SMTP transport: one connection reused for many messages, reopened when dropped."""

import contextlib
import logging
import smtplib
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime

from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.message import to_bytes
from digest.errors import DeliveryError

log = logging.getLogger(__name__)


class SmtpTransport:
    """Sends over SMTP with `none`, `starttls` or `ssl`; answers per recipient."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        clock: Callable[[], datetime],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.clock = clock
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        try:
            conn: smtplib.SMTP
            if self.security == "ssl":
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    conn.starttls(context=self.ssl_context)
            if self.username:
                conn.login(self.username, self.password or "")
        except (OSError, smtplib.SMTPException) as e:
            raise DeliveryError(f"SMTP {self.host}:{self.port}: cannot connect: {e}") from e
        self._conn = conn
        return conn

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message on the shared connection; reconnect once if the server dropped it."""
        return [self._send_one(m) for m in messages]

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        data = to_bytes(message, now=self.clock())
        for attempt in (1, 2):
            try:
                conn = self._connect()
                conn.sendmail(message.from_email, [message.to_email], data)
                return SendResult(message.delivery_id, ok=True)
            except smtplib.SMTPRecipientsRefused as e:
                code, reply = next(iter(e.recipients.values()))
                return self._refused(message, code, reply)
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
                return self._refused(message, e.smtp_code, e.smtp_error)
            except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as e:
                self._drop()
                if attempt == 2:
                    return SendResult(message.delivery_id, ok=False, error=f"connection lost: {e}")
            except DeliveryError as e:
                return SendResult(message.delivery_id, ok=False, error=str(e))
        raise AssertionError("unreachable")

    def _refused(self, message: OutgoingMessage, code: int, reply: bytes | str) -> SendResult:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        permanent = 500 <= code < 600
        log.warning("smtp refused subscriber=%s code=%d reply=%s", message.to_email, code, text)
        return SendResult(message.delivery_id, ok=False, permanent=permanent, error=f"{code} {text}")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        """Say QUIT politely, or just drop the socket."""
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            self._drop()
