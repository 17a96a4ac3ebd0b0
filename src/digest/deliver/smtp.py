"""The SMTP transport: one connection reused for many messages, reopened when the server drops it.

Replies are read by the stage that gave them, as Postfix and listmonk read RFC 5321 §4.2
(replies.py; issue 12 row 1: a 530 to MAIL FROM used to mark all 200 readers of a send bounced):

- only a refusal of RCPT TO is about the reader. A 5xx there bounces them (the address is
  suppressed), except a full mailbox (x.2.2: fails this edition, stays subscribed) and a
  policy refusal (5.7.x: not the reader's fault, sent again by the next run);
- a 5xx to MAIL FROM or DATA, or after the content, is about the sender, the session or the
  message: it stops the send with one line naming the relay's answer, and nobody is bounced;
- a 4xx, a dropped connection or a slow answer is transient: retried with jittered backoff;
  if it persists, a reader's RCPT stays queued for a later run, a session's stops the send;
- settings that do not match the relay (TLS, AUTH, port, credentials, not an SMTP server at
  all) stop the send at once, without retries, with a line naming the setting to check.

A stopped send leaves every unsent row sendable: the next `digest send` goes on.

A relay that offers PIPELINING (RFC 2920; Postfix, Exim and Gmail do) gets MAIL FROM,
RCPT TO and DATA in one write: two round trips a message instead of four. Its replies are read
in order and classified as above, under the same stages.

Long: one job, one connection to the relay. Its session (TLS, login) and its transactions share
the connection they reopen, the stage names, the drop handling and the hints in each stop line
(the TLS and login a refusal at MAIL FROM points to), so they stay together.
"""

import contextlib
import logging
import random
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from digest.deliver.addresses import relay_address
from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.headers import clean
from digest.deliver.message import MessageEncoder
from digest.deliver.replies import Reply, Verdict, classify
from digest.errors import TransportUnavailable, UnsendableAddress

log = logging.getLogger(__name__)

ATTEMPTS = 3  # per message and call; a later `digest send` tries again after that
BACKOFF_BASE = 1.0  # seconds; doubled each retry, with jitter


def backoff(attempt: int, *, base: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (1-based): base * 2^(attempt-1), jittered."""
    return float(base * (2 ** (attempt - 1)) * (0.5 + rand()))


# An RFC 5321 Dot-string local part at a domain of ASCII labels: nearly every address. For it
# smtplib.quoteaddr returns the address between angle brackets, after running email.utils'
# address parser over it (10-18 us an address, two a message: issue 15).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def envelope_address(address: str) -> str:
    """`address` as MAIL FROM and RCPT TO carry it: what smtplib.quoteaddr gives."""
    if _DOT_ATOM.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


class _Deferred(Exception):
    """A transient failure: wait and try again (drop the connection first when `drop`)."""

    def __init__(self, message: str, *, reader: bool = False, drop: bool = False) -> None:
        super().__init__(message)
        self.reader = reader  # a reader's RCPT answer, not the session's
        self.drop = drop


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
        self.offers_starttls = False  # seen on the last connection; for hints in errors

    @property
    def where(self) -> str:
        """`SMTP host:port`, how every error of this transport starts."""
        return f"SMTP {self.host}:{self.port}"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for `ssl` and `starttls` (the system's CAs unless one was given)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    # --- the session: connect, greet, TLS, login --------------------------------------------

    def _config_error(self, what: str) -> TransportUnavailable:
        return TransportUnavailable(f"{self.where}: configuration error: {what}")

    def _untrusted(self, e: ssl.SSLCertVerificationError) -> TransportUnavailable:
        return self._config_error(
            f"the server's TLS certificate is not trusted: {e.verify_message} (is DIGEST_SMTP_HOST "
            "the name on its certificate, signed by an authority this system trusts?)"
        )

    def _connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        conn = self._open()
        try:
            self._greet(conn)
        except BaseException:
            with contextlib.suppress(OSError):
                conn.close()
            raise
        self._conn = conn
        self.connections += 1
        return conn

    def _open(self) -> smtplib.SMTP:
        """A connection that has read the server's greeting."""
        try:
            if self.security == "ssl":
                return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
            return smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except ConnectionRefusedError as e:
            raise self._config_error(
                "connection refused: nothing listens on this port "
                "(check DIGEST_SMTP_HOST and DIGEST_SMTP_PORT)"
            ) from e
        except socket.gaierror as e:
            raise self._config_error(f"unknown host {self.host!r} (check DIGEST_SMTP_HOST): {e}") from e
        except ssl.SSLCertVerificationError as e:
            raise self._untrusted(e) from e
        except ssl.SSLError as e:
            raise self._config_error(
                f"TLS handshake failed ({e.reason or e}): DIGEST_SMTP_SECURITY=ssl wants TLS from the "
                "first byte, but this port does not speak it; for a plain port (25, 587) set "
                "DIGEST_SMTP_SECURITY=starttls or none, or use the TLS port (usually 465)"
            ) from e
        except smtplib.SMTPConnectError as e:
            reply = Reply.of("greeting", e.smtp_code, e.smtp_error)
            if reply.code == -1:
                # smtplib keeps only the end of a line that has no reply code: not worth showing
                raise self._config_error(
                    "not an SMTP server: its first line is no SMTP greeting (check DIGEST_SMTP_HOST "
                    "and DIGEST_SMTP_PORT; SMTP is usually on 25, 587 or 465)"
                ) from e
            if 400 <= reply.code < 500:
                raise _Deferred(f"{self.where}: the server is not taking mail now: {reply}") from e
            raise TransportUnavailable(f"{self.where} refused the connection: {reply}") from e
        except smtplib.SMTPServerDisconnected as e:
            if isinstance(e.__context__, TimeoutError):
                raise self._config_error(
                    f"connected, but no SMTP greeting within {self.timeout:g} s: not an SMTP server, "
                    "or one that wants TLS from the first byte (for port 465 set DIGEST_SMTP_SECURITY=ssl)"
                ) from e
            raise _Deferred(f"{self.where}: the server closed the connection before its greeting") from e
        except TimeoutError as e:
            raise self._config_error(
                f"no answer to connecting within {self.timeout:g} s (a firewall, or the wrong "
                "DIGEST_SMTP_HOST or DIGEST_SMTP_PORT)"
            ) from e
        except OSError as e:
            raise _Deferred(f"{self.where}: cannot connect: {e}") from e

    def _greet(self, conn: smtplib.SMTP) -> None:
        """EHLO, STARTTLS and AUTH as the settings ask; a mismatch with the relay is named."""
        with self._session_errors("EHLO"):
            conn.ehlo_or_helo_if_needed()
        self.offers_starttls = conn.has_extn("starttls")
        if self.security == "starttls":
            if not self.offers_starttls:
                raise self._config_error(
                    "the server does not offer STARTTLS, but DIGEST_SMTP_SECURITY=starttls (set it to "
                    "none for a plain relay, or to ssl with the relay's implicit-TLS port, usually 465)"
                )
            with self._session_errors("STARTTLS"):
                try:
                    conn.starttls(context=self.ssl_context)
                except ssl.SSLCertVerificationError as e:
                    raise self._untrusted(e) from e
                except ssl.SSLError as e:
                    raise self._config_error(f"TLS handshake after STARTTLS failed: {e.reason or e}") from e
                conn.ehlo()  # RFC 3207 §4.2: forget what was offered in clear, ask again
        elif self.security == "none" and self.offers_starttls:
            log.debug("smtp relay offers STARTTLS; DIGEST_SMTP_SECURITY=none sends in clear")
        if self.username:
            self._login(conn)

    def _login(self, conn: smtplib.SMTP) -> None:
        if not conn.has_extn("auth"):
            if self.security == "none" and self.offers_starttls:
                hint = (
                    "it offers STARTTLS, and AUTH usually comes after it: set DIGEST_SMTP_SECURITY=starttls"
                )
            else:
                hint = "unset DIGEST_SMTP_USERNAME if the relay needs no login"
            raise self._config_error(f"the server offers no AUTH, but DIGEST_SMTP_USERNAME is set ({hint})")
        with self._session_errors("AUTH"):
            try:
                conn.login(self.username or "", self.password or "")
            except smtplib.SMTPAuthenticationError as e:
                reply = Reply.of("AUTH", e.smtp_code, e.smtp_error)
                if 400 <= reply.code < 500:
                    raise _Deferred(f"{self.where}: login deferred: {reply}", drop=True) from e
                raise self._config_error(
                    f"login refused: {reply} (check DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD)"
                ) from e
            except smtplib.SMTPNotSupportedError as e:
                raise self._config_error(f"login not possible: {e}") from e
            except smtplib.SMTPException as e:
                if isinstance(e, smtplib.SMTPResponseException):
                    raise
                # "No suitable authentication method found": nothing in common with the server
                offered = conn.esmtp_features.get("auth", "")
                raise self._config_error(
                    f"no login method in common: the server offers {clean(offered, 80)!r}; digest "
                    "speaks CRAM-MD5, PLAIN and LOGIN"
                ) from e

    @contextlib.contextmanager
    def _session_errors(self, stage: str):  # type: ignore[no-untyped-def]
        """Classify a refusal, a drop or a slow answer during EHLO, STARTTLS or AUTH."""
        try:
            yield
        except smtplib.SMTPServerDisconnected as e:
            raise _Deferred(self._lost(stage, e), drop=True) from e
        except smtplib.SMTPResponseException as e:
            reply = Reply.of(stage, e.smtp_code, e.smtp_error)
            if 400 <= reply.code < 500:
                raise _Deferred(f"{self.where}: {stage} deferred: {reply}", drop=True) from e
            raise TransportUnavailable(f"{self.where} refused {stage}: {reply}") from e
        except OSError as e:
            raise _Deferred(f"{self.where}: {stage}: {e}", drop=True) from e

    def _lost(self, stage: str, e: BaseException) -> str:
        if isinstance(e.__context__, TimeoutError) or isinstance(e, TimeoutError):
            return f"{self.where}: no answer to {stage} within {self.timeout:g} s (DIGEST_SMTP_TIMEOUT)"
        return f"{self.where}: the server closed the connection at {stage}"

    # --- messages -----------------------------------------------------------------------------

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message on the shared connection."""
        return [self._send_one(m) for m in messages]

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        last: _Deferred | None = None
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.sleep(backoff(attempt - 1, base=self.backoff_base))
            try:
                conn = self._connect()
                return self._transaction(conn, message, attempt)
            except _Deferred as e:
                last = e
                if e.drop:
                    self._drop()
                log.info("smtp deferred subscriber=%s attempt=%d reply=%s", message.to_email, attempt, e)
        assert last is not None
        error = f"{last} (after {self.attempts} attempts)"
        if not last.reader:
            raise TransportUnavailable(error)
        return SendResult(message.delivery_id, ok=False, error=error, attempts=self.attempts)

    def _transaction(self, conn: smtplib.SMTP, message: OutgoingMessage, attempt: int) -> SendResult:
        """MAIL FROM, RCPT TO, DATA for one message; raises _Deferred or TransportUnavailable."""
        smtputf8 = conn.has_extn("smtputf8")
        try:
            rcpt, rcpt_utf8 = relay_address(message.to_email, smtputf8=smtputf8)
        except UnsendableAddress as e:
            log.warning("smtp cannot send subscriber=%s reason=%s", message.to_email, e)
            return SendResult(message.delivery_id, ok=False, permanent=True, error=str(e), attempts=attempt)
        # MAIL FROM is the return path: bounce reports come back to it (VERP, issue 14).
        sender = message.return_path or message.content.from_email
        try:
            sender, sender_utf8 = relay_address(sender, smtputf8=smtputf8)
        except UnsendableAddress as e:
            what = "return path" if message.return_path else "newsletter's from_email"
            raise self._config_error(f"the {what} cannot be sent: {e}") from e
        # RFC 6531 §3.4: a message with UTF-8 headers goes with SMTPUTF8 (and 8-bit MIME)
        options = ["SMTPUTF8", "BODY=8BITMIME"] if rcpt_utf8 or sender_utf8 else []
        data = self.encoder.to_wire(message, now=self.clock(), to_email=rcpt)  # dot-stuffed, ended
        if conn.has_extn("pipelining"):
            reply = self._pipelined(conn, sender, rcpt, options, data)
        else:
            reply = self._stepwise(conn, sender, rcpt, options, data)
        if reply.code == 250 and reply.stage == "EOD":
            return SendResult(message.delivery_id, ok=True, attempts=attempt)
        return self._refused(conn, message, reply, attempt, sender=sender, size=len(data))

    def _stepwise(self, conn: smtplib.SMTP, sender: str, rcpt: str, options: list[str], data: bytes) -> Reply:
        """One command, one reply: the reply that decides (EOD 250 when all went well)."""
        stage = "MAIL"
        try:
            reply = Reply.of(stage, *conn.mail(sender, options))
            if reply.code == 250:
                stage = "RCPT"
                reply = Reply.of(stage, *conn.rcpt(rcpt))
            if reply.code in (250, 251) and stage == "RCPT":
                stage = "DATA"
                # smtplib's data(), for content already dot-stuffed and ended (MessageEncoder.to_wire)
                reply = Reply.of(stage, *conn.docmd("data"))
                if reply.code == 354:
                    conn.send(data)
                    reply = Reply.of("EOD", *conn.getreply())
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as e:
            # Dropped mid-message (or a reply line past smtplib's limit): reconnect and try again.
            raise _Deferred(self._lost(self._stage_name(stage), e), drop=True) from e
        return reply

    def _pipelined(
        self, conn: smtplib.SMTP, sender: str, rcpt: str, options: list[str], data: bytes
    ) -> Reply:
        """MAIL FROM, RCPT TO and DATA in one write, their replies read in order (RFC 2920).

        Two round trips a message instead of four (the relay offers PIPELINING, as every real MTA
        does): the envelope with DATA, then the content. The reply that decides is the first
        refusal in stage order, the one `_stepwise` would have stopped at, under the same stage.
        """
        if options:
            conn.command_encoding = "utf-8"  # as smtplib's mail() does for SMTPUTF8 (RFC 6531 §3.4)
        mail = " ".join([f"MAIL FROM:{envelope_address(sender)}", *options])
        commands = f"{mail}\r\nRCPT TO:{envelope_address(rcpt)}\r\nDATA\r\n"
        stage = "MAIL"
        refused: Reply | None = None
        try:
            conn.send(commands)
            for stage, wanted in (("MAIL", (250,)), ("RCPT", (250, 251)), ("DATA", (354,))):
                reply = Reply.of(stage, *conn.getreply())
                if refused is None and reply.code not in wanted:
                    refused = reply  # the later replies are read to stay in step, then ignored
            if refused is None:
                conn.send(data)
                return Reply.of("EOD", *conn.getreply())
            if reply.code == 354:
                # RFC 2920 §3.1: DATA may be accepted though no recipient was; end that empty
                # message, or the RSET and the next message would be read as its content.
                conn.send(b".\r\n")
                conn.getreply()
            return refused
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError) as e:
            if refused is None:
                raise _Deferred(self._lost(self._stage_name(stage), e), drop=True) from e
            self._drop()  # lost after a refusal, which still decides; the next message reconnects
            return refused

    def _refused(
        self,
        conn: smtplib.SMTP,
        message: OutgoingMessage,
        reply: Reply,
        attempt: int,
        *,
        sender: str,
        size: int,
    ) -> SendResult:
        """A non-2xx reply: a result for this reader, or _Deferred, or TransportUnavailable."""
        if reply.code == 421 or reply.code < 0:
            self._drop()  # "closing connection" (RFC 5321 §3.8), or not speaking SMTP any more
        else:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.rset()  # end the refused transaction; the connection serves the next reader
        verdict = classify(reply.stage, reply.code, reply.text)
        if verdict is Verdict.DEFER:
            if reply.stage == "RCPT":
                raise _Deferred(str(reply), reader=True)
            raise _Deferred(f"{self.where} deferred {self._stage_name(reply.stage)}: {reply}")
        if verdict is Verdict.STOP:
            raise TransportUnavailable(self._stop_line(reply, sender=sender, size=size))
        log.warning("smtp refused subscriber=%s reply=%s verdict=%s", message.to_email, reply, verdict.value)
        error = str(reply)
        if verdict is Verdict.POLICY:
            error = f"{error} (the relay's policy, not the reader's fault: tried again by the next send)"
        return SendResult(
            message.delivery_id,
            ok=False,
            permanent=verdict is not Verdict.POLICY,
            bounce=verdict is Verdict.BOUNCE,
            error=error,
            attempts=attempt,
        )

    def _stage_name(self, stage: str) -> str:
        return {"MAIL": "MAIL FROM", "RCPT": "RCPT TO", "EOD": "end of DATA"}.get(stage, stage)

    def _stop_line(self, reply: Reply, *, sender: str, size: int) -> str:
        """One line for a refusal that stops the send: where, what, the answer, and a hint."""
        text = reply.text.lower()
        if reply.stage == "MAIL":
            what = f"refused the sender {sender} at MAIL FROM"
        elif reply.stage == "RCPT":
            what = "answered RCPT TO about the session, not the reader"
        elif reply.stage == "DATA":
            what = "refused the message at DATA"
        else:
            what = f"refused the message ({size // 1024 or 1} KB) after its content"
        hint = ""
        if reply.stage == "RCPT" and "relay" in text:
            hint = (
                " (it does not relay for digest: set DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD, "
                "or allow this host in the relay's settings)"
            )
        elif reply.code == 530 or "starttls" in text or "authenticat" in text:
            if "starttls" in text or (self.security == "none" and self.offers_starttls):
                hint = " (it wants TLS first: set DIGEST_SMTP_SECURITY=starttls)"
            elif not self.username:
                hint = " (it wants a login: set DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD)"
        elif reply.stage == "MAIL" and reply.code in (550, 553):
            hint = " (may this relay send as the newsletter's from_email?)"
        return f"{self.where} {what}: {reply}{hint}"

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
