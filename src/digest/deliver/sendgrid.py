"""The SendGrid transport: the official library against DIGEST_SENDGRID_HOST, 1000 readers a call.

One request carries one content and up to 1000 personalizations (SendGrid's limit), each with
its own List-Unsubscribe headers, Message-ID, `custom_args` tying webhook events to (edition,
subscriber), and `substitutions` filling the reader's slots in both parts. SendGrid's own
subscription tracking is off: our endpoint handles unsubscribes. 429 waits for
X-RateLimit-Reset; 5xx and timeouts are retried with jittered backoff. Another 4xx is about the
request, the key or the account, not the readers (issue 12 row 1): it stops the send and leaves
every reader queued, except a 400 whose errors name personalizations, which fails those readers
alone and sends the others. Addresses go in ASCII (IDNA domains); a reader whose address has a
non-ASCII local part fails alone (this transport does not rely on SMTPUTF8 past the API).

A message's VERP return path (OutgoingMessage.return_path, issue 14) is not sent: the v3 mail
send body has no envelope-sender field (checked against tsg_mail_v3.json: `from`, `reply_to`,
`headers` and the personalizations, nothing for MAIL FROM). SendGrid sends from its own
return-path domain (yours with domain authentication) and reports bounces through the Event
Webhook, which `/webhooks/sendgrid` applies; DIGEST_BOUNCE_ADDRESS is for the other relays.
"""

import html
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.error import URLError

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from digest.deliver.addresses import ascii_address
from digest.deliver.base import ONE_CLICK, MessageContent, OutgoingMessage, SendResult
from digest.deliver.headers import MAX_SUBJECT, clean, display_name
from digest.deliver.smtp import backoff
from digest.errors import TransportUnavailable, UnsendableAddress
from digest.render.email import BodyTemplate

log = logging.getLogger(__name__)

MAX_PERSONALIZATIONS = 1000  # per request (SendGrid mail send limits)
REQUEST_TIMEOUT = 30.0  # the library has none by default
ATTEMPTS = 5
BACKOFF_BASE = 2.0
MAX_RATE_LIMIT_WAIT = 300.0  # never sleep longer than this on one 429
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)(?:\.|$)")


def _tag(slot: str, part: str, key: str) -> str:
    # The content key is a random nonce: feed text cannot forge a tag it cannot guess.
    return f"%{slot}.{part}.{key}%"


def _tagged(body: BodyTemplate, part: str, key: str) -> str:
    out = [body.chunks[0]]
    for slot, chunk in zip(body.slots, body.chunks[1:], strict=True):
        out.append(_tag(slot, part, key))
        out.append(chunk)
    return "".join(out)


def _substitutions(message: OutgoingMessage) -> dict[str, str]:
    content = message.content
    subs: dict[str, str] = {}
    for part, body in (("t", content.text), ("h", content.html)):
        for slot in body.slots:
            value = message.values[slot]
            subs[_tag(slot, part, content.key)] = html.escape(value) if body.escape else value
    return subs


def personalization(message: OutgoingMessage) -> dict[str, Any]:
    """One reader's envelope: address, own headers, custom_args and slot values."""
    to: dict[str, str] = {"email": ascii_address(message.to_email)}
    name = display_name(message.to_name)  # no line break, capped: it becomes a To: header
    if name:
        to["name"] = name
    # substitutions never reach headers, so the per-reader headers go here (STANDARDS.md)
    headers = {"Message-ID": message.message_id}
    if message.list_unsubscribe is not None:
        headers = {
            "List-Unsubscribe": message.list_unsubscribe,
            "List-Unsubscribe-Post": ONE_CLICK,
            **headers,
        }
    return {
        "to": [to],
        "headers": headers,
        # ids only, no personal data: they come back in every webhook event
        "custom_args": {
            "digest_edition": str(message.edition_id),
            "digest_subscriber": str(message.subscriber_id),
            "digest_delivery": str(message.delivery_id),
            # random, not personal: tells the row this went to from one re-created under its id
            **({"digest_key": message.token_key} if message.token_key else {}),
        },
        "substitutions": _substitutions(message),
    }


def mail_body(messages: Sequence[OutgoingMessage]) -> dict[str, Any]:
    """The /v3/mail/send request body for up to 1000 readers of one content."""
    if not messages or len(messages) > MAX_PERSONALIZATIONS:
        raise ValueError(f"a SendGrid request carries 1 to {MAX_PERSONALIZATIONS} messages")
    content: MessageContent = messages[0].content
    if any(m.content.key != content.key for m in messages):
        raise ValueError("a SendGrid request carries one content")
    body: dict[str, Any] = {
        "personalizations": [personalization(m) for m in messages],
        "from": {"email": ascii_address(content.from_email), "name": display_name(content.from_name)},
        "subject": clean(content.subject, MAX_SUBJECT),
        "content": [
            {"type": "text/plain", "value": _tagged(content.text, "t", content.key)},
            {"type": "text/html", "value": _tagged(content.html, "h", content.key)},
        ],
        "headers": {
            **({"List-Id": clean(content.list_id)} if content.list_id is not None else {}),
            **{name: clean(value) for name, value in content.headers},
        },
        "tracking_settings": {"subscription_tracking": {"enable": False}},
    }
    if content.reply_to:
        body["reply_to"] = {"email": ascii_address(content.reply_to)}
    return body


class SendGridTransport:
    """Posts one request per call of up to 1000 readers; answers per reader."""

    name = "sendgrid"
    max_batch = MAX_PERSONALIZATIONS  # a crash leaves at most one request's readers unknown

    def __init__(
        self,
        api_key: str,
        *,
        host: str,
        timeout: float = REQUEST_TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout
        self.host = host
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.requests = 0  # requests made (tests count them)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request for the batch (retried as the rules say); the same answer for each reader.

        Readers whose address cannot go (or that a 400 names) fail alone; the rest are sent.
        """
        if not messages:
            return []
        content = messages[0].content
        try:
            for sender in (content.from_email, content.reply_to or content.from_email):
                ascii_address(sender)
        except UnsendableAddress as e:
            raise TransportUnavailable(
                f"SendGrid {self.host}: configuration error: the newsletter's from_email or reply_to "
                f"cannot be sent: {e}"
            ) from e
        failed: dict[int, SendResult] = {}
        pending: list[OutgoingMessage] = []
        for m in messages:
            try:
                ascii_address(m.to_email)
                pending.append(m)
            except UnsendableAddress as e:
                log.warning("sendgrid cannot send subscriber=%s reason=%s", m.to_email, e)
                failed[m.delivery_id] = _result(m, ok=False, permanent=True, error=str(e))
        answered = self._post(pending, failed) if pending else []
        by_id = {r.delivery_id: r for r in answered} | failed
        return [by_id[m.delivery_id] for m in messages]

    def _post(self, messages: list[OutgoingMessage], failed: dict[int, SendResult]) -> list[SendResult]:
        """Post `messages`; readers a 400 names go to `failed`, the others get the answer."""
        error = ""
        unreachable = 0
        for attempt in range(1, self.attempts + 1):
            self.requests += 1
            try:
                response = self.client.client.mail.send.post(request_body=mail_body(messages))
            except HTTPError as e:
                status = int(e.status_code)
                error = f"SendGrid HTTP {status}: {_error_text(e.body)}"
                if status == 429:
                    wait = self._rate_limit_wait(e.headers, attempt)
                    log.warning("sendgrid rate limited; waiting %.1f s", wait)
                    self.sleep(wait)
                    continue
                if status < 500:
                    named = _named_personalizations(e.body, len(messages)) if status == 400 else set()
                    if not named:
                        raise self._refused(status, error) from e
                    for i in sorted(named):
                        log.warning("sendgrid refused subscriber=%s error=%s", messages[i].to_email, error)
                        failed[messages[i].delivery_id] = _result(
                            messages[i], ok=False, permanent=True, error=error
                        )
                    messages = [m for i, m in enumerate(messages) if i not in named]
                    if not messages:
                        return []
                    continue  # the others, at once: the request was refused, nothing was sent
            except (TimeoutError, URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                error = f"SendGrid {self.host} unreachable: {_in_words(reason, self.client.client.timeout)}"
                if not isinstance(reason, TimeoutError):
                    unreachable += 1
            else:
                headers = response.headers
                provider_id = headers.get("X-Message-Id") if headers is not None else None
                return [_result(m, ok=True, provider_id=provider_id) for m in messages]
            if attempt < self.attempts:
                self.sleep(backoff(attempt, base=self.backoff_base))
        if unreachable == self.attempts:
            raise TransportUnavailable(error)
        error = f"{error} (after {self.attempts} attempts)"
        return [_result(m, ok=False, error=error) for m in messages]

    def _refused(self, status: int, error: str) -> TransportUnavailable:
        """A 4xx about the request, the key or the account: one line, with the setting to check."""
        hint = {
            401: "configuration error: the API key was refused (check SENDGRID_API_KEY)",
            403: "configuration error: the key may not send mail, or from_email is not a verified "
            "sender (check SENDGRID_API_KEY and the newsletter's from_email)",
            404: "configuration error: no mail API at this address (check DIGEST_SENDGRID_HOST)",
            405: "configuration error: no mail API at this address (check DIGEST_SENDGRID_HOST)",
            413: "the message is too large for SendGrid (30 MB at most)",
        }.get(status, "the request was refused")
        log.warning("sendgrid refused request error=%s", error)
        return TransportUnavailable(f"SendGrid {self.host}: {hint}: {error}")

    def _rate_limit_wait(self, headers: Any, attempt: int) -> float:
        """Seconds until X-RateLimit-Reset (a Unix time), or the backoff when it is missing."""
        raw = headers.get("X-RateLimit-Reset") if headers is not None else None
        try:
            reset = float(str(raw))
        except (TypeError, ValueError):
            return backoff(attempt, base=self.backoff_base)
        return min(max(reset - self.wall_clock(), 0.0), MAX_RATE_LIMIT_WAIT)

    def close(self) -> None:
        """Nothing to release (urllib opens a connection per request)."""


def _result(
    message: OutgoingMessage,
    *,
    ok: bool,
    permanent: bool = False,
    error: str | None = None,
    provider_id: str | None = None,
) -> SendResult:
    return SendResult(message.delivery_id, ok=ok, permanent=permanent, error=error, provider_id=provider_id)


def _named_personalizations(body: bytes | str | None, count: int) -> set[int]:
    """Indexes of the personalizations a 400 blames, if every error names one; else empty."""
    try:
        errors = json.loads(body or b"").get("errors", [])
        fields = [str(e.get("field") or "") for e in errors]
    except (ValueError, TypeError, AttributeError):
        return set()
    matches = [_PERSONALIZATION_FIELD.match(f) for f in fields]
    if not matches or not all(matches):
        return set()
    named = {int(m[1]) for m in matches if m}
    return named if all(i < count for i in named) else set()


def _error_text(body: bytes | str | None) -> str:
    try:
        data = json.loads(body or b"")
        text = "; ".join(str(e.get("message", "")) for e in data.get("errors", [])) or str(data)
    except (ValueError, TypeError, AttributeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return clean(text, 300)  # the provider's words go into one log line and the ledger


def _in_words(reason: object, timeout: float) -> str:
    """Why the API could not be reached, in plain words with the setting to check (issue 14:
    not "[Errno 111] Connection refused")."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: nothing listens there (check DIGEST_SENDGRID_HOST)"
    if isinstance(reason, socket.gaierror):
        return "unknown host (check DIGEST_SENDGRID_HOST and this machine's DNS)"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s (DIGEST_SENDGRID_TIMEOUT)"
    if isinstance(reason, ssl.SSLError):
        return f"the TLS handshake failed ({getattr(reason, 'reason', None) or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason)
