"""The SMTP transport: one connection reused for many messages, reopened when the server drops it.

Per recipient: a 5xx reply is permanent (the address is suppressed as bounced); a 4xx reply or a
dropped connection is retried with jittered exponential backoff, and recorded for a later run
when the retries run out.
"""

import contextlib
import logging
import random
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.message import MessageEncoder
from digest.errors import TransportUnavailable

log = logging.getLogger(__name__)

ATTEMPTS = 3  # per message and call; a later `digest send` tries again after that
BACKOFF_BASE = 1.0  # seconds; doubled each retry, with jitter


def backoff(attempt: int, *, base: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (1-based): base * 2^(attempt-1), jittered."""
    return float(base * (2 ** (attempt - 1)) * (0.5 + rand()))


class SmtpTransport:
    """Sends over SMTP with `none`, `starttls` or `ssl`; answers per recipient."""

    name = "smtp"
    max_batch = 1  # one message per call: a crash leaves at most one message unknown

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
        attempts: int = ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        sleep: Callable[[float], None] = time.sleep,
        encoder: MessageEncoder | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.clock = clock
        # Made on first TLS connection: loading the system CAs costs ~30 ms, and a distributed
        # worker makes its transports anew for every batch, most of them plain loopback relays.
        self._ssl_context = ssl_context
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.sleep = sleep
        self.encoder = encoder or MessageEncoder()
        self._conn: smtplib.SMTP | None = None
        self.connections = 0  # connections opened (tests check reuse)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for `ssl` and `starttls` (the system's CAs unless one was given)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        conn: smtplib.SMTP
        if self.security == "ssl":
            conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                conn.starttls(context=self.ssl_context)
        if self.username:
            conn.login(self.username, self.password or "")
        self._conn = conn
        self.connections += 1
        return conn

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message on the shared connection."""
        return [self._send_one(m) for m in messages]

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        data = self.encoder.to_bytes(message, now=self.clock())
        error = ""
        connect_failures = 0
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.sleep(backoff(attempt - 1, base=self.backoff_base))
            try:
                conn = self._connect()
            except smtplib.SMTPAuthenticationError as e:
                raise TransportUnavailable(f"SMTP {self.host}:{self.port}: login refused: {e}") from e
            except (OSError, smtplib.SMTPException) as e:
                connect_failures += 1
                error = f"SMTP {self.host}:{self.port}: cannot connect: {e}"
                log.warning("smtp connect failed attempt=%d error=%s", attempt, e)
                continue
            try:
                conn.sendmail(message.content.from_email, [message.to_email], data)
                return SendResult(message.delivery_id, ok=True, attempts=attempt)
            except smtplib.SMTPRecipientsRefused as e:
                code, reply = next(iter(e.recipients.values()))
                error = _reply(code, reply)
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
                code, error = e.smtp_code, _reply(e.smtp_code, e.smtp_error)
            except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as e:
                # The server dropped us mid-message: reconnect and try again (the rule).
                self._drop()
                error = f"connection lost: {e}"
                log.warning("smtp connection lost subscriber=%s attempt=%d", message.to_email, attempt)
                continue
            if code == 421:  # "closing connection" (RFC 5321 §3.8): reconnect for the retry
                self._drop()
            if 500 <= code < 600:
                log.warning("smtp refused subscriber=%s reply=%s", message.to_email, error)
                return SendResult(
                    message.delivery_id, ok=False, permanent=True, bounce=True, error=error, attempts=attempt
                )
            log.info("smtp deferred subscriber=%s attempt=%d reply=%s", message.to_email, attempt, error)
        if connect_failures == self.attempts:
            raise TransportUnavailable(error)
        return SendResult(
            message.delivery_id,
            ok=False,
            error=f"{error} (after {self.attempts} attempts)",
            attempts=self.attempts,
        )

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


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    return f"{code} {text}"
